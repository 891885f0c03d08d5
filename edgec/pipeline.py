"""The build pipeline: stages over one explicit context, with a parity ledger row after each."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgec.data import Dataset
from edgec.inference import Batch, Outputs
from edgec.recipe import ParityThresholds, Recipe
from edgec.source import Source
from edgec.targets import TargetProfile


@dataclass(frozen=True)
class ParityRow:
    """One stage's outputs compared with the fp32 reference on the eval set."""

    stage: str
    model: str
    metrics: dict[str, float]
    failures: tuple[str, ...] = ()
    seconds: float = 0.0
    """Wall time of the stage itself (not of this measurement)."""
    simulated: bool = False
    """True where the artifact's own runtime was not available and ONNX Runtime CPU stood in."""

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class EvalSet:
    """The eval data, tokenized once, and the fp32 PyTorch reference outputs on it."""

    dataset: Dataset
    batches: list[Batch]
    reference: Outputs
    reference_metric: dict[str, float]
    """The uncompressed model's own task metric (spearman or accuracy) where the data has scores/labels."""
    labels: np.ndarray | None
    """Class ids of the data's labels (names mapped through the model's label2id), if it has labels."""


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
    train: Dataset | None = None
    """Unlabelled (or labelled) training text for distillation."""
    teacher: torch.nn.Module | None = None
    """The uncompressed model, kept while front-end stages change source.model (pruning, distillation)."""
    deadline: float | None = None
    """time.perf_counter() by which the front end's one time budget (distillation, iterative pruning) ends."""
    distillation: Any = None
    """The prepared distillation (tokenized data, the teacher's cached targets), built once per build."""
    onnx_path: Path | None = None
    parity_model: Path | None = None
    """What the ledger runs for the artifact when it is not onnx_path: the artifact's own file (a mobile .ort,
    a built TensorRT engine) or, where its runtime is absent, a stand-in ONNX (rows marked simulated)."""
    files: tuple[Path, ...] = ()
    """Files the emitted artifact consists of, besides the manifest and report."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What each stage wants the report to say, keyed by stage name."""
    ledger: tuple[ParityRow, ...] = ()

    @property
    def precision(self) -> str:
        return self.recipe.quant.precision

    def with_note(self, stage: str, note: Any, **changes: Any) -> Context:
        return dataclasses.replace(self, notes={**self.notes, stage: note}, **changes)


@dataclass(frozen=True)
class Stage:
    """A named step over the context; a stage that leaves a new model (ONNX or PyTorch) gets a ledger row."""

    name: str
    run: Callable[[Context], Context]


def run_stages(
    ctx: Context,
    stages: list[Stage],
    measure: Callable[[Context, str], ParityRow],
    on_stage: Callable[[str], None] = lambda name: None,
) -> Context:
    """Run stages in order, appending a ledger row after each one that produced a new model."""
    for stage in stages:
        on_stage(stage.name)
        before, started = (ctx.onnx_path, ctx.parity_model, ctx.source.model), time.perf_counter()
        ctx = stage.run(ctx)
        if (ctx.onnx_path, ctx.parity_model) != before[:2] or ctx.source.model is not before[2]:
            row = dataclasses.replace(measure(ctx, stage.name), seconds=round(time.perf_counter() - started, 2))
            ctx = dataclasses.replace(ctx, ledger=(*ctx.ledger, row))
    return ctx


def first_loss(ledger: tuple[ParityRow, ...]) -> ParityRow | None:
    """The earliest row that failed the thresholds: where accuracy was lost."""
    return next((row for row in ledger if not row.passed), None)
