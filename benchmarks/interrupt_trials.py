"""Interrupt trials: a real MiniLM int8 build interrupted at random points by SIGINT, SIGTERM and SIGKILL.

    python benchmarks/interrupt_trials.py --trials 20      # writes results-interrupt-trials.json and its RESULTS.md section
    python benchmarks/interrupt_trials.py --render          # RESULTS.md section from the committed JSON

Each trial starts `edgec build` into the same --out, waits a random time within the build's measured duration (that of
the last uninterrupted build, so a change in the machine's load does not make every signal come too late), sends
a random signal, and then checks what is at --out: nothing, or a complete artifact (its manifest present and every file's
sha256 matching it; a signal that lands after the final rename but before the process exits leaves the finished
artifact, which is correct). Anything else is a partial output. The trial after it builds into the same --out and must
succeed, whatever the killed one left beside it (after SIGKILL: its staging folder).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import machine, write_section  # noqa: E402

from edgec.artifacts.artifact import load_artifact, package_versions, verify_hashes  # noqa: E402
from edgec.data import read_sts_benchmark  # noqa: E402
from edgec.errors import InputError  # noqa: E402

STS = HERE.parent.parent / "shared" / "data" / "stsbenchmark"
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def eval_file(folder: Path) -> Path:
    """200 STS-B test pairs as jsonl (small, so a trial is quick; the data is read in place and copied to a temp folder)."""
    path = folder / "sts-test-200.jsonl"
    rows = read_sts_benchmark(STS / "sts-test.csv").sample(200, 0).examples
    path.write_text(
        "".join(json.dumps({"text": e.text, "text_pair": e.text_pair, "score": e.score}) + "\n" for e in rows)
    )
    return path


def ctrl_c_enabled() -> None:
    """In the child before exec: a background job of a non-interactive shell inherits SIGINT ignored (and Python keeps
    it so); a build run from a terminal gets Ctrl-C, which is what the trials model."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def state_of(out: Path) -> str:
    """What a stopped build left at --out: "nothing", "complete" (manifest and every file hash intact) or "partial"."""
    if not out.exists():
        return "nothing"
    try:
        return "complete" if not verify_hashes(load_artifact(out)) else "partial"
    except InputError:
        return "partial"


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def run_trials(trials: int, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="edgec-interrupt-") as tmp:
        tmp = Path(tmp)
        out = tmp / "minilm-int8"
        command = [
            sys.executable,
            "-m",
            "edgec",
            "build",
            str(models.minilm()),
            "--target",
            "ort-x86",
            "--precision",
            "int8",
            "--eval",
            str(eval_file(tmp)),
            "--out",
            str(out),
            "--force",
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        full = first = time.perf_counter() - started
        subprocess.run(["rm", "-rf", str(out)], check=True)  # every trial starts from an empty --out
        rows = []
        for trial in range(trials):
            name = rng.choice(sorted(SIGNALS))
            window, delay = full, rng.uniform(0.5, full)
            build = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=ctrl_c_enabled,  # noqa: PLW1509
            )
            time.sleep(delay)
            build.send_signal(SIGNALS[name])
            _, stderr = build.communicate()
            finished = build.returncode == 0  # the signal came after the build had ended
            at_out = state_of(out)
            left = leftovers(out)
            subprocess.run(["rm", "-rf", str(out)], check=True)
            started = time.perf_counter()
            after = subprocess.run(command, capture_output=True, text=True)  # the next build into the same --out
            if after.returncode == 0:  # the machine's load changes: the next delay is drawn within this build's time
                full = time.perf_counter() - started
            next_ok = after.returncode == 0 and load_artifact(out).manifest.parity.passed and leftovers(out) == []
            subprocess.run(["rm", "-rf", str(out)], check=True)
            rows.append(
                {
                    "trial": trial + 1,
                    "signal": name,
                    "after_s": round(delay, 1),
                    "window_s": round(window, 1),
                    "exit_code": build.returncode,
                    "finished_first": finished,
                    "at_out": at_out,
                    "left_beside_out": left,
                    "message": stderr.strip().splitlines()[-1] if stderr.strip() else "",
                    "next_build_ok": next_ok,
                }
            )
    return {
        "machine": machine(),
        "versions": package_versions(),
        "command": f"python benchmarks/interrupt_trials.py --trials {trials}",
        "full_build_s": round(first, 1),
        "trials": rows,
    }


def markdown(result: dict) -> str:
    rows = result["trials"]
    interrupted = [r for r in rows if not r["finished_first"]]
    by_signal = ", ".join(f"{name} {sum(r['signal'] == name for r in interrupted)}" for name in SIGNALS)
    partial = sum(r["at_out"] == "partial" for r in interrupted)
    complete = sum(r["at_out"] == "complete" for r in interrupted)
    recovered = sum(r["next_build_ok"] for r in rows)
    return "\n".join(
        [
            "## Interrupted builds: a real MiniLM int8 build stopped at random points",
            "",
            f"Machine: {result['machine']}. Command: `{result['command']}`. One uninterrupted build took "
            f"{result['full_build_s']:.0f} s; each trial sends its signal after a random delay within the last uninterrupted build's "
            "time (column 'within s'), then builds again into the same `--out` (what the killed build left beside it still there).",
            "",
            f"- {len(interrupted)} of {len(rows)} trials were interrupted mid-build ({by_signal}); {len(rows) - len(interrupted)} "
            "had finished before the signal.",
            f"- A partial output at `--out` after **{partial} of {len(interrupted)}** interruptions; {complete} left the finished "
            "artifact (the signal came after the final rename), the rest left nothing.",
            f"- The next build succeeded, passed parity and left nothing beside `--out` after **{recovered} of {len(rows)}** trials.",
            "",
            "| trial | signal | after s | within s | exit code | at --out | left beside --out | next build |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['trial']} | {r['signal']} | {r['after_s']} | {r['window_s']} | {r['exit_code']} | {r['at_out']} | "
                f"{', '.join(r['left_beside_out']) or '-'} | {'ok' if r['next_build_ok'] else 'FAILED'} |"
                for r in rows
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    results = HERE / "results-interrupt-trials.json"
    if not args.render:
        results.write_text(json.dumps(run_trials(args.trials, args.seed), indent=2) + "\n")
    text = markdown(json.loads(results.read_text()))
    write_section(HERE / "RESULTS.md", "interrupt-trials", text, "benchmarks/interrupt_trials.py")
    print(text)


if __name__ == "__main__":
    main()
