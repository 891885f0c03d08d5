"""The build pipeline: stages over one explicit context, with a parity ledger row after each."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from edgec.artifacts.stage_notes import StageNotes
from edgec.data import Dataset
from edgec.parity.evalset import EvalSet
from edgec.parity.ledger import ParityRow
from edgec.parity.runtime import measure_model, measure_module
from edgec.precision import Precision
from edgec.recipe import ParityThresholds, Recipe
from edgec.source import Source
from edgec.targets import TargetProfile


@dataclass(frozen=True)
class Calibration:
    """What static int8's calibration found, kept for the fallback stage to quantize again with some nodes in float."""

    prepared: Path
    """The float model that was quantized (smoothed, outlier channels split off)."""
    ranges: dict[str, list[float]]
    """Activation range of each weight-MatMul input."""
    sensitivity: dict[str, float]
    """Each weight MatMul's own int8 error on the calibration data (ops.calibration.matmul_quantization_error)."""


@dataclass(frozen=True)
class Context:
    """Everything a build knows; each stage returns a new one (dataclasses.replace)."""

    source: Source
    recipe: Recipe
    target: TargetProfile
    thresholds: ParityThresholds
    workdir: Path
    calib: Dataset
    evaluation: EvalSet
    """The data the gate judges: --eval (its held-out part where a stage selects), else the calibration sample."""
    selection: EvalSet | None = None
    """The part of --eval that selecting stages (fallback, distillation's early stop) choose on; None where no stage
    selects. Disjoint from `evaluation`, so the gate judges data nothing was chosen on."""
    prune_calib: Dataset | None = None
    """Pruning's own calibration texts (PruneConfig.calib_samples of them); None: pruning uses `calib`."""
    train: Dataset | None = None
    """Unlabelled (or labelled) training text for distillation."""
    teacher: torch.nn.Module | None = None
    """The uncompressed model, kept while front-end stages change source.model (pruning, distillation)."""
    deadline: float | None = None
    """time.perf_counter() by which the front end's one time budget (distillation, iterative pruning) ends."""
    distillation: Any = None
    """The prepared distillation (tokenized data, the teacher's cached targets), built once per build."""
    calibration: Calibration | None = None
    """Set by the quantize stage for static int8."""
    onnx_path: Path | None = None
    parity_model: Path | None = None
    """What the ledger runs for the artifact when it is not onnx_path: the artifact's own file (a mobile .ort,
    a built TensorRT engine) or, where its runtime is absent, a stand-in ONNX (rows marked simulated)."""
    files: tuple[Path, ...] = ()
    """Files the emitted artifact consists of, besides the manifest and report."""
    notes: StageNotes = field(default_factory=StageNotes)
    """What each stage wants the report to say, one typed note per stage."""
    ledger: tuple[ParityRow, ...] = ()

    @property
    def precision(self) -> Precision:
        return cast(Precision, self.recipe.quant.precision)  # plan.resolve_recipe has chosen it

    def with_note(self, stage: str, note: Any, **changes: Any) -> Context:
        """This context with `stage`'s note (of its stage_notes type) and the fields in `changes` replaced."""
        return dataclasses.replace(self, notes=self.notes.with_note(stage, note), **changes)


@dataclass(frozen=True)
class Stage:
    """A named step over the context; a stage that leaves a new model (ONNX or PyTorch) gets a ledger row."""

    name: str
    run: Callable[[Context], Context]


def measure(ctx: Context, stage: str, evaluation: EvalSet | None = None) -> ParityRow:
    """The ledger row for the model a stage left in the context (ONNX once exported, PyTorch before), on
    `evaluation` (default: the gate's data)."""
    evaluation = evaluation or ctx.evaluation
    if (
        ctx.parity_model is not None
    ):  # the artifact's own file (.ort, .engine, .pte) or an ONNX standing in for an engine
        simulated = ctx.parity_model.suffix == ".onnx"
        return measure_model(
            ctx.parity_model,
            stage,
            ctx.source.task,
            evaluation,
            ctx.thresholds,
            ctx.target.session,
            simulated,
            statistics=True,
        )
    if ctx.onnx_path is None:
        return measure_module(ctx.source, stage, evaluation, ctx.thresholds)
    return measure_model(ctx.onnx_path, stage, ctx.source.task, evaluation, ctx.thresholds, ctx.target.session)


def selection_data(ctx: Context) -> EvalSet:
    """What a selecting stage chooses on: the selection part of --eval (the gate's data when none was split off)."""
    return ctx.selection or ctx.evaluation


def run_stages(ctx: Context, stages: list[Stage], on_stage: Callable[[str], None] = lambda name: None) -> Context:
    """Run stages in order, appending a ledger row after each one that produced a new model."""
    for stage in stages:
        on_stage(stage.name)
        before, started = (ctx.onnx_path, ctx.parity_model, ctx.source.model), time.perf_counter()
        ctx = stage.run(ctx)
        if (ctx.onnx_path, ctx.parity_model) != before[:2] or ctx.source.model is not before[2]:
            row = dataclasses.replace(measure(ctx, stage.name), seconds=round(time.perf_counter() - started, 2))
            ctx = dataclasses.replace(ctx, ledger=(*ctx.ledger, row))
        release_freed_memory()
    return ctx


def _trim_function() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_malloc_trim = _trim_function()  # glibc only; elsewhere there is nothing to call


def release_freed_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the operating system.

    A stage's large transient buffers (ONNX protos and their serialized bytes, ONNX Runtime sessions, numpy copies
    of weights) are freed when it ends, but glibc's allocator keeps most of them mapped, so each stage's peak
    stacked on the last one's: an mpnet int8 build entered quantization at 2.9 GiB RSS without this, 1.0 with it.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


@contextlib.contextmanager
def collections_skip_older_objects() -> Iterator[None]:
    """While a build runs, let garbage collection walk only the objects the build made (gc.freeze).

    A full collection walks every tracked object in the process: over half a million once torch, transformers and
    ONNX Runtime are imported, about 0.25 s a walk, which was two thirds of a tiny model's build (six walks). What a
    stage leaves behind is younger than the build, so leaving older objects out loses nothing; they are unfrozen
    after. A process that froze objects itself (a pre-forking server), or a build inside a build, is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
