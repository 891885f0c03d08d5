"""Prune stage: remove attention heads and FFN neurons under a MAC budget, post-training, in minutes.

After Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers":
1. importance: Fisher information of per-unit masks on the calibration texts (ops.importance);
2. mask search: the most important units that fit the budget (ops.mask_search);
3. physical removal of the rest (edgec.surgery);
4. least squares, layer by layer: rescale the kept units so each sub-layer's output matches the
   unpruned model's (ops.least_squares).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgec import surgery
from edgec.data import Dataset
from edgec.inference import Batch, encode_batches
from edgec.ops.importance import mask_heads, mask_neurons, sensitivity_loss
from edgec.ops.least_squares import NormalEquations
from edgec.ops.macs import encoder_macs, unit_costs
from edgec.ops.mask_search import search_masks
from edgec.ops.width import expand, restrict
from edgec.pipeline import Context
from edgec.recipe import PruneConfig
from edgec.source import Source
from edgec.parity.evalset import classifier_labels, eval_texts
from edgec.stages import prune_hidden


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    """The pruned copy, in eval mode (the input model is untouched)."""
    summary: dict
    """MACs and parameters before/after, units kept per layer, least-squares fits, timings."""


def prune(ctx: Context) -> Context:
    """The pipeline stage: prune a copy of the model on the calibration set; the teacher stays whole."""
    result = prune_source(ctx.source, ctx.calib, ctx.recipe.prune, max_length=ctx.recipe.max_length, seed=ctx.recipe.seed)
    return ctx.with_note("prune", result.summary, source=dataclasses.replace(ctx.source, model=result.model))


def prune_source(source: Source, calib: Dataset, config: PruneConfig, *, max_length: int, seed: int) -> PruneResult:
    """Prune a copy of source.model; labels in `calib` (classifiers) make the importance use the task loss."""
    texts = eval_texts(source.task, calib)
    batches = encode_batches(source.tokenizer, texts, max_length=max_length, batch_size=16)
    labels = classifier_labels(source, texts)
    return prune_model(source, batches, labels, config, seed=seed)


def prune_model(source: Source, batches: list[Batch], labels: np.ndarray | None, config: PruneConfig, *, seed: int) -> PruneResult:
    """Importance, mask search under the MAC budget, removal, least squares; the summary feeds the report."""
    teacher, timings = source.model, {}
    lengths = [int(n) for b in batches for n in b.feeds["attention_mask"].sum(axis=1)]
    costs = unit_costs(lengths, surgery.hidden_size(teacher), surgery.head_dim(teacher))
    heads_before, ffn_before = surgery.head_counts(teacher), surgery.ffn_widths(teacher)
    macs_before = encoder_macs(heads_before, ffn_before, costs)
    width = prune_hidden.planned_width(teacher, config, 1 - config.fraction)
    costs = unit_costs(lengths, width, surgery.head_dim(teacher))  # what each unit costs at the width kept

    started = time.perf_counter()
    head_scores, neuron_scores = unit_importance(source, batches, labels, seed)
    timings["importance"] = time.perf_counter() - started
    budget = (1 - config.fraction) * macs_before * costs.texts
    allowed = prune_hidden.allowed_heads(teacher, head_scores, width)
    keep_heads, keep_neurons = search_masks(
        restrict(head_scores, allowed), neuron_scores, costs, budget, prune_heads="heads" in config.units,
        prune_neurons="ffn" in config.units,
    )
    keep_heads = expand(keep_heads, allowed, heads_before)
    student = copy.deepcopy(teacher)
    for i, (heads, neurons) in enumerate(zip(keep_heads, keep_neurons)):
        if not heads.all():
            surgery.keep_heads(student, i, np.flatnonzero(heads).tolist())
        if not neurons.all():
            surgery.keep_neurons(student, i, np.flatnonzero(neurons).tolist())
    started = time.perf_counter()
    fits = fit_scales(student, teacher, batches, source.input_names) if config.rescale and config.fraction > 0 else []
    timings["least_squares"] = time.perf_counter() - started
    if width < surgery.hidden_size(teacher):
        started = time.perf_counter()
        prune_hidden.keep_top_channels(student, teacher, batches, source.input_names, width)
        timings["hidden"] = time.perf_counter() - started

    heads_after, ffn_after = surgery.head_counts(student), surgery.ffn_widths(student)
    summary = {
        "fraction": config.fraction,
        "units": list(config.units),
        "calibration_texts": costs.texts,
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "macs_before": macs_before,
        "macs_after": encoder_macs(heads_after, ffn_after, costs),
        "params_before": sum(p.numel() for p in teacher.parameters()),
        "params_after": sum(p.numel() for p in student.parameters()),
        "heads_before": heads_before,
        "heads_after": heads_after,
        "ffn_before": ffn_before,
        "ffn_after": ffn_after,
        "hidden_before": surgery.hidden_size(teacher),
        "hidden_after": surgery.hidden_size(student),
        "least_squares": fits,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    return PruneResult(student.eval(), summary)


def unit_importance(source: Source, batches: list[Batch], labels: np.ndarray | None, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-layer Fisher scores of heads and neurons: Σ over examples of the squared mask gradient."""
    model, parts = source.model, surgery.parts_for(source.model)
    layers, heads, widths = surgery.encoder_layers(model), surgery.head_counts(model), surgery.ffn_widths(model)
    head_fisher = [torch.zeros(h, dtype=torch.float64) for h in heads]
    neuron_fisher = [torch.zeros(f, dtype=torch.float64) for f in widths]
    module, generator = source.reference_module(), torch.Generator().manual_seed(seed)
    masks: dict[tuple[str, int], torch.Tensor] = {}

    def hook(key: tuple[str, int], apply):
        return lambda mod, args: (apply(args[0], masks[key]),)

    handles = [surgery.get(layer, parts.attn_out).register_forward_pre_hook(hook(("heads", i), mask_heads))
               for i, layer in enumerate(layers) if heads[i]]
    handles += [surgery.get(layer, parts.ffn_out).register_forward_pre_hook(hook(("ffn", i), mask_neurons))
                for i, layer in enumerate(layers) if widths[i]]
    try:
        for batch in batches:
            size = len(batch.indices)
            masks.clear()
            masks.update({("heads", i): torch.ones(size, h, requires_grad=True) for i, h in enumerate(heads) if h})
            masks.update({("ffn", i): torch.ones(size, f, requires_grad=True) for i, f in enumerate(widths) if f})
            inputs = {k: torch.from_numpy(batch.feeds[k]) for k in source.input_names}
            outputs = module(**inputs)
            batch_labels = torch.from_numpy(labels[batch.indices]) if labels is not None else None
            loss = sensitivity_loss(source.task, outputs, inputs["attention_mask"], batch_labels, generator)
            keys = list(masks)
            grads = torch.autograd.grad(loss, [masks[k] for k in keys])
            for (kind, i), grad in zip(keys, grads):
                (head_fisher if kind == "heads" else neuron_fisher)[i] += grad.double().pow(2).sum(dim=0)
    finally:
        for handle in handles:
            handle.remove()
    return [f.numpy() for f in head_fisher], [f.numpy() for f in neuron_fisher]


