"""ModernBERT and DeBERTa-v3 on ONNX Runtime: which fusions apply, and what an attention fusion could save (issue 17).

    python benchmarks/new_architectures.py                        # build, profile, time; results JSON and RESULTS.md
    python benchmarks/new_architectures.py --tiny --rounds 1 --runs 5   # smoke test: tiny models, benchmarks/work only
    python benchmarks/new_architectures.py --render               # RESULTS.md section from the committed JSON

Per model (random weights in base-size configs, benchmarks/new_arch_models.py; all-MiniLM-L6-v2 as the reference
for an attention ORT does fuse): edgec builds for the ort-x86 profile in fp32 and int8 (parity measured, not gated;
calibration on the project's corpus), kept in benchmarks/work/new_arch. Fusions: what ORT's transformer optimizer
fused in edgec's optimize stage (the artifact graph) and what ORT fuses at session load (the graph it runs).
Profiles: ORT's profiler, each in a fresh process, the time split into the attention core (benchmarks/attention_core.py)
and the rest; the core's share bounds what a fused attention could save. Latency: benchmarks/run.py's time_rows
(batch 1, 2 intra-op threads, every row and length once per round in a fresh process, rounds interleaved, the fastest of
the per-round p50s), PyTorch fp32 beside edgec's two builds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from attention_core import FUSED_ATTENTION, MATMULS, profile_core  # noqa: E402
from new_arch_models import NAMES, describe, model_folder  # noqa: E402
from run import PYTORCH, _cached, machine, per_row, time_rows, write_section  # noqa: E402

import edgec  # noqa: E402
from edgec.artifacts.artifact import load_artifact, package_versions  # noqa: E402
from edgec.precision import Precision  # noqa: E402
from edgec.running.bench import BenchConfig  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import load_target  # noqa: E402

WORK = HERE / "work" / "new_arch"
RESULTS = HERE / "results-new-architectures.json"
SECTION, SCRIPT = "new-architectures", "benchmarks/new_architectures.py"
PRECISIONS = ("fp32", "int8")  # words, as the JSON keys them
# A fused kernel still computes the core's two products and its Softmax: on mpnet, edgec's fused MultiHeadAttention
# saved 3-7% of int8 latency against the unfused core (RESULTS.md, ort-precisions-mpnet), a small part of the
# core's time. A fusion is worth writing only where even its best case, the whole core's time saved, is a fifth of
# the latency.
PAYS_AT = 0.2


def build_row(model_dir: Path, folder: Path, precision: str, own_fusions: bool = True) -> dict:
    """One edgec build (ort-x86, parity measured but not gated): its model file, size, optimizer fusions and the
    attention cores edgec's own rewrites fused. `own_fusions` off: those rewrites skipped (the profile's keys)."""
    target = load_target("ort-x86")
    if not own_fusions:
        target = dataclasses.replace(target, fuse_biased_attention=False, fuse_rotary_attention=False)
    artifact = edgec.build(
        model_dir,
        target,
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision=Precision.parse(precision)), parity=MEASURE_ONLY),
        out=folder / "artifact",
        force=True,
    )
    optimize = artifact.manifest.stages.optimize
    return {
        "path": str(artifact.model_path),
        "size_mb": artifact.model_path.stat().st_size / 1e6,
        "optimizer_fused": dict(optimize.fused_ops) if optimize else {},
        "edgec_fused": (
            optimize.biased_attention + optimize.rotary_attention + optimize.disentangled_attention if optimize else 0
        ),
    }


def measure(name: str, root: Path, args: argparse.Namespace, lengths: list[int]) -> dict:
    """Build one model in each precision, profile each build at each length, and time the builds and PyTorch."""
    model_dir = model_folder(name, root / "models", args.tiny)
    builds = {
        p: _cached(root / name / f"edgec-{p}", args.rebuild, lambda f, p=p: build_row(model_dir, f, p))
        for p in PRECISIONS
    }
    # Where edgec's own attention rewrite fused the model, the same builds without it, timed beside it.
    unfused = {
        p: _cached(root / name / f"edgec-{p}-unfused", args.rebuild, lambda f, p=p: build_row(model_dir, f, p, False))
        for p in PRECISIONS
        if builds[p].get("edgec_fused")
    }
    artifacts = {p: load_artifact(Path(b["path"]).parent) for p, b in builds.items()}
    vocab = len(artifacts["fp32"].tokenizer())
    profiles = {
        p: {
            str(n): profile_core(
                builds[p]["path"],
                vocab,
                BenchConfig(batch=1, seq_len=n, threads=2, warmup=10, runs=args.runs),
                artifacts[p].session,
            )
            for n in lengths
        }
        for p in PRECISIONS
    }
    rows = {
        PYTORCH: {"path": None},
        **{f"edgec {p}": {"path": b["path"]} for p, b in builds.items()},
        **{f"edgec {p} unfused": {"path": b["path"]} for p, b in unfused.items()},
    }
    rounds, _ = time_rows(rows, model_dir, vocab, lengths, args.rounds, args.runs)
    latency = per_row(rounds, min)  # the fastest round, as run.py reports
    return {
        "name": NAMES[name] if not args.tiny else f"{NAMES[name]} (tiny)",
        "model": describe(model_dir),
        "builds": {p: {k: v for k, v in b.items() if k != "path"} for p, b in builds.items()},
        "profiles": profiles,
        "latency_ms": {label: {str(n): ms for n, ms in by_length.items()} for label, by_length in latency.items()},
    }


def _counts(counts: dict) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"


def fusion_table(record: dict) -> list[str]:
    length = str(verdict_length(record))
    lines = [
        "| model | precision | ORT transformer optimizer (artifact graph) | ORT at session load (graph it runs) | "
        f"left in the attention core, nodes ({length} tokens) |",
        "|---|---|---|---|---|",
    ]
    for model in record["models"].values():
        for p in PRECISIONS:
            profile = model["profiles"][p][length]
            core = {op: n for op, (n, _) in profile["core_ops"].items()}
            lines.append(
                f"| {model['name']} | {p} | {_counts(model['builds'][p]['optimizer_fused'])} | "
                f"{_counts(profile['runtime_fused'])} | {_counts(core)} |"
            )
    return lines


def core_share(profile: dict) -> float:
    return profile["core_ms"] / profile["kernel_ms"] if profile["kernel_ms"] else 0.0


def products_share(profile: dict) -> float:
    """Share of all kernel time in the core's products (activation MatMuls, fused attention ops) and Softmax: the
    work a fused kernel still does."""
    kept = MATMULS | FUSED_ATTENTION | {"Softmax"}  # the core holds no weight MatMul: each of these is a product
    ms = sum(ms for op, (_, ms) in profile["core_ops"].items() if op in kept)
    return ms / profile["kernel_ms"] if profile["kernel_ms"] else 0.0


def time_table(record: dict) -> list[str]:
    lines = [
        "| model | precision | tokens | kernel ms | attention core ms | core share | of which products + Softmax | "
        "largest core ops (ms) | computed from constants ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in record["models"].values():
        for p in PRECISIONS:
            for length, profile in model["profiles"][p].items():
                top = ", ".join(f"{op} {ms:.2f}" for op, (_, ms) in list(profile["core_ops"].items())[:4])
                lines.append(
                    f"| {model['name']} | {p} | {length} | {profile['kernel_ms']:.2f} | {profile['core_ms']:.2f} | "
                    f"{core_share(profile):.1%} | {products_share(profile):.1%} | {top} | "
                    f"{profile['constant_ms']:.2f} |"
                )
    return lines


def latency_table(record: dict) -> list[str]:
    lengths = record["lengths"]
    labels = [PYTORCH, *(f"edgec {p}" for p in PRECISIONS)]
    header = [f"{label}, {n} tok" for n in lengths for label in labels]
    lines = ["| model | " + " | ".join(header) + " | int8 / fp32 |", "|---|" + "---|" * (len(header) + 1)]
    for model in record["models"].values():
        ms = model["latency_ms"]
        cells = [f"{ms[label][str(n)]:.2f}" for n in lengths for label in labels]
        ratio = ", ".join(f"{ms['edgec int8'][str(n)] / ms['edgec fp32'][str(n)]:.2f}" for n in lengths)
        lines.append(f"| {model['name']} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def fusion_gain_table(record: dict) -> list[str]:
    """Latency with and without edgec's own attention rewrite, for the models it fused (same run, same rounds)."""
    lines = [
        "| model | precision | tokens | edgec's attention fusion off, ms | on, ms | on / off |",
        "|---|---|---|---|---|---|",
    ]
    for model in record["models"].values():
        ms = model["latency_ms"]
        for p in PRECISIONS:
            if f"edgec {p} unfused" not in ms:
                continue
            for n in record["lengths"]:
                off, on = ms[f"edgec {p} unfused"][str(n)], ms[f"edgec {p}"][str(n)]
                lines.append(f"| {model['name']} | {p} | {n} | {off:.2f} | {on:.2f} | {on / off:.2f} |")
    return lines if len(lines) > 2 else []


