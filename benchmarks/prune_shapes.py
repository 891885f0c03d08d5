"""Which shape should a large model be pruned to, at a small model's cost: many narrow layers or few wide ones?

    python benchmarks/prune_shapes.py run --distill-minutes 10   # prune + distill each shape, int8, score, time
    python benchmarks/prune_shapes.py render                      # its RESULTS.md section from the JSON

mpnet fine-tuned on SST-2 and MiniLM fine-tuned on SST-2 (prune_quality.py's cached folders) are the large and the
small model. Every shape removes the same share of mpnet's encoder MACs, the share that leaves MiniLM's (at the
calibration texts' lengths), then distils from the fine-tuned mpnet (labels mixed in) for the same minutes, the
teacher's one pass included. Distillation keeps its best checkpoint on the validation split (2,000 texts held out of
SST-2 train); SST-2 dev selected nothing. Each pruned model and MiniLM are built as static int8 and timed in one run,
rounds interleaved, batch 1, 64 tokens (SST-2 sentences are short), 2 threads, the fastest round's p50 reported.
The shape to prefer is the one of best validation accuracy among those at most as slow as MiniLM's int8. The
iterative row's budget (the distillation minutes) also covers its second and third prunes, as `--schedule iterative`
does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

import models  # noqa: E402
import prune_data  # noqa: E402
import prune_quality  # noqa: E402
import train_large_then_compress as proof  # noqa: E402
from run import machine, write_section  # noqa: E402

import edgec  # noqa: E402
from edgec.api import compress  # noqa: E402
from edgec.artifacts.artifact import package_versions  # noqa: E402
from edgec.compression.surgery import encoder_layers, ffn_widths, head_counts, hidden_size  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.parity.runtime import measure_model  # noqa: E402
from edgec.recipe import DistillConfig, PruneConfig, QuantConfig, Recipe  # noqa: E402
from edgec.source import load_source  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import SessionSettings  # noqa: E402

RESULTS = HERE / "results-prune-shapes.json"
WORK = models.WORK / "prune-shapes"
MAX_LENGTH = 64
# (name, units, hidden size, most layers kept, schedule): the same budget met narrow and deep, or wide and shallow;
# and one shape pruned in steps with distillation between them (the iterative schedule) on the same minutes.
SHAPES = (
    ("12 layers, hidden 256 (narrow-deep)", ("heads", "ffn", "hidden"), 256, None, "one-shot"),
    (
        "at most 6 layers, hidden 384 (MiniLM's width and depth)",
        ("heads", "ffn", "layers", "hidden"),
        384,
        6,
        "one-shot",
    ),
    (
        "at most 6 layers, hidden 384, iterative (3 prunes, distilling after each)",
        ("heads", "ffn", "layers", "hidden"),
        384,
        6,
        "iterative",
    ),
)


def shape(folder: Path, teacher_macs: float, lengths: list[int]) -> dict:
    """What a model folder holds: layers, width, heads, FFN widths, parameters, and its MACs against mpnet's."""
    model = load_source(folder).model
    widths = ffn_widths(model)
    return {
        "layers": len(encoder_layers(model)),
        "hidden": hidden_size(model),
        "heads": sum(head_counts(model)),
        "ffn": [min(widths), max(widths)],
        "macs_kept": round(proof.encoder_cost(folder, lengths) / teacher_macs, 4),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }


def metric(data: dict) -> str:
    """The task metric the parity ledger reports for this data: spearman on scored pairs, accuracy on labels."""
    return "spearman" if data["validation"].has_scores else "accuracy"


def int8_build(folder: Path, data: dict, out: Path, max_length: int = MAX_LENGTH) -> dict:
    """A static int8 build of `folder` (calibrated on 256 train texts, its fallback chosen on validation), with its
    validation and report scores, fp32 and int8."""
    recipe = Recipe(quant=QuantConfig(precision="int8"), parity=MEASURE_ONLY, max_length=max_length)
    artifact = edgec.build(
        folder, "ort", recipe=recipe, calib=data["train"].sample(256, 0), eval=data["validation"], out=out, force=True
    )
    source = load_source(folder)
    return {
        "path": str(artifact.model_path),
        "vocab": len(source.tokenizer),
        "session": dataclasses.asdict(artifact.session),
        "size_mb": round(artifact.model_path.stat().st_size / 1e6, 1),
        "scores": int8_scores(artifact.model_path, source, data, max_length),
    }


def int8_scores(model: Path, source, data: dict, max_length: int) -> dict:
    """The validation and report scores of the int8 ONNX file `model` and of its fp32 `source`."""
    key = metric(data)
    scores = {}
    for role in ("validation", "report"):
        reference = reference_outputs(source, data[role], max_length)
        measured = measure_model(model, role, source.task, reference, MEASURE_ONLY, SessionSettings())
        scores[role] = {"fp32": reference.reference_metric[key], "int8": measured.metrics[key]}
    return scores


