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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgec.api import build
from edgec.artifacts.artifact import load_artifact, staged_output
from edgec.artifacts.report import markdown_table, sweep_plot_png
from edgec.data import Dataset
from edgec.errors import ConfigError
from edgec.hardware import host
from edgec.ops.frontier import pareto_front
from edgec.plan import resolve_target
from edgec.progress import bar
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe
from edgec.running.bench import BenchConfig, bench_model
from edgec.source import LoadOptions

if TYPE_CHECKING:
    from edgec.ray_sweep import RayCluster

# A sweep measures every cell; the build's parity gate would stop the grid at the first lossy one.
MEASURE_ONLY = ParityThresholds(min_cosine=-1.0, min_agreement=0.0, max_drop=1000.0)
COLUMNS = (
    "name",
    "prune",
    "precision",
    "metric",
    "value",
    "drop",
    "cosine_mean",
    "latency_ms",
    "size_mb",
    "pareto",
    "error",
)


def sweep(
    model: str | Path,
    target: str,
    *,
    fractions: list[float],
    precisions: list[str],
    calib: Dataset | None,
    eval: Dataset | None,  # noqa: A002
    out: str | Path,
    bench: BenchConfig,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    on_stage: Callable[[str], None] = lambda name: None,
    ray: RayCluster | None = None,
) -> list[dict]:
    """Build and measure every fraction x precision; write OUT/artifacts/*, sweep.csv, sweep.md and sweep.png.

    With `ray`, every cell is a Ray task (edgec.ray_sweep): the same rows and artifacts, built in parallel; a cell
    that fails twice is a row with its error instead of stopping the sweep.
    """
    if not fractions or not precisions:
        raise ConfigError(
            "a sweep needs at least one prune fraction and one precision, e.g. --prune 0,0.5 --precision fp32,int8"
        )
    for fraction in fractions:
        PruneConfig(fraction=fraction)  # validate every cell before the first build
    profile, _ = resolve_target(target, has_calibration=calib is not None, tensorrt={})
    if profile.backend not in ("ort", "mobile", "executorch"):
        raise ConfigError(
            f"a sweep times its cells on this machine's CPU; {profile.name} runs elsewhere (use a CPU target)"
        )
    cells = [
        Cell(f"prune{fraction:g}-{precision}", fraction, precision)
        for fraction in fractions
        for precision in precisions
    ]
    with staged_output(Path(out), force=force) as staging:
        if ray is not None:
            from edgec.ray_sweep import run_on_ray

            jobs = [CellJob(model, target, c.recipe(), calib, eval, None, load) for c in cells]
            measured, timed_on = run_on_ray(jobs, [staging / "artifacts" / c.name for c in cells], bench, ray, on_stage)
        else:
            measured, timed_on = [], f"this machine ({host_description()})"
            with bar("sweep cells", len(cells)) as advance:
                for cell in cells:
                    on_stage(cell.name)
                    measured.append(
                        measure_cell(
                            model,
                            target,
                            cell.recipe(),
                            calib=calib,
                            eval=eval,
                            train=None,
                            out=staging / "artifacts" / cell.name,
                            bench=bench,
                            load=load,
                        )
                    )
                    m = measured[-1]
                    advance(status=f"{cell.name}: {m['metric']} {m['value']:.4f}, {m['latency_ms']:.2f} ms")
        rows = [{"name": c.name, "prune": c.fraction, "precision": c.precision, **m} for c, m in zip(cells, measured)]
        mark_pareto_front(rows)
        write_tables(staging, rows, timed_on)
    return rows


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    name: str
    fraction: float
    precision: str

    def recipe(self) -> Recipe:
        return Recipe(
            prune=PruneConfig(fraction=self.fraction) if self.fraction > 0 else None,
            quant=QuantConfig(precision=self.precision),
        )


@dataclass(frozen=True)
class CellJob:
    """Everything one cell's build needs, in one picklable value (a Ray task's argument)."""

    model: str | Path
    target: str
    recipe: Recipe
    calib: Dataset | None
    eval: Dataset | None
    train: Dataset | None
    load: LoadOptions