def verdict_length(record: dict) -> int:
    """The length the verdict speaks of: 128 tokens, the issue's, where it was measured."""
    return 128 if 128 in record["lengths"] else max(record["lengths"])


def verdict(record: dict) -> list[str]:
    """Lines per model, every figure read from the record."""
    length = str(verdict_length(record))
    lines = []
    for model in record["models"].values():
        profiles = {p: model["profiles"][p][length] for p in PRECISIONS}
        shares = ", ".join(
            f"{p} {core_share(profiles[p]):.0%} ({products_share(profiles[p]):.0%} in its products and Softmax)"
            for p in PRECISIONS
        )
        if any(op in FUSED_ATTENTION for profile in profiles.values() for op in profile["runtime_fused"]):
            lines.append(
                f"- {model['name']} (attention fused): the fused core takes {shares} of the kernel time at {length} "
                "tokens, what attention costs once fused."
            )
        else:
            pays = [p for p in PRECISIONS if core_share(profiles[p]) >= PAYS_AT]
            decision = (
                f"worth writing for {', '.join(pays)}" if pays else f"not worth writing: under {PAYS_AT:.0%} in both"
            )
            lines.append(
                f"- {model['name']}: the unfused core takes {shares} of the kernel time at {length} tokens. An "
                "attention fusion could save at most that share of the latency, less what its kernel still spends on "
                f"the products and Softmax: {decision}."
            )
        lines += constant_notes(model, length)
    return lines


