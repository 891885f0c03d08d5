"""Option groups of the commands that compile a model (`build`, `search`, and `prune` for pruning and distillation):
what the recipe does, the budgets of a search, and the typed TensorRT and mobile overrides. Each group checks its
values when the command line is parsed, so a bad value is a one-line error (exit 2) before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from edgec.budget_search import Budgets
from edgec.cli.options import (
    Calib,
    DataColumns,
    Eval,
    Force,
    MaxLength,
    RayOptions,
    SourceLoading,
    Target,
    Task,
    Thresholds,
)
from edgec.data import Dataset
from edgec.errors import ConfigError
from edgec.recipe import DistillConfig, PruneConfig, QuantConfig, Recipe
from edgec.running.bench import BenchConfig


@dataclass(frozen=True, kw_only=True)
class Quantization:
    """How weights and activations are reduced (`recipe.QuantConfig`)."""

    precision: Annotated[
        str | None,
        typer.Option(help="fp32, fp16, int8-dynamic or int8 (default: the target's)."),
    ] = None
    calib_samples: Annotated[int, typer.Option(help="Calibration texts drawn deterministically.")] = 256
    calibration: Annotated[str, typer.Option(help="Activation ranges: minmax, percentile or entropy.")] = "percentile"
    percentile: Annotated[float, typer.Option(help="Percentile kept by --calibration percentile.")] = 99.999
    fallback: Annotated[
        bool,
        typer.Option(help="Keep the most sensitive int8 nodes in float when parity fails."),
    ] = True

    def config(self) -> QuantConfig:
        return QuantConfig(
            precision=cast(Any, self.precision),  # a word: QuantConfig.__post_init__ parses it
            calibration=self.calibration,
            percentile=self.percentile,
            calib_samples=self.calib_samples,
            fallback=self.fallback,
        )


@dataclass(frozen=True, kw_only=True)
class Pruning:
    """What structured pruning removes (`recipe.PruneConfig`); `edgec prune` takes it too."""

    prune: Annotated[
        float | None,
        typer.Option(help="Share of the encoder's compute (MACs) to remove, e.g. 0.5."),
    ] = None
    prune_units: Annotated[
        str, typer.Option(help="What may be removed, comma-separated: heads, ffn, layers, hidden.")
    ] = "heads,ffn"
    prune_hidden_size: Annotated[
        int | None, typer.Option(help="With hidden in --prune-units: the width to keep (default: from the kept share).")
    ] = None
    prune_max_layers: Annotated[
        int | None,
        typer.Option(help="With layers in --prune-units: keep at most this many layers (default: the search decides)."),
    ] = None
    prune_rescale: Annotated[
        bool,
        typer.Option(help="Least-squares rescaling of the kept units, layer by layer."),
    ] = True
    schedule: Annotated[
        str,
        typer.Option(
            help="one-shot (prune, then distill) or iterative (prune in steps, distilling after each, "
            "within --distill-minutes).",
        ),
    ] = "one-shot"

    def __post_init__(self) -> None:
        if self.prune is not None and self.prune <= 0:
            # PruneConfig takes 0 (the identity, for sweeps); typed on a command line it is a mistake.
            raise ConfigError(
                f"--prune must be in (0, 1), the share of compute to remove, got {self.prune}; "
                "omit --prune to keep the model whole"
            )

    def config(self, *, calib_samples: int | None = None) -> PruneConfig | None:
        """The prune config asked for (None without --prune); `calib_samples` changes pruning's calibration count."""
        if self.prune is None:
            return None
        samples: dict[str, Any] = {} if calib_samples is None else {"calib_samples": calib_samples}
        units = tuple(u.strip() for u in self.prune_units.split(",") if u.strip())
        return PruneConfig(
            fraction=self.prune,
            units=units,
            hidden_size=self.prune_hidden_size,
            max_layers=self.prune_max_layers,
            rescale=self.prune_rescale,
            schedule=self.schedule,
            **samples,
        )


@dataclass(frozen=True, kw_only=True)
class Distillation:
    """Distillation from the unpruned model after pruning (`recipe.DistillConfig`); `edgec prune` takes it too."""

    distill: Annotated[Path | None, typer.Option(help="Training text for distillation from the unpruned model.")] = None
    distill_steps: Annotated[int, typer.Option(help="Most distillation steps.")] = 1000
    distill_minutes: Annotated[float | None, typer.Option(help="Distillation time budget in minutes.")] = None
    distill_batch_size: Annotated[int, typer.Option(help="Texts per distillation step.")] = 32
    distill_lr: Annotated[float, typer.Option(help="Peak learning rate of distillation.")] = 1e-4

    def config(self) -> DistillConfig | None:
        """The distill config asked for (None without --distill)."""
        if self.distill is None:
            return None
        return DistillConfig(
            steps=self.distill_steps,
            minutes=self.distill_minutes,
            batch_size=self.distill_batch_size,
            learning_rate=self.distill_lr,
        )


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """What a build does and reads: shared by `edgec build` and `edgec search`, which builds many."""

    target: Target = "ort"
    calib: Calib = None
    eval_data: Eval = None
    eval_samples: Annotated[
        int | None, typer.Option(help="Use a deterministic sample of this many --eval examples.")
    ] = None
    task: Task = None
    max_length: MaxLength = 512
    quantization: Quantization = field(default_factory=Quantization)
    thresholds: Thresholds = field(default_factory=Thresholds)
    pruning: Pruning = field(default_factory=Pruning)
    distillation: Distillation = field(default_factory=Distillation)
    columns: DataColumns = field(default_factory=DataColumns)
    loading: SourceLoading = field(default_factory=SourceLoading)
    force: Force = False

    def recipe(self) -> Recipe:
        return Recipe(
            task=self.task,
            prune=self.pruning.config(),
            distill=self.distillation.config(),
            quant=self.quantization.config(),
            parity=self.thresholds.overrides,
            max_length=self.max_length,
        )

    def data(self) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
        """Calibration, eval and distillation data. Samples are drawn while reading (one streaming pass), so
        calibration and eval files may exceed memory. The calibration sample serves quantization and pruning,
        each of which draws its own count from it (inputs.start_context), so it holds the larger count."""
        prune = self.pruning.config()
        calib_samples = max(self.quantization.calib_samples, prune.calib_samples if prune else 0)
        return (
            self.columns.read(self.calib, sample=calib_samples),
            self.columns.read(self.eval_data, sample=self.eval_samples),
            self.columns.read(self.distillation.distill),
        )