def mark_pareto_front(rows: list[dict]) -> None:
    """rows[i]["pareto"]: no other measured row is both faster and at least as good (failed cells are never on it)."""
    measured = [r for r in rows if not r.get("error")]
    for row, on_front in zip(measured, pareto_front([(r["latency_ms"], r["value"]) for r in measured])):
        row["pareto"] = on_front
    for row in rows:
        row.setdefault("pareto", False)


def host_description() -> str:
    cpu = host()
    return f"{cpu.model}, {cpu.instruction_set}, {cpu.cores} cores"


def measure_cell(
    model,
    target: str,
    recipe: Recipe,
    *,
    calib: Dataset | None,
    eval: Dataset | None,  # noqa: A002
    train: Dataset | None,
    out: Path,
    bench: BenchConfig,
    load: LoadOptions,
) -> dict:
    """Build one grid cell at `out`, measured rather than gated, and time it: the task metric (or mean cosine where
    the data has no scores or labels), its drop from the uncompressed model, latency p50 and model size."""
    measured = build_cell(CellJob(model, target, recipe, calib, eval, train, load), out)
    return {**measured, "latency_ms": time_cell(out, bench)}


def build_cell(job: CellJob, out: Path) -> dict:
    """Build one cell at `out` (measured, not gated); its metric, drop, closeness and size, without latency."""
    artifact = build(
        job.model,
        job.target,
        recipe=dataclasses.replace(job.recipe, parity=MEASURE_ONLY),
        calib=job.calib,
        eval=job.eval,
        train=job.train,
        out=out,
        force=True,
        load=job.load,
    )
    manifest = artifact.manifest
    final, reference = manifest.parity.ledger[-1].metrics, manifest.parity.reference_metric
    metric = next(iter(reference), "cosine_mean")
    value = final[metric]
    return {
        "metric": metric,
        "value": value,
        "drop": reference[metric] - value if metric in reference else 1.0 - value,
        "cosine_mean": final.get("cosine_mean"),
        "size_mb": manifest.sizes.model_bytes / 1e6,
        "error": "",
    }


def time_cell(artifact_path: Path, bench: BenchConfig) -> float:
    """Latency p50 (ms) of an artifact's model on its runtime with its target's session settings, in a fresh process."""
    artifact = load_artifact(artifact_path)
    return bench_model(str(artifact.model_path), len(artifact.tokenizer()), bench, artifact.session).p50_ms


def write_tables(folder: Path, rows: list[dict], timed_on: str) -> None:
    """sweep.csv (every column), sweep.md (Pareto front marked, where latency was measured) and sweep.png."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "sweep.csv").write_text(text.getvalue())
    fmt = lambda v: (  # noqa: E731
        ""
        if v is None
        else f"{v:.4f}"
        if isinstance(v, float) and abs(v) < 10
        else f"{v:.2f}"
        if isinstance(v, float)
        else str(v)
    )
    metric = next((r["metric"] for r in rows if not r.get("error")), "metric")
    header = ["artifact", "prune", "precision", metric, "drop", "cosine", "latency ms (p50)", "size MB", "Pareto"]
    body = [
        [
            r["name"],
            f"{r['prune']:g}",
            r["precision"],
            fmt(r.get("value")),
            fmt(r.get("drop")),
            fmt(r.get("cosine_mean")),
            fmt(r.get("latency_ms")),
            fmt(r.get("size_mb")),
            "**yes**" if r["pareto"] else f"failed: {r['error']}" if r.get("error") else "",
        ]
        for r in rows
    ]
    (folder / "sweep.md").write_text(
        f"# edgec sweep\n\nLatency measured on {timed_on}.\n\n"
        + markdown_table(header, body)
        + "\n\n![metric vs latency](sweep.png)\n"
    )
    (folder / "sweep.png").write_bytes(sweep_plot_png([r for r in rows if not r.get("error")]))