def constant_notes(model: dict, length: str) -> list[str]:
    """A line for each build that spends over 1% of its kernel time recomputing values from constants."""
    lines = []
    for p in PRECISIONS:
        profile = model["profiles"][p][length]
        share = profile["constant_ms"] / profile["kernel_ms"] if profile["kernel_ms"] else 0.0
        if share > 0.01:
            lines.append(
                f"- {model['name']} {p}: {share:.0%} of the kernel time at {length} tokens ({profile['constant_ms']:.2f} "
                "ms) computes from constants only, every run: work ORT did not fold (see the last column)."
            )
    return lines


def markdown(record: dict) -> str:
    """The RESULTS.md section, from the results JSON."""
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    sizes = "; ".join(
        f"{m['name']}: {m['model']['num_hidden_layers']} layers, hidden {m['model']['hidden_size']}, "
        f"{m['model']['num_attention_heads']} heads, FFN {m['model']['intermediate_size']}, "
        f"vocabulary {m['model']['vocab_size']}"
        for m in record["models"].values()
    )
    lines = [
        "## ModernBERT and DeBERTa-v3 on ONNX Runtime: which fusions apply, and what an attention fusion could save",
        "",
        f"Machine: {record['machine']}. Versions: {versions}.",
        f"Command: `{record['command']}` ({record['wall_s'] / 60:.0f} min, builds included). Models: {sizes}. ModernBERT and DeBERTa "
        "have random weights (seed 0) in these configs, and a WordPiece tokenizer of the config's vocabulary size stands "
        "in for theirs (latency runs synthetic token ids; the tokenizer changes nothing in the graph); MiniLM is the real "
        "model, the reference for an attention ORT's optimizer fuses. Builds: `edgec.build` for `ort-x86`, fp32 and int8 "
        f"(static), parity measured not gated. Profiles: ORT's profiler, batch 1, 2 intra-op threads, {record['runs']} "
        "runs after 10 warm-up, each in a fresh process; the attention core is every node between the Q/K/V "
        "projections and the output projection (`benchmarks/attention_core.py`). Latency: the fastest of the per-round p50s, "
        f"{record['rounds']} interleaved rounds, each measurement in a fresh process.",
        "",
        *fusion_table(record),
        "",
        *time_table(record),
        "",
        *latency_table(record),
        "",
        *(
            [
                "Where edgec's own rewrite fuses the attention (`ops/rotary_attention.py` for ModernBERT, "
                "`ops/disentangled_attention.py` for DeBERTa), the same build without it (the profile's "
                "`fuse_rotary_attention` and `fuse_biased_attention` off), timed in the same rounds:",
                "",
                *gains,
                "",
            ]
            if (gains := fusion_gain_table(record))
            else []
        ),
        f"What an attention fusion could save (computed from the profiles; the rule: write one only where the core "
        f"is at least {PAYS_AT:.0%} of the kernel time):",
        "",
        *verdict(record),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="modernbert,deberta,minilm", help=f"Some of {', '.join(NAMES)}.")
    parser.add_argument("--lengths", default="128,32", help="Sequence lengths to profile and time.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=40, help="Timed (and profiled) runs per measurement.")
    parser.add_argument("--tiny", action="store_true", help="Tiny configs (2 layers, hidden 64): a smoke test.")
    parser.add_argument("--rebuild", action="store_true", help="Build again instead of reusing benchmarks/work.")
    parser.add_argument("--render", action="store_true", help="Only rewrite RESULTS.md from the committed JSON.")
    args = parser.parse_args()
    if args.render:
        write_section(HERE / "RESULTS.md", SECTION, markdown(json.loads(RESULTS.read_text())), SCRIPT)
        return
    unknown = set(args.models.split(",")) - set(NAMES)
    if unknown:
        parser.error(f"unknown models {', '.join(sorted(unknown))}; use some of {', '.join(NAMES)}")
    root = WORK / ("tiny" if args.tiny else "base")
    lengths = [int(n) for n in args.lengths.split(",")]
    started = time.perf_counter()
    measured = {name: measure(name, root, args, lengths) for name in args.models.split(",")}
    record = {
        "machine": machine(),
        "versions": package_versions(),
        "command": ("python benchmarks/new_architectures.py " + " ".join(sys.argv[1:])).strip(),
        "wall_s": time.perf_counter() - started,
        "lengths": lengths,
        "rounds": args.rounds,
        "runs": args.runs,
        "models": measured,
    }
    text = markdown(record)
    # A tiny run is a smoke test: its results stay in the work folder, away from the committed ones.
    (root / "results.json" if args.tiny else RESULTS).write_text(json.dumps(record, indent=1) + "\n")
    if not args.tiny:
        write_section(HERE / "RESULTS.md", SECTION, text, SCRIPT)
    print(text, flush=True)


if __name__ == "__main__":
    main()
