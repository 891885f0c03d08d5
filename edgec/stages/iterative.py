"""Iterative compression under one time budget: prune toward the target in steps, distilling after each.

Step k of n keeps (1 - fraction)^(k/n) of the original encoder MACs, so each step removes the same share of what
is left. The time budget (the distillation's minutes) starts with the first distillation, as in the one-shot
schedule, and covers everything after it: the teacher's cache, the later pruning steps and every distillation.
Distillation k takes 1 / (n - k + 1) of the time left when it starts, so the last one ends at the deadline.
"""

from __future__ import annotations

import dataclasses
import functools

from edgec.pipeline import Context, Stage
from edgec.recipe import Recipe
from edgec.stages.distill import distill_share
from edgec.stages.prune import merged_note, prune_source, step_fraction


def iterative_stages(recipe: Recipe) -> list[Stage]:
    """prune, distill, prune, distill, ... : one ledger row per step."""
    n = recipe.prune.iterations
    stages = []
    for k in range(1, n + 1):
        stages.append(Stage("prune", functools.partial(prune_step, step=k)))
        stages.append(Stage("distill", functools.partial(distill_share, share=1.0 / (n - k + 1))))
    return stages


def prune_step(ctx: Context, step: int) -> Context:
    """Prune the current model to step `step`'s share of the original MACs (importance and least squares on the
    current, distilled model); the note keeps the original's figures and one row per step."""
    config = ctx.recipe.prune
    previous = ctx.notes.prune
    fraction = step_fraction(config.fraction, config.iterations, step, previous)
    result = prune_source(
        ctx.source,
        ctx.prune_calib or ctx.calib,
        dataclasses.replace(config, fraction=fraction),
        max_length=ctx.recipe.max_length,
        seed=ctx.recipe.seed,
    )
    summary = merged_note(previous, result.summary, step, fraction)
    summary = dataclasses.replace(summary, fraction=config.fraction, schedule="iterative")
    return ctx.with_note("prune", summary, source=dataclasses.replace(ctx.source, model=result.model))
