"""Prune stage: remove attention heads, FFN neurons and whole layers under a MAC budget, post-training, in minutes.

After Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers":
1. importance: Fisher information of per-unit masks and per-layer gates on the calibration texts (prune_fisher);
2. mask search: the plan of least estimated loss that fits the budget (ops.mask_search, ops.layer_search);
3. mask rearrangement: each layer's kept units refined with its Fisher block (ops.rearrange);
4. physical removal of the rest (edgec.compression.surgery);
5. mask tuning, layer by layer: least-squares scales of the kept units (prune_tuning).
With `hidden` among the units (Minitron), the width is fixed before the search, which fills the budget at the units'
costs at that width among the heads it holds (Narrowing); the channels go after the tuning (prune_hidden).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from edgec.artifacts.stage_notes import PruneNote, PruneStep
from edgec.compression import surgery
from edgec.data import Dataset
from edgec.errors import ConfigError
from edgec.ops.layer_search import Plan, search_plan
from edgec.ops.macs import UnitCosts, encoder_macs, unit_costs
from edgec.ops.mask_selection import round_neurons
from edgec.ops.rearrange import rearrange, removal_loss
from edgec.ops.width import expand, restrict
from edgec.parity.evalset import classifier_labels, eval_texts
from edgec.pipeline import Context
from edgec.recipe import PruneConfig
from edgec.running.inference import Batch, encode_batches
from edgec.source import Source
from edgec.stages import prune_hidden
from edgec.stages.prune_fisher import Fisher, fisher_information
from edgec.stages.prune_tuning import tune_masks


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    """The pruned copy, in eval mode (the input model is untouched)."""
    summary: PruneNote
    """MACs and parameters before/after, units kept per layer, layers removed, least-squares fits, timings."""


def prune(ctx: Context) -> Context:
    """The pipeline stage: prune a copy of the model on the calibration set; the teacher stays whole."""
    calib = ctx.prune_calib or ctx.calib
    result = prune_source(ctx.source, calib, ctx.recipe.prune, max_length=ctx.recipe.max_length, seed=ctx.recipe.seed)
    return ctx.with_note("prune", result.summary, source=dataclasses.replace(ctx.source, model=result.model))


def prune_source(source: Source, calib: Dataset, config: PruneConfig, *, max_length: int, seed: int) -> PruneResult:
    """Prune a copy of source.model on `config.calib_samples` texts of `calib`; labels (classifiers) make the
    importance use the task loss."""
    batches, labels = calibration_batches(source, calib.sample(config.calib_samples, seed), max_length)
    return prune_in_steps(source, batches, labels, config, seed=seed)


def prune_in_steps(
    source: Source,
    batches: list[Batch],
    labels: np.ndarray | None,
    config: PruneConfig,
    *,
    seed: int,
    fisher: Fisher | None = None,
) -> PruneResult:
    """Prune to config.fraction in config.steps steps, each a whole prune_model (importance, plan, removal, mask
    tuning) on the model the step before left; kept MACs fall geometrically. One Fisher pass scores each unit
    with every other unit in place; later steps re-score what is left after the first removals and fits, so a unit
    whose partners went is scored for what it does without them (K-prune, arXiv 2308.03449, prunes iteratively
    too). `fisher`: the first step's importance pass, made earlier."""
    result, note = None, None
    for step in range(1, config.steps + 1):
        fraction = step_fraction(config.fraction, config.steps, step, note)
        current = source if result is None else dataclasses.replace(source, model=result.model)
        step_config = dataclasses.replace(config, fraction=fraction)
        result = prune_model(current, batches, labels, step_config, seed=seed, fisher=fisher if step == 1 else None)
        note = merged_note(note, result.summary, step, fraction)
    assert result is not None and note is not None  # config.steps >= 1
    if config.steps == 1:
        return result
    return PruneResult(result.model, dataclasses.replace(note, fraction=config.fraction))


def kept_shares(fraction: float, steps: int) -> list[float]:
    """The share of the original MACs kept after each step: geometric, ending at 1 - fraction."""
    return [(1.0 - fraction) ** (k / steps) for k in range(1, steps + 1)]


def step_fraction(fraction: float, steps: int, step: int, previous: PruneNote | None) -> float:
    """The share of the current model's MACs step `step` (from 1) removes, so that kept_shares' share of the
    original's is left; `previous`: the merged note of the steps before (None at the first)."""
    target = kept_shares(fraction, steps)[step - 1]
    return 1.0 - target if previous is None else max(0.0, 1.0 - target * previous.macs_before / previous.macs_after)