class _Stop(Exception):
    """Raised by a hook once the tensors of interest are captured: the rest of the forward is not needed."""


def _capture(model: nn.Module, feeds: dict[str, torch.Tensor], layer: nn.Module, out_path: str | None, norm_path: str) -> dict:
    """Run `model` up to one sub-layer's LayerNorm: its input, and the output projection's input and output."""
    captured, handles = {}, []

    def at_norm(module, args):
        captured["norm_in"] = args[0]
        raise _Stop

    handles.append(surgery.get(layer, norm_path).register_forward_pre_hook(at_norm))
    if out_path is not None:
        handles.append(surgery.get(layer, out_path).register_forward_hook(
            lambda module, args, output: captured.update(units=args[0], out=output)))
    try:
        with torch.no_grad():
            model(**feeds)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


@torch.no_grad()
def fit_scales(student: nn.Module, teacher: nn.Module, batches: list[Batch], input_names: tuple[str, ...]) -> list[dict]:
    """Layer by layer, attention then FFN: least-squares scales of the kept units and the sub-layer's bias.

    The target of sub-layer l is the unpruned model's pre-LayerNorm sum x_t + f_t(x_t) minus the pruned
    model's own residual input x_s: the fit also corrects drift accumulated in earlier layers.
    """
    parts = surgery.parts_for(student)
    fits = []
    for i in range(len(surgery.encoder_layers(student))):
        for kind, norm_path, out_path, constant_path in (
            ("heads", parts.attn_norm, parts.attn_out, parts.attention), ("ffn", parts.ffn_norm, parts.ffn_out, parts.ffn),
        ):
            count = (surgery.head_counts if kind == "heads" else surgery.ffn_widths)(student)[i]
            layer = surgery.encoder_layers(student)[i]
            # The bias the sub-layer adds: its output Linear's, or the whole output of a constant sub-layer.
            bias = surgery.get(layer, out_path if count else constant_path).bias
            equations = _normal_equations(student, teacher, batches, input_names, i, kind, count, norm_path, out_path if count else None, bias)
            scales, shift = equations.solve()
            ones = torch.ones(count, dtype=torch.float64)
            fits.append({"layer": i, "part": kind, "units": count, "error_before": _relative(equations, ones),
                         "error_after": _relative(equations, scales, shift)})
            surgery.scale_units(student, i, scales.float() if kind == "heads" else None, scales.float() if kind == "ffn" else None)
            bias.add_(shift.to(bias.dtype))
    return fits


def _normal_equations(
    student: nn.Module, teacher: nn.Module, batches: list[Batch], input_names: tuple[str, ...], index: int, kind: str, count: int,
    norm_path: str, out_path: str | None, bias: torch.Tensor,
) -> NormalEquations:
    """Accumulate one sub-layer's least-squares sums over the calibration batches (real tokens only)."""
    size = surgery.head_dim(student)
    equations = NormalEquations.empty(count, bias.shape[0])
    weight = surgery.get(surgery.encoder_layers(student)[index], out_path).weight if out_path else None  # (hidden, units·width)
    weight_gram = weight.T @ weight if kind == "ffn" and weight is not None else None
    for batch in batches:
        feeds = {k: torch.from_numpy(batch.feeds[k]) for k in input_names}
        real = feeds["attention_mask"].bool()
        mine = _capture(student, feeds, surgery.encoder_layers(student)[index], out_path, norm_path)
        theirs = _capture(teacher, feeds, surgery.encoder_layers(teacher)[index], None, norm_path)
        residual = mine["norm_in"] - (mine["out"] if out_path else bias)  # x_s
        target = (theirs["norm_in"] - residual - bias)[real]  # (tokens, hidden)
        if not count:
            equations.add_target_only(target)
        elif kind == "heads":
            units = mine["units"][real].view(-1, count, size)  # (tokens, heads, head_dim)
            equations.add_heads(torch.einsum("tkd,hkd->tkh", units, weight.view(-1, count, size)), target)
        else:
            equations.add_neurons(mine["units"][real], weight, target, weight_gram)
    return equations


def _relative(equations: NormalEquations, scales: torch.Tensor, shift: torch.Tensor | None = None) -> float:
    return round(max(equations.error(scales, shift), 0.0) / max(equations.target_sq, 1e-30), 6)