def compressed_row(
    large: Path,
    prune: PruneConfig,
    distill_minutes: float,
    calib,
    data: dict,
    folder: Path,
    teacher_macs: float,
    lengths: list[int],
    max_length: int = MAX_LENGTH,
) -> dict:
    """`large` pruned by `prune` and distilled from itself on data["train"] for `distill_minutes` (the teacher's
    pass, and an iterative schedule's later prunes, included), saved in `folder`, then built as int8: its shape,
    its scores before distillation and after, and its distillation's steps and rate."""
    recipe = Recipe(
        prune=prune,
        distill=DistillConfig(
            steps=1_000_000, minutes=distill_minutes, max_length=max_length, eval_every=150, patience=1000
        ),
        max_length=max_length,
    )
    started = time.perf_counter()
    summary = compress(large, recipe, calib=calib, eval=data["validation"], train=data["train"], out=folder, force=True)
    seconds = time.perf_counter() - started
    pruned = next(row for row in summary.ledger if row.stage == "prune")  # the first prune
    return {
        "model": "mpnet",
        **shape(folder, teacher_macs, lengths),
        "layers_kept": summary.prune.layers_kept,
        "prune_seconds": round(sum(summary.prune.seconds.values()), 1),
        "pruned_validation": pruned.metrics.get(metric(data)),
        "distill": {
            **{k: getattr(summary.distill, k) for k in ("best_step", "best_score", "examples_per_second")},
            # the iterative schedule's note is its last run, with every run in `runs`
            "steps": sum(run.steps for run in summary.distill.runs or [summary.distill]),
        },
        "compress_seconds": round(seconds, 1),
        **int8_build(folder, data, folder.parent / f"{folder.name}-int8", max_length),
    }


def run(distill_minutes: float, rounds: int, runs: int) -> None:
    large_case, small_case = prune_data.CASES["mpnet-sst2"], prune_data.CASES["minilm-sst2"]
    large, small = prune_quality.finetuned(large_case), prune_quality.finetuned(small_case)
    data = prune_data.splits(large_case)
    calib = prune_data.calibration(large_case, data, PruneConfig(fraction=0.5).calib_samples)
    teacher = load_source(large)
    lengths = [len(ids) for ids in teacher.tokenizer(calib.texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    teacher_macs = proof.encoder_cost(large, lengths)
    fraction = round(1 - proof.encoder_cost(small, lengths) / teacher_macs, 4)
    rows = [
        {
            "shape": "MiniLM fine-tuned (the small model)",
            "model": "minilm",
            **shape(small, teacher_macs, lengths),
            **int8_build(small, data, WORK / "minilm-int8"),
        }
    ]
    for name, units, width, max_layers, schedule in SHAPES:
        prune = PruneConfig(fraction=fraction, units=units, hidden_size=width, max_layers=max_layers, schedule=schedule)
        folder = WORK / f"hidden{width}-layers{max_layers or 'all'}-{schedule}"
        row = compressed_row(large, prune, distill_minutes, calib, data, folder, teacher_macs, lengths)
        rows.append({"shape": name, **row})
    proof.time_artifacts(rows, MAX_LENGTH, runs, rounds)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine(),
                "versions": package_versions(),
                "command": f"python benchmarks/prune_shapes.py run --distill-minutes {distill_minutes:g} --rounds {rounds} --runs {runs}",
                "distill_minutes": distill_minutes,
                "fraction": fraction,
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )


def preferred(rows: list[dict]) -> dict | None:
    """The pruned shape of best validation accuracy (int8) among those at most as slow as the small model's int8."""
    small = next(r for r in rows if r["model"] == "minilm")
    fast = [r for r in rows if r["model"] != "minilm" and r["latency_ms"] <= small["latency_ms"]]
    return max(fast, key=lambda r: r["scores"]["validation"]["int8"], default=None)


def markdown(results: dict) -> str:
    rows = results["rows"]
    small = next(r for r in rows if r["model"] == "minilm")
    lines = [
        "## Pruning shape at a small model's cost: mpnet fine-tuned on SST-2, pruned to MiniLM's MACs and distilled",
        "",
        f"Machine: {results['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + ".",
        f"Command: `{results['command']}`. " + __doc__.split("\n\n", 2)[2].strip().replace("\n", " "),
        "",
        "| shape | layers | hidden | heads | FFN per layer | MACs of mpnet's | params M | before distillation (validation, gate share) | distillation: steps, best on its selection share (step) | int8 validation % | int8 dev % | latency ms | vs MiniLM int8 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scores, d = r["scores"], r.get("distill")
        cells = [
            str(r["layers"]),
            str(r["hidden"]),
            str(r["heads"]),
            f"{r['ffn'][0]}-{r['ffn'][1]}",
            f"{r['macs_kept']:.3f}",
            f"{r['params_m']:.1f}",
            f"{r['pruned_validation']:.2f}" if r.get("pruned_validation") is not None else "",
            f"{d['steps']}, {d['best_score']:.2f} ({d['best_step']})" if d else "",
        ]
        lines.append(
            f"| {r['shape']} | "
            + " | ".join(cells)
            + f" | {scores['validation']['int8']:.2f} | {scores['report']['int8']:.2f} | {r['latency_ms']:.2f}"
            + f" | {r['latency_ms'] / small['latency_ms']:.2f} |"
        )
    best = preferred(rows)
    lines += [
        "",
        "Latency per round (ms): "
        + "; ".join(f"{r['shape']}: {', '.join(f'{x:.2f}' for x in r['latency_rounds'])}" for r in rows)
        + ".",
        "",
        f"**Preferred shape (computed): {best['shape']}**, {best['scores']['validation']['int8']:.2f} int8 validation "
        f"at {best['latency_ms']:.2f} ms against MiniLM's {small['scores']['validation']['int8']:.2f} at "
        f"{small['latency_ms']:.2f} ms."
        if best
        else f"**No pruned shape is as fast as MiniLM's int8 ({small['latency_ms']:.2f} ms).**",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "render"))
    parser.add_argument("--distill-minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    if args.action == "run":
        run(args.distill_minutes, args.rounds, args.runs)
    write_section(
        HERE / "RESULTS.md", "prune-shapes", markdown(json.loads(RESULTS.read_text())), "benchmarks/prune_shapes.py"
    )


if __name__ == "__main__":
    main()