def merged_note(previous: PruneNote | None, summary: PruneNote, step: int, fraction: float) -> PruneNote:
    """One step's note folded into the steps' before it: the original model's 'before' figures, every removed
    layer (numbered as in the original: layer origins), the time of all steps, and one row per step."""
    row = PruneStep(step=step, fraction=round(fraction, 4), macs_after=summary.macs_after, seconds=summary.seconds)
    if previous is None:
        return dataclasses.replace(summary, steps=[row])
    seconds = {
        k: round(previous.seconds.get(k, 0.0) + summary.seconds.get(k, 0.0), 2)
        for k in {*previous.seconds, *summary.seconds}
    }
    return dataclasses.replace(
        summary,
        macs_before=previous.macs_before,
        params_before=previous.params_before,
        heads_before=previous.heads_before,
        ffn_before=previous.ffn_before,
        hidden_before=previous.hidden_before,
        layers_removed=sorted({*previous.layers_removed, *summary.layers_removed}),
        seconds=seconds,
        steps=[*(previous.steps or []), row],
    )


def calibration_batches(source: Source, calib: Dataset, max_length: int) -> tuple[list[Batch], np.ndarray | None]:
    """Tokenized calibration texts, and their class ids where the model is a classifier and the texts are labelled."""
    texts = eval_texts(source.task, calib)
    batches = encode_batches(source.tokenizer, texts, max_length=max_length, batch_size=16)
    return batches, classifier_labels(source, texts)


def prune_model(
    source: Source,
    batches: list[Batch],
    labels: np.ndarray | None,
    config: PruneConfig,
    *,
    seed: int,
    fisher: Fisher | None = None,
) -> PruneResult:
    """Importance, plan, removal, mask tuning; the summary feeds the report.

    `fisher`: an importance pass over the same batches made earlier (with blocks if config.rearrange, capped at
    config.importance_clip), reused.
    """
    teacher, timings = source.model, {}
    lengths = [int(n) for b in batches for n in b.feeds["attention_mask"].sum(axis=1)]
    costs = unit_costs(lengths, surgery.hidden_size(teacher), surgery.head_dim(teacher), surgery.ffn_matrices(teacher))
    width = prune_hidden.planned_width(teacher, config, 1 - config.fraction)
    started = time.perf_counter()
    fisher = fisher or fisher_information(
        source, batches, labels, seed, blocks=config.rearrange, clip=config.importance_clip
    )
    timings["importance"] = time.perf_counter() - started
    narrowing = (
        None
        if width == surgery.hidden_size(teacher)
        else Narrowing(
            unit_costs(lengths, width, surgery.head_dim(teacher), surgery.ffn_matrices(teacher)),
            prune_hidden.allowed_heads(teacher, fisher.head_scores, width),
        )
    )
    started = time.perf_counter()
    plan, searched = plan_pruning(fisher, costs, 1 - config.fraction, config, narrowing=narrowing)
    timings["search"] = time.perf_counter() - started
    student = copy.deepcopy(teacher)
    surgery.apply_plan(student, plan)
    estimated = {"searched": round(searched, 6), "rearranged": round(_loss(plan, fisher), 6)}
    capped = fisher.capped
    started = time.perf_counter()
    tune = config.rescale and config.fraction > 0
    target = (
        scheduled_target(teacher, fisher, costs, config, narrowing)
        if tune and config.tuning.target == "schedule"
        else teacher
    )
    del fisher  # its blocks (mpnet: ~0.5 GB) are not needed while tuning
    fits = (
        tune_masks(
            student,
            target,
            np.flatnonzero(plan.layers).tolist(),
            batches,
            source.input_names,
            config.tuning,
            cls_only=config.tuning.cls_only and source.task == "sequence-classification",
        )
        if tune
        else []
    )
    timings["tuning"] = time.perf_counter() - started
    if narrowing is not None:  # after the tuning, which fits the kept units at the full width
        started = time.perf_counter()
        prune_hidden.keep_top_channels(student, teacher, batches, source.input_names, width)
        timings["hidden"] = time.perf_counter() - started
    summary = _summary(teacher, student, plan, costs, config, lengths)
    summary = dataclasses.replace(
        summary,
        estimated_loss=estimated,
        importance_capped=capped,
        least_squares=fits,
        seconds={k: round(v, 2) for k, v in timings.items()},
    )
    return PruneResult(student.eval(), summary)


@dataclass(frozen=True)
class Narrowing:
    """Hidden-size pruning's terms for the search: the width is fixed first (prune_hidden), then heads and neurons
    fill the budget at what they cost at that width, among the heads transformers' layout can hold there."""

    costs: UnitCosts
    """What each head and neuron costs at the kept width."""
    heads: list[np.ndarray]
    """Per layer, the indices of the heads that may stay (prune_hidden.allowed_heads)."""


