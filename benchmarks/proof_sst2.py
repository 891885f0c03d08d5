"""The train-large-then-compress proof's RESULTS.md section and chart, from a run of
examples/train_large_then_compress.py.

    python benchmarks/proof_sst2.py --from OUT/proof.json   # keep that run as results-proof-sst2.json, then render
    python benchmarks/proof_sst2.py                         # render from the committed results-proof-sst2.json

The table, the verdict sentence and the chart are the example's own functions, so the section says what the run
computed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

import train_large_then_compress as proof  # noqa: E402
from run import write_section  # noqa: E402

RESULTS = HERE / "results-proof-sst2.json"
CHART = HERE / "proof-sst2.png"
SECTION = "proof-sst2"


def machine(record: dict) -> str:
    cpu = record["machine"]
    return (
        f"{cpu['model']}, {cpu['cores']} cores, int8 instruction set {cpu['instruction_set']}, "
        f"{'native' if cpu['native_bf16'] else 'no native'} bf16"
    )


def family_rows(record: dict) -> list[str]:
    """What each family did with its T minutes."""
    lines = [
        "| family | fine-tune: steps, minutes | best validation % (step) | compressed shape | distillation | "
        "family wall minutes |",
        "|---|---|---|---|---|---|",
    ]
    for name in proof.FAMILIES:
        family = record["families"][name]
        tune = family["finetune"]
        shape = distillation = "-"
        if "compress" in family:
            c = family["compress"]
            heads = sum(c["heads_after"])
            shape = (
                f"prune {c['fraction']:.3f}: hidden {c['hidden_after']}, {len(c['layers_kept'])} layers, "
                f"{heads} heads, FFN {min(c['ffn_after'])}-{max(c['ffn_after'])}; "
                f"{c['macs_after'] / c['macs_before']:.1%} of the MACs, {c['params_after'] / 1e6:.1f} M params; "
                f"pruning {sum(c['seconds'].values()) / 60:.1f} min"
            )
            d = c["distill"]
            if d:
                cache = d.get("teacher_cache") or {}
                distillation = (
                    f"{d['steps']} steps, {d['examples_per_second']:.1f} examples/s, {d['seconds'] / 60:.1f} min, "
                    f"best validation {d['best_score']:.2f} (step {d['best_step']}); teacher cache "
                    f"{cache.get('examples', '-')} of {cache.get('given', '-')} texts "
                    f"({cache.get('seconds', 0) / 60:.1f} min, bound: {cache.get('limited_by') or 'none'})"
                )
        lines.append(
            f"| {name} | {tune['steps']}, {tune['seconds'] / 60:.1f} | {tune['best_score']:.2f} ({tune['best_step']}) | "
            f"{shape} | {distillation} | {family['seconds'] / 60:.1f} |"
        )
    return lines


def markdown(record: dict) -> str:
    v, timing = record["verdict"], record["timing"]
    base = record["command"].replace(" --time", "")
    loads = [x for row in record["artifacts"] for x in row.get("other_load", []) if x is not None]
    lines = [
        f"## Train large, then compress: SST-2, T = {record['budget_minutes']:g} minutes per family "
        "(all-MiniLM-L6-v2 small, all-mpnet-base-v2 large)",
        "",
        f"Machine: {machine(record)}; each family ran alone on the CPU. Versions: "
        + ", ".join(f"{k} {v}" for k, v in record["versions"].items())
        + ".",
        (
            f"Commands, one after the other: `{base} --family small`, the same with `--family large`, then with "
            "`--time` (times both families' artifacts and computes the verdict)."
            if " --time" in record["command"]
            else f"Command (both families, then the timing and the verdict, in one run): `{record['command']}`."
        ),
        "Each family gets the same wall clock T: the small model fine-tunes for T; the large one fine-tunes for a "
        "share of T, is pruned to the small one's encoder MACs (and by default its width and depth) and distilled "
        "from its fine-tuned self (labels mixed in) until T is spent, pruning included. Checkpoints, early stops and int8 fallbacks chose on 2,000 sentences "
        "held out of SST-2 train ('validation'); dev (872 sentences) selected nothing. int8: static, calibration 256 "
        f"train sentences. Latency: batch 1, {timing['seq_len']} tokens, {timing['threads']} threads, p50 of "
        f"{timing['runs']} runs per round, {timing['rounds']} interleaved rounds, the fastest round reported "
        f"(other processes' CPU share while timing: at most {max(loads, default=0):.1%}).",
        "",
        *family_rows(record),
        "",
        proof.table(record["artifacts"]).rstrip(),
        "",
        f"**Verdict (computed): {proof.sentence(v)}.**",
        "",
        f"![train large then compress]({CHART.name})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="A run's proof.json to keep as the results.")
    args = parser.parse_args()
    if args.source:
        shutil.copyfile(args.source, RESULTS)
    record = json.loads(RESULTS.read_text())
    proof.plot(record["artifacts"], record["verdict"], CHART)
    write_section(HERE / "RESULTS.md", SECTION, markdown(record), "benchmarks/proof_sst2.py")
    print(markdown(record))


if __name__ == "__main__":
    main()
