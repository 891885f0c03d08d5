"""What a build starts from: the context its first stage gets, with the source model, the calibration samples
(quantization's and pruning's), and the uncompressed model's outputs on the data the gate judges (and on the selection
part of --eval where a stage selects)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from edgec.data import Dataset, read_dataset
from edgec.parity.evalset import reference_outputs, selection_split
from edgec.pipeline import Context
from edgec.recipe import ParityThresholds, Recipe
from edgec.source import LoadOptions, load_source
from edgec.targets import TargetProfile, package_data

log = logging.getLogger("edgec")


def default_calibration_file() -> Path:
    """The project's own corpus (calibration/corpus.txt, installed as edgec.corpus)."""
    return package_data("edgec.corpus", "calibration") / "corpus.txt"


def start_context(
    model: str | Path,
    recipe: Recipe,
    target: TargetProfile,
    thresholds: ParityThresholds,
    workdir: Path,
    *,
    calib: Dataset | None,
    eval: Dataset | None,  # noqa: A002
    train: Dataset | None,
    load: LoadOptions,
    on_stage: Callable[[str], None],
    selecting: bool,
    deadline: float | None = None,
) -> Context:
    """The context the first stage gets: the model (its own teacher), the calibration sample, the reference outputs
    on the gate's data (and on the selection part of --eval where a stage of the build selects: `selecting`), and
    pruning's calibration sample (PruneConfig.calib_samples, which may exceed quantization's; None without pruning)."""
    on_stage("load")
    source = load_source(model, task=recipe.task, options=load)
    recipe = dataclasses.replace(recipe, max_length=min(recipe.max_length, source.max_length))
    samples = recipe.quant.calib_samples
    prune_samples = recipe.prune.calib_samples if recipe.prune is not None else 0
    pool = calib or read_dataset(default_calibration_file(), sample=max(samples, prune_samples), seed=recipe.seed)
    calib = pool.sample(samples, recipe.seed)
    prune_calib = pool.sample(prune_samples, recipe.seed) if recipe.prune is not None else None
    on_stage("reference")
    selection = None
    reference = functools.partial(
        reference_outputs, source, max_length=recipe.max_length, hidden_pruned=recipe.prunes_hidden
    )
    if eval is None:
        log.warning(
            "no --eval: parity is measured on the %d calibration texts the quantizer also saw, with no task metric; "
            "pass --eval FILE with labels or scores for a gate that means something",
            len(calib),
        )
        evaluation = reference(calib)
    elif not selecting:
        evaluation = reference(eval)
    else:
        chosen, held_out = selection_split(eval, recipe.seed)
        evaluation = reference(held_out)
        selection = reference(chosen)
    return Context(
        source,
        recipe,
        target,
        thresholds,
        workdir,
        calib,
        evaluation,
        selection,
        prune_calib,
        train=train,
        teacher=source.model,
        deadline=deadline,
    )
