"""build() and compress(): the orchestration of one build (a model, a recipe and a target profile in; a verified
artifact folder out) and of one compression (a smaller Hugging Face folder out). What each step does lives in
plan (which stages), inputs (the model, the samples and the reference outputs), pipeline (running the stages),
build_outputs and package (what is written after them)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from edgec.artifacts.artifact import Artifact, load_artifact, staged_output
from edgec.artifacts.package import package
from edgec.artifacts.stage_notes import DistillNote, PruneNote
from edgec.backends import get_backend
from edgec.build_outputs import build_profile, manifest_for, parity_failure_message, write_golden
from edgec.data import Dataset
from edgec.errors import ConfigError, ParityError
from edgec.inputs import start_context
from edgec.parity.ledger import ParityRow
from edgec.pipeline import collections_skip_older_objects, run_stages
from edgec.plan import front_end_stages, resolve_recipe, resolve_target, selects, stages_for
from edgec.precision import Precision
from edgec.processes import check_single_process, main_process_output
from edgec.recipe import PruneConfig, Recipe
from edgec.source import LoadOptions, save_pruned
from edgec.targets import TargetProfile, load_target


@dataclass(frozen=True, kw_only=True)
class Compressed:
    """What `compress` did, for its caller to report."""

    prune: PruneNote
    distill: DistillNote | None
    """None without distillation."""
    ledger: tuple[ParityRow, ...]
    """The front-end stages' rows (PyTorch, against the unpruned model)."""
    reference_metric: dict[str, float]
    """The unpruned model's task metric on the gate's data (empty without labels or scores)."""


def build(
    model: str | Path,
    target: str | TargetProfile = "ort",
    *,
    recipe: Recipe | None = None,
    calib: Dataset | None = None,
    eval: Dataset | None = None,  # noqa: A002 - the product's own word
    train: Dataset | None = None,
    out: str | Path,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    tensorrt: dict[str, Any] | None = None,
    instruction_set: str | None = None,
    mobile: dict[str, Any] | None = None,
    on_stage: Callable[[str], None] = lambda name: None,
) -> Artifact:
    """Compile `model` for `target`; raises ParityError (after saving OUT.rejected) if the artifact drifts.

    `train` is the text distillation trains on (recipe.distill); `calib` also drives pruning's importance.
    `tensorrt` changes the target's [tensorrt] settings (max_batch, max_seq_len, require_engine, ...);
    `mobile` the mobile target's accelerator shaping (accelerator, fixed_batch, fixed_seq).
    `instruction_set` (edgec.hardware.INSTRUCTION_SETS) is the CPU the artifact is for; None: this host's.
    """
    out = Path(out)
    # issue 18: two processes would race on OUT; multi-process distillation runs in `edgec prune --distill`.
    check_single_process(
        "edgec build", "distill under torchrun with `edgec prune --distill`, then build the pruned folder"
    )
    profile, choice = resolve_target(
        target,
        has_calibration=calib is not None,
        tensorrt=tensorrt or {},
        mobile=mobile or {},
        instruction_set=instruction_set,
    )
    get_backend(profile.backend).preflight(profile, out)  # before any work: packages, devices, the output's form
    recipe = resolve_recipe(recipe or Recipe(), profile)
    if recipe.distill is not None and train is None:
        raise ConfigError("distillation needs training text; pass --distill FILE (unlabelled text is enough)")
    started = time.perf_counter()
    with (
        collections_skip_older_objects(),
        staged_output(out, force=force) as staging,
        tempfile.TemporaryDirectory(prefix="edgec-") as work,
    ):
        stages = stages_for(recipe, profile, staging)
        thresholds = profile.thresholds(
            cast(Precision, recipe.quant.precision), recipe.parity, pruned=recipe.prune is not None
        )
        ctx = start_context(
            model,
            recipe,
            profile,
            thresholds,
            Path(work),
            calib=calib,
            eval=eval,
            train=train,
            load=load,
            on_stage=on_stage,
            selecting=selects(stages),
        )
        ctx = run_stages(ctx.with_note("target", choice) if choice else ctx, stages, on_stage)
        on_stage("golden sample")
        sample = write_golden(ctx, staging)
        manifest = package(staging, manifest_for(ctx, time.perf_counter() - started, sample), build_profile(ctx))
        if not manifest.parity.passed:
            rejected = out.with_name(out.name + ".rejected")
            shutil.rmtree(rejected, ignore_errors=True)
            os.replace(staging, rejected)
            raise ParityError(parity_failure_message(ctx, rejected))
    return load_artifact(out) if out.suffix == ".zip" else Artifact(out, manifest)


def compress(
    model: str | Path,
    recipe: Recipe,
    *,
    calib: Dataset | None = None,
    eval: Dataset | None = None,  # noqa: A002
    train: Dataset | None = None,
    out: str | Path,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    on_stage: Callable[[str], None] = lambda name: None,
    deadline: float | None = None,
) -> Compressed:
    """Prune (and distill) `model` and save it as a Hugging Face folder that transformers loads as is.

    `deadline` (a time.perf_counter() value) ends distillation then, whatever recipe.distill.minutes says: a caller
    with one wall-clock budget for several steps gives distillation what is left. Returns the prune and distill
    notes with the parity ledger of the front-end stages (PyTorch, vs the unpruned model).
    """
    out = Path(out)
    if recipe.prune is None:
        raise ConfigError("nothing to do: pass --prune F (the share of the encoder's compute to remove)")
    if recipe.distill is not None and train is None:
        raise ConfigError("distillation needs training text; pass --distill FILE (unlabelled text is enough)")
    # issue 18: under torchrun every process prunes and distills (the collectives need them all); rank 0 saves.
    with (
        collections_skip_older_objects(),
        main_process_output(out, force=force) as staging,
        tempfile.TemporaryDirectory(prefix="edgec-") as work,
    ):
        stages = front_end_stages(recipe)
        profile = load_target("ort")
        thresholds = profile.thresholds(Precision.FP32, recipe.parity, pruned=True)
        ctx = start_context(
            model,
            recipe,
            profile,
            thresholds,
            Path(work),
            calib=calib,
            eval=eval,
            train=train,
            load=load,
            on_stage=on_stage,
            selecting=selects(stages),
            deadline=deadline,
        )
        prune = cast(PruneConfig, ctx.recipe.prune)  # not None: refused above
        if "layers" in prune.units and ctx.source.model.config.model_type == "modernbert":  # surgery.standard_layout
            raise ConfigError(
                "a ModernBERT with whole layers removed cannot be saved as a transformers folder (its layers alternate "
                "local and global attention by position); prune with --units heads,ffn, or prune while building "
                "(`edgec build --prune`)"
            )
        ctx = run_stages(ctx, stages, on_stage)
        summary = cast(PruneNote, ctx.notes.prune)  # the prune stage ran
        on_stage("save")
        save_pruned(ctx.source, summary, staging)
    return Compressed(
        prune=summary, distill=ctx.notes.distill, ledger=ctx.ledger, reference_metric=ctx.evaluation.reference_metric
    )