def plan_pruning(
    fisher: Fisher,
    costs: UnitCosts,
    kept_share: float,
    config: PruneConfig,
    *,
    layers: bool = True,
    narrowing: Narrowing | None = None,
) -> tuple[Plan, float]:
    """The search's plan at `kept_share` of the MACs (`costs`: at the model's width), rearranged where asked; and
    its estimated loss before rearranging. `narrowing`: hidden channels go too (see Narrowing)."""
    head_scores, neuron_scores = fisher.head_scores, fisher.neuron_scores
    total = sum(map(len, head_scores)) * costs.head + sum(map(len, neuron_scores)) * costs.neuron
    allowed = None if narrowing is None else narrowing.heads
    plan = search_plan(
        head_scores if allowed is None else restrict(head_scores, allowed),
        neuron_scores,
        fisher.layers if layers and "layers" in config.units else None,
        costs if narrowing is None else narrowing.costs,
        kept_share * total,
        prune_heads="heads" in config.units,
        prune_neurons="ffn" in config.units,
        max_layers=config.max_layers,
    )
    heads = plan.heads if allowed is None else expand(plan.heads, allowed, list(map(len, head_scores)))
    plan = Plan(heads, round_neurons(neuron_scores, plan.neurons, config.neuron_multiple), plan.layers)
    searched = _loss(plan, fisher)
    if config.rearrange:
        within = allowed or [None] * len(plan.heads)
        heads = [
            _rearrange_heads(keep, block, a) if kept else keep
            for keep, block, a, kept in zip(plan.heads, fisher.heads, within, plan.layers)
        ]
        neurons = [
            rearrange(keep, block) if kept and block.ndim == 2 else keep
            for keep, block, kept in zip(plan.neurons, fisher.neurons, plan.layers)
        ]
        plan = Plan(heads, neurons, plan.layers)
    return plan, searched


def _rearrange_heads(keep: np.ndarray, block: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """A layer's heads rearranged; under hidden-size pruning, only among the heads allowed to stay."""
    if allowed is None:
        return rearrange(keep, block)
    inner = rearrange(keep[allowed], block[np.ix_(allowed, allowed)])
    return expand([inner], [allowed], [len(keep)])[0]


def scheduled_target(
    teacher: nn.Module, fisher: Fisher, costs: UnitCosts, config: PruneConfig, narrowing: Narrowing | None = None
) -> nn.Module:
    """The model pruned to √(kept share) of the MACs by the same method (whole layers stay): the nearer target
    of Kwon et al.'s two-step schedule, against which the pruned layers are fitted.

    Where heads and neurons alone cannot reach that share (units "layers" only, or a budget only whole layers
    meet), there is no intermediate point of the schedule and the unpruned model is the target. Under hidden-size
    pruning (`narrowing`) the target keeps the full width (the layers are tuned before the channels go) and its heads
    and neurons come from the same narrowed search."""
    try:
        plan, _ = plan_pruning(fisher, costs, math.sqrt(1 - config.fraction), config, layers=False, narrowing=narrowing)
    except ConfigError:
        return teacher
    target = copy.deepcopy(teacher)
    surgery.apply_plan(target, plan)
    return target.eval()


def _loss(plan: Plan, fisher: Fisher) -> float:
    """The plan's estimated loss with each layer's Fisher block (its diagonal where no block was kept)."""
    loss = 0.0
    for i, kept in enumerate(plan.layers):
        if not kept:
            loss += float(fisher.layers[i])
            continue
        loss += removal_loss(plan.heads[i], fisher.heads[i])
        block = fisher.neurons[i]
        loss += removal_loss(plan.neurons[i], block) if block.ndim == 2 else float(block[~plan.neurons[i]].sum())
    return loss


def _summary(
    teacher: nn.Module, student: nn.Module, plan: Plan, costs: UnitCosts, config: PruneConfig, lengths: list[int]
) -> PruneNote:
    heads_before, ffn_before = surgery.head_counts(teacher), surgery.ffn_widths(teacher)
    heads_after, ffn_after = surgery.head_counts(student), surgery.ffn_widths(student)
    after = unit_costs(
        lengths, surgery.hidden_size(student), surgery.head_dim(student), surgery.ffn_matrices(student)
    )  # at the width kept
    origins = surgery.layer_origins(
        teacher
    )  # layers in the unpruned model's numbering (iterative steps prune pruned models)
    return PruneNote(
        fraction=config.fraction,
        units=list(config.units),
        calibration_texts=costs.texts,
        mean_tokens=round(sum(lengths) / len(lengths), 1),
        macs_before=encoder_macs(heads_before, ffn_before, costs),
        macs_after=encoder_macs(heads_after, ffn_after, after),
        params_before=sum(p.numel() for p in teacher.parameters()),
        params_after=sum(p.numel() for p in student.parameters()),
        heads_before=heads_before,
        heads_after=heads_after,
        ffn_before=ffn_before,
        ffn_after=ffn_after,
        hidden_before=surgery.hidden_size(teacher),
        hidden_after=surgery.hidden_size(student),
        layers_kept=[origins[i] for i in np.flatnonzero(plan.layers)],
        layers_removed=[origins[i] for i in np.flatnonzero(~plan.layers)],
        tuning=dataclasses.asdict(config.tuning) if config.rescale else None,
    )
