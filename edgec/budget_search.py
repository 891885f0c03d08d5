"""Budgeted search: the fastest artifact that meets every budget (metric drop, latency, size).

`edgec build --max-latency-ms / --max-size-mb` searches prune fraction x precision. Candidates are built and
measured on a sample of the selection part of the eval data (parity.evalset.selection_split); for each
precision, fractions are tried in increasing order until the metric budget breaks, since a larger fraction only
loses more. The fastest candidate within every budget is then built again at --out, gated by --max-drop on the
held-out rest of the eval data, which no choice was made on. When no candidate
meets every budget, the one that misses them by least is saved instead and the search says which
budgets nothing met (exit 1).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgec.api import build
from edgec.artifacts.artifact import Artifact, check_output_path
from edgec.data import Dataset
from edgec.errors import ConfigError, EdgecError
from edgec.parity.evalset import selection_split
from edgec.plan import resolve_target
from edgec.progress import bar
from edgec.recipe import ParityThresholds, PruneConfig, Recipe
from edgec.running.bench import BenchConfig
from edgec.source import LoadOptions
from edgec.sweep import MEASURE_ONLY, CellJob, measure_cell

if TYPE_CHECKING:
    from edgec.ray_sweep import RayCluster

DEFAULT_FRACTIONS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True, kw_only=True)
class Budgets:
    """What the artifact must meet; None is no limit."""

    max_drop: float | None = None
    """Task-metric points lost against the uncompressed model (1 - mean cosine for data without scores or labels)."""
    max_latency_ms: float | None = None
    """p50 latency on this machine with the target's session settings, at `bench`'s batch and sequence length."""
    max_size_mb: float | None = None
    """Size of the model file."""

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")

    def excess(self, drop: float, latency_ms: float, size_mb: float) -> dict[str, float]:
        """How far a candidate is over each budget it misses, relative to the budget (0.5 = 50% over)."""
        measured = {"max_drop": drop, "max_latency_ms": latency_ms, "max_size_mb": size_mb}
        over = {}
        for name, limit in dataclasses.asdict(self).items():
            if limit is not None and measured[name] > limit:
                over[name] = (measured[name] - limit) / max(limit, 1e-9)
        return over


@dataclass(frozen=True)
class Candidate:
    fraction: float
    precision: str
    drop: float
    latency_ms: float
    size_mb: float
    over: dict[str, float]
    """Budgets missed and by how much (relative); empty when every budget is met."""
    error: str = ""
    """Why the candidate could not be measured (a Ray task that failed twice); empty when it was."""

    @property
    def name(self) -> str:
        return f"prune {self.fraction:g}, {self.precision}"


def search(
    model: str | Path,
    target: str,
    *,
    budgets: Budgets,
    recipe: Recipe,
    calib: Dataset | None,
    eval: Dataset,  # noqa: A002
    out: str | Path,
    bench: BenchConfig,
    train: Dataset | None = None,
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    samples: int = 200,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    on_stage: Callable[[str], None] = lambda name: None,
    ray: RayCluster | None = None,
) -> tuple[Artifact, Candidate, list[Candidate]]:
    """Search, then build the chosen candidate at `out`. Returns it, its sample measurement, and every candidate.

    With `ray`, every candidate is built at once as a Ray task (edgec.ray_sweep) and the same rule keeps the same
    candidates; the chosen one is then built here, as without Ray.

    When no candidate meets every budget, the closest (least relative excess) is built at `out` all the same;
    `chosen.over` says what it misses and unmet_message() says it for people.
    """
    out = Path(out)
    check_output_path(out, force=force)
    profile, _ = resolve_target(target, has_calibration=calib is not None, tensorrt={})
    if profile.backend != "ort":
        raise ConfigError(
            f"a budgeted search times candidates with ONNX Runtime on this machine; {profile.name} is not an ONNX Runtime target"
        )
    for fraction in fractions:
        PruneConfig(fraction=fraction)  # every cell valid before the first build
    precisions = [p for p in profile.precisions if recipe.quant.precision in (None, p)]
    selection, held_out = selection_split(eval, recipe.seed)
    sample = selection.sample(samples, seed=recipe.seed)
    order = [(precision, fraction) for precision in precisions for fraction in sorted(fractions)]
    cells = {
        key: _recipe(recipe, key[1], key[0], recipe.parity) for key in order
    }  # measure_cell measures, it does not gate
    with tempfile.TemporaryDirectory(prefix="edgec-search-") as work:
        if ray is not None:  # every candidate at once; the serial rule below keeps the same ones
            measured = _measure_on_ray(
                model, target, cells, calib, sample, train, Path(work), bench, load, ray, on_stage
            )
        else:
            measured = _measure_in_turn(
                model, target, cells, calib, sample, train, Path(work), bench, load, budgets, on_stage
            )
    tried: list[Candidate] = []
    for precision in precisions:
        for fraction in sorted(fractions):
            candidate = measured.get((precision, fraction))
            if candidate is None:
                break
            tried.append(_candidate(candidate, precision, fraction, budgets))
            if "max_drop" in tried[-1].over:  # more pruning only loses more
                break
    if all("failed" in c.over for c in tried):
        raise EdgecError(f"every candidate build failed; the first: {tried[0].error}")
    chosen = min(tried, key=lambda c: (bool(c.over), sum(c.over.values()), c.latency_ms))
    on_stage(f"final build: {chosen.name}")
    # Within budget: the whole eval set must hold the user's thresholds (--max-drop among them). Over budget:
    # the closest candidate is saved as it measures, and the caller reports what no candidate met.
    parity = recipe.parity if not chosen.over else MEASURE_ONLY
    artifact = build(
        model,
        target,
        recipe=_recipe(recipe, chosen.fraction, chosen.precision, parity),
        calib=calib,
        eval=held_out,
        train=train,
        out=out,
        force=force,
        load=load,
    )
    return artifact, chosen, tried


def _recipe(recipe: Recipe, fraction: float, precision: str, parity: ParityThresholds) -> Recipe:
    prune = dataclasses.replace(recipe.prune or PruneConfig(fraction=0.0), fraction=fraction) if fraction > 0 else None
    return dataclasses.replace(
        recipe, prune=prune, quant=dataclasses.replace(recipe.quant, precision=precision), parity=parity
    )


def _measure_in_turn(
    model, target, cells: dict, calib, sample, train, work: Path, bench, load, budgets, on_stage
) -> dict:
    """Candidates one at a time; a precision stops at the first fraction over the drop budget (more loses more)."""
    measured, broken = {}, set()
    # The bar's total is the most candidates there can be: a precision stops at its first fraction over the drop budget.
    with bar("search candidates (at most)", len(cells)) as step:
        for (precision, fraction), cell in cells.items():
            if precision in broken:
                continue
            on_stage(f"candidate prune {fraction:g} {precision}")
            result = measure_cell(
                model, target, cell, calib=calib, eval=sample, train=train, out=work / "c", bench=bench, load=load
            )
            shutil.rmtree(work / "c", ignore_errors=True)  # only the numbers matter; the winner is built again
            measured[precision, fraction] = result
            step(
                status=f"prune {fraction:g}, {precision}: drop {result['drop']:.2f}, {result['latency_ms']:.2f} ms, "
                f"{result['size_mb']:.1f} MB"
            )
            if "max_drop" in budgets.excess(result["drop"], 0.0, 0.0):
                broken.add(precision)
    return measured


def _measure_on_ray(model, target, cells: dict, calib, sample, train, work: Path, bench, load, ray, on_stage) -> dict:
    from edgec.ray_sweep import run_on_ray

    keys = list(cells)
    jobs = [CellJob(model, target, cells[key], calib, sample, train, load) for key in keys]
    results, _ = run_on_ray(jobs, [work / f"c{i}" for i in range(len(keys))], bench, ray, on_stage)
    return dict(zip(keys, results))


def _candidate(measured: dict, precision: str, fraction: float, budgets: Budgets) -> Candidate:
    if measured.get("error"):  # a Ray task that failed twice: never chosen while a measured candidate exists
        return Candidate(fraction, precision, math.inf, math.inf, math.inf, {"failed": math.inf}, measured["error"])
    drop, latency, size = measured["drop"], measured["latency_ms"], measured["size_mb"]
    return Candidate(fraction, precision, drop, latency, size, budgets.excess(drop, latency, size))


def unmet_message(chosen: Candidate, tried: list[Candidate], out: Path) -> str:
    never = [name for name in ("max_drop", "max_latency_ms", "max_size_mb") if all(name in c.over for c in tried)]
    nobody = (
        f"no candidate met {', '.join('--' + n.replace('_', '-') for n in never)}"
        if never
        else "no candidate met every budget at once"
    )
    return (
        f"{nobody} ({len(tried)} tried); saved the closest, {chosen.name} (drop {chosen.drop:.2f}, {chosen.latency_ms:.2f} ms, "
        f"{chosen.size_mb:.1f} MB), at {out}; relax a budget or allow more pruning"
    )
