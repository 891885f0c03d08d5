"""edgec sweep: build one artifact per prune fraction x precision and lay the trade-off out.

Every cell is a full `edgec build` of the uncompressed model (so each metric is measured against the same
reference), measured rather than gated: the table reports the task metric, its drop, closeness to the
reference, latency on this machine and file size, and marks the Pareto front (no other cell is both
faster and at least as accurate).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

from edgec.api import build
from edgec.artifact import staged_output
from edgec.bench import BenchConfig, bench_onnx
from edgec.data import Dataset
from edgec.errors import ConfigError
from edgec.ops.search import pareto_front
from edgec.progress import bar
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe
from edgec.report import markdown_table, sweep_plot_png
from edgec.source import LoadOptions

# A sweep measures every cell; the build's parity gate would stop the grid at the first lossy one.
MEASURE_ONLY = ParityThresholds(min_cosine=-1.0, min_agreement=0.0, max_drop=1000.0)
COLUMNS = ("name", "prune", "precision", "metric", "value", "drop", "cosine_mean", "latency_ms", "size_mb", "pareto")


def sweep(
    model: str | Path, target: str, *, fractions: list[float], precisions: list[str], calib: Dataset | None,
    eval: Dataset | None, out: str | Path, bench: BenchConfig, force: bool = False,  # noqa: A002
    load: LoadOptions = LoadOptions(), on_stage: Callable[[str], None] = lambda name: None,
) -> list[dict]:
    """Build and measure every fraction x precision; write OUT/artifacts/*, sweep.csv, sweep.md and sweep.png."""
    if not fractions or not precisions:
        raise ConfigError("a sweep needs at least one prune fraction and one precision, e.g. --prune 0,0.5 --precision fp32,int8")
    for fraction in fractions:
        PruneConfig(fraction=fraction)  # validate every cell before the first build
    rows = []
    with staged_output(Path(out), force=force) as staging:
        cells = [(fraction, precision) for fraction in fractions for precision in precisions]
        with bar("sweep cells", len(cells)) as advance:
            for fraction, precision in cells:
                name = f"prune{fraction:g}-{precision}"
                on_stage(name)
                rows.append(_cell(model, target, fraction, precision, calib, eval, staging / "artifacts" / name, bench, load))
                advance(status=f"{name}: {rows[-1]['metric']} {rows[-1]['value']:.4f}, {rows[-1]['latency_ms']:.2f} ms")
        for row, on_front in zip(rows, pareto_front([(r["latency_ms"], r["value"]) for r in rows])):
            row["pareto"] = on_front
        write_tables(staging, rows)
    return rows


def _cell(model, target, fraction, precision, calib, eval, out: Path, bench: BenchConfig, load: LoadOptions) -> dict:  # noqa: A002
    recipe = Recipe(prune=PruneConfig(fraction=fraction) if fraction > 0 else None, quant=QuantConfig(precision=precision))
    measured = measure_cell(model, target, recipe, calib=calib, eval=eval, train=None, out=out, bench=bench, load=load)
    return {"name": out.name, "prune": fraction, "precision": precision, **measured}


def measure_cell(
    model, target: str, recipe: Recipe, *, calib: Dataset | None, eval: Dataset | None, train: Dataset | None,  # noqa: A002
    out: Path, bench: BenchConfig, load: LoadOptions,
) -> dict:
    """Build one grid cell at `out`, measured rather than gated, and time it: the task metric (or mean cosine where
    the data has no scores or labels), its drop from the uncompressed model, latency p50 and model size."""
    artifact = build(model, target, recipe=dataclasses.replace(recipe, parity=MEASURE_ONLY), calib=calib, eval=eval, train=train,
                     out=out, force=True, load=load)
    manifest = artifact.manifest
    final, reference = manifest["parity"]["ledger"][-1]["metrics"], manifest["parity"]["reference_metric"]
    metric = next(iter(reference), "cosine_mean")
    value = final[metric]
    latency = bench_onnx(str(artifact.model_path), len(artifact.tokenizer()), bench, manifest["target"]["session"]["graph_optimization_level"])
    return {
        "metric": metric, "value": value, "drop": reference[metric] - value if metric in reference else 1.0 - value,
        "cosine_mean": final.get("cosine_mean"), "latency_ms": latency.p50_ms, "size_mb": manifest["sizes"]["model_bytes"] / 1e6,
    }


def write_tables(folder: Path, rows: list[dict]) -> None:
    """sweep.csv (every column), sweep.md (Pareto front marked) and sweep.png."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "sweep.csv").write_text(text.getvalue())
    fmt = lambda v: "" if v is None else f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    header = ["artifact", "prune", "precision", rows[0]["metric"], "drop", "cosine", "latency ms (p50)", "size MB", "Pareto"]
    body = [[r["name"], f"{r['prune']:g}", r["precision"], fmt(r["value"]), fmt(r["drop"]), fmt(r["cosine_mean"]),
             fmt(r["latency_ms"]), fmt(r["size_mb"]), "**yes**" if r["pareto"] else ""] for r in rows]
    (folder / "sweep.md").write_text("# edgec sweep\n\n" + markdown_table(header, body) + "\n\n![metric vs latency](sweep.png)\n")
    (folder / "sweep.png").write_bytes(sweep_plot_png(rows))