@dataclass(frozen=True, kw_only=True)
class SearchBudgets:
    """The budgeted search's budgets (with --max-drop from the thresholds) and how candidates are timed."""

    max_latency_ms: Annotated[
        float | None, typer.Option(help="Search: p50 latency budget on this machine (see --seq-len).")
    ] = None
    max_size_mb: Annotated[float | None, typer.Option(help="Search: model file size budget.")] = None
    search_prune: Annotated[str, typer.Option(help="Search: prune fractions tried.")] = "0,0.2,0.3,0.4,0.5,0.6,0.7"
    search_samples: Annotated[int, typer.Option(help="Search: eval examples candidates are measured on.")] = 200
    seq_len: Annotated[int, typer.Option(help="Search: tokens per input when timing.")] = 128
    batch: Annotated[int, typer.Option(help="Search: batch size when timing.")] = 1
    ray: RayOptions = field(default_factory=RayOptions)  # issue 18: the candidates as Ray tasks

    @property
    def requested(self) -> bool:
        """Whether a latency or size budget asks for a search (--max-drop alone is a plain build's gate)."""
        return self.max_latency_ms is not None or self.max_size_mb is not None

    def budgets(self, max_drop: float | None) -> Budgets:
        return Budgets(max_drop=max_drop, max_latency_ms=self.max_latency_ms, max_size_mb=self.max_size_mb)

    def bench(self) -> BenchConfig:
        return BenchConfig(batch=self.batch, seq_len=self.seq_len, threads=os.cpu_count() or 1, warmup=10, runs=100)


@dataclass(frozen=True, kw_only=True)
class TensorRTOverrides:
    """Changes to a TensorRT target's [tensorrt] settings; None keeps the profile's value. The profile's own limits
    (opt_batch <= max_batch, ...) are checked again when the target loads (targets.TensorRTSettings)."""

    max_batch: Annotated[
        int | None, typer.Option(help="TensorRT: largest batch the engine accepts (profile default 32).")
    ] = None
    max_seq_len: Annotated[
        int | None, typer.Option(help="TensorRT: longest sequence the engine accepts; also truncates inputs.")
    ] = None
    require_engine: Annotated[
        bool, typer.Option("--require-engine", help="TensorRT: fail unless the engine is built here.")
    ] = False

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_seq_len is not None and self.max_seq_len < 8:  # TensorRTSettings' floor, named as the option
            raise ConfigError(f"--max-seq-len must be at least 8 tokens, got {self.max_seq_len}")

    def changes(self) -> dict[str, Any]:
        """The settings to change, as `api.build(tensorrt=...)` takes them (empty: the profile as it is)."""
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "require_engine"}
        return changes | ({"require_engine": True} if self.require_engine else {})


@dataclass(frozen=True, kw_only=True)
class MobileShape:
    """An accelerator-shaped mobile graph (issue 18)."""

    accelerator: Annotated[
        str | None, typer.Option(help="Mobile: shape the graph for coreml, nnapi or xnnpack (fp32).")
    ] = None
    fixed_shape: Annotated[
        str | None,
        typer.Option(help="Mobile: the graph's fixed input shape BxS, e.g. 1x128 (default with --accelerator)."),
    ] = None

    def __post_init__(self) -> None:
        self.changes()  # parses --fixed-shape: a malformed one fails here, before any work
        if self.fixed_shape and not self.accelerator:
            raise ConfigError(
                "--fixed-shape shapes an accelerator graph; pass --accelerator coreml, nnapi or xnnpack with it"
            )

    def changes(self) -> dict[str, Any]:
        """The mobile target's settings, as `api.build(mobile=...)` takes them (empty: the general graph)."""
        changes: dict[str, Any] = {"accelerator": self.accelerator} if self.accelerator else {}
        if self.fixed_shape:
            batch, _, seq = self.fixed_shape.lower().partition("x")
            if not (batch.isdigit() and seq.isdigit()):
                raise ConfigError(f"--fixed-shape takes BATCHxSEQUENCE, e.g. 1x128; got {self.fixed_shape!r}")
            changes |= {"fixed_batch": int(batch), "fixed_seq": int(seq)}
        return changes
