"""The prune stage's mask tuning: per-layer least squares over streamed layer inputs (Kwon et al. 2022, §4.3).

Layer by layer, attention then FFN, the kept units of each sub-layer are rescaled (TuningConfig.fit "scales") or
its output projection is refitted whole ("weights", ops.weight_least_squares) so that its residual sum (what the
following LayerNorm receives) matches the target model's, computed from the pruned model's *own* input: a fit
also corrects what earlier layers left. The target is the unpruned model, or (TuningConfig.target
"schedule") the model pruned to the square root of the kept share, a nearer point of Kwon's schedule.

The inputs of the current layer, of the pruned model and of the target, are kept for all texts and advanced one
layer at a time: the model is never re-run from the embeddings per layer, and memory holds one layer's inputs,
never every layer's. The arguments the encoder passes to each layer besides the hidden states (the attention
mask, MPNet's position bias) are recomputed per batch from the embeddings, which is cheap, instead of stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgec.compression import surgery
from edgec.ops.least_squares import NormalEquations, Solution
from edgec.ops.weight_least_squares import WeightEquations, WeightSolution
from edgec.progress import bar
from edgec.recipe import TuningConfig
from edgec.running.inference import Batch


class _Stop(Exception):
    """Raised by a hook once the tensors of interest are captured: the rest of the forward is not needed."""


@dataclass(frozen=True)
class _Call:
    """The arguments after the hidden states that the encoder passes to every layer (positional, keyword)."""

    args: tuple
    kwargs: dict


@dataclass(frozen=True)
class _SubLayer:
    kind: str
    """"heads" or "ffn"."""
    norm: str
    """Path of the LayerNorm whose input is the residual sum; "" where the sum is the layer's output (pre-LN FFN)."""
    out: str
    """Path of the output projection (its input columns are the units)."""
    constant: str
    """Path of the module that becomes a constant when no unit is left."""


@torch.no_grad()
def tune_masks(
    student: nn.Module,
    target: nn.Module,
    kept_layers: list[int],
    batches: list[Batch],
    input_names: tuple[str, ...],
    config: TuningConfig,
    *,
    cls_only: bool,
) -> list[dict]:
    """Rescale the student's kept units in place; one record per fitted sub-layer (errors before and after).

    `kept_layers[s]` is the target's index of the student's layer s (the student may have lost whole layers).
    `cls_only`: the student's last FFN is fitted on the first token alone (classifier heads read only it).
    """
    feeds = [{k: torch.from_numpy(b.feeds[k]) for k in input_names} for b in batches]
    target_in = [_layer_call(target, f)[0] for f in feeds]  # (batch, seq, hidden) per batch: the embeddings
    student_in = list(target_in)
    position = {index: s for s, index in enumerate(kept_layers)}
    fits: list[dict] = []
    with bar("mask tuning (layers)", kept_layers[-1] + 1) as advance:
        for index, target_layer in enumerate(surgery.encoder_layers(target)[: kept_layers[-1] + 1]):
            advance()
            if index not in position:  # the student skips this layer: its input passes on unchanged
                target_in = [
                    _run(target_layer, x, _layer_call(target, f)[1])["output"] for x, f in zip(target_in, feeds)
                ]
                continue
            layer = surgery.encoder_layers(student)[position[index]]
            last = index == kept_layers[-1]
            target_in, stopped = _tune_layer(
                student,
                layer,
                position[index],
                target,
                target_layer,
                index,
                student_in,
                target_in,
                feeds,
                config,
                cls_only and last,
                fits,
            )
            if stopped or last:
                break
            student_in = [_run(layer, x, _layer_call(target, f)[1])["output"] for x, f in zip(student_in, feeds)]
    return fits


def _tune_layer(
    student: nn.Module,
    layer: nn.Module,
    position: int,
    target: nn.Module,
    target_layer: nn.Module,
    index: int,
    student_in: list[torch.Tensor],
    target_in: list[torch.Tensor],
    feeds: list[dict],
    config: TuningConfig,
    cls_only: bool,
    fits: list[dict],
) -> tuple[list[torch.Tensor], bool]:
    """Fit the attention, then the FFN of one layer; returns the target's outputs and whether tuning stops here."""
    parts, next_target = surgery.parts_for(student), None
    for sub in (
        _SubLayer("heads", parts.attn_norm, parts.attn_out, parts.attention),
        _SubLayer("ffn", parts.ffn_norm, parts.ffn_out, parts.ffn),
    ):
        count = (surgery.head_counts if sub.kind == "heads" else surgery.ffn_widths)(student)[position]
        # The bias the sub-layer adds: its output Linear's, or a constant sub-layer's; zeros where it has none
        # (ModernBERT), which gains one only if a shift is fitted (surgery.output_bias).
        module = surgery.get(layer, sub.out if count else sub.constant)
        bias = module.bias if module.bias is not None else torch.zeros(module.out_features, dtype=module.weight.dtype)
        if not count and not config.fit_bias:  # nothing to fit
            continue
        equations, outputs = _equations(
            layer,
            target,
            target_layer,
            sub,
            count,
            bias,
            student_in,
            target_in,
            feeds,
            config,
            cls_only and sub.kind == "ffn",
            surgery.head_dim(student),
        )
        next_target = outputs or next_target
        solution, unchanged, fitted = _solve(equations, count, config)
        fits.append(
            {
                "layer": index,
                "part": sub.kind,
                "units": count,
                "applied": solution.ok,
                "error_before": _relative(equations, unchanged),
                "error_after": _relative(equations, fitted, solution.shift),
            }
        )
        if not solution.ok:
            if config.stop_on_failure:
                return target_in, True
            continue
        if isinstance(solution, WeightSolution):
            projection = surgery.get(layer, sub.out).weight
            projection.copy_(solution.weight.to(projection.dtype))
        else:
            scales = solution.scales.float()
            surgery.scale_units(
                student, position, scales if sub.kind == "heads" else None, scales if sub.kind == "ffn" else None
            )
        if solution.shift is not None:
            surgery.output_bias(layer, sub.out if count else sub.constant).add_(solution.shift.to(bias.dtype))
    if next_target is None:  # the FFN was not fitted: advance the target on its own
        next_target = [_run(target_layer, x, _layer_call(target, f)[1])["output"] for x, f in zip(target_in, feeds)]
    return next_target, False


def _solve(
    equations: NormalEquations | WeightEquations, count: int, config: TuningConfig
) -> tuple[Solution | WeightSolution, torch.Tensor, torch.Tensor]:
    """(the solution, what leaving the sub-layer as it is means, what the solution fits): unit scales or a weight."""
    if isinstance(equations, WeightEquations):
        solution = equations.solve(damping=config.weight_damping, fit_bias=config.fit_bias)
        return solution, equations.weight, solution.weight
    scaled = equations.solve(ridge=config.ridge, fit_bias=config.fit_bias)
    return scaled, torch.ones(count, dtype=torch.float64), scaled.scales


def _equations(
    layer: nn.Module,
    target: nn.Module,
    target_layer: nn.Module,
    sub: _SubLayer,
    count: int,
    bias: torch.Tensor,
    student_in: list[torch.Tensor],
    target_in: list[torch.Tensor],
    feeds: list[dict],
    config: TuningConfig,
    first_token: bool,
    head_dim: int,
) -> tuple[NormalEquations | WeightEquations, list[torch.Tensor] | None]:
    """One sub-layer's normal equations over all batches; for an FFN also the target layer's outputs (the next inputs)."""
    refit = config.fit == "weights" and count > 0  # with no unit left, only the bias can be fitted
    equations: NormalEquations | WeightEquations = (
        WeightEquations.empty(surgery.get(layer, sub.out).weight)
        if refit
        else NormalEquations.empty(count, bias.shape[0])
    )
    # Post-norm space needs the LayerNorm the sum feeds; a pre-LN FFN's sum feeds none (the residual stream): pre-norm.
    norm = surgery.get(layer, sub.norm) if config.space == "post-norm" and sub.norm else None
    weight = _weight(layer, sub, norm) if count and not refit else None
    outputs = [] if sub.kind == "ffn" else None
    for x_student, x_target, f in zip(student_in, target_in, feeds):
        call = _layer_call(target, f)[1]
        theirs = _run(target_layer, x_target, call, norm=sub.norm, stop=outputs is None)
        if outputs is not None:
            outputs.append(theirs["output"])
        mine = _run(layer, x_student, call, norm=sub.norm, out=sub.out if count else None, stop=True)
        tokens = f["attention_mask"].bool()
        if first_token:
            tokens = torch.zeros_like(tokens)
            tokens[:, 0] = True
        _add(equations, sub.kind, count, head_dim, mine, theirs["norm_in"], bias, tokens, norm, weight)
    return equations, outputs


def _weight(layer: nn.Module, sub: _SubLayer, norm: nn.LayerNorm | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output projection's weight (hidden, units·width) and, for an FFN, the Gram WᵀW its equations need.

    Post-norm FFN: u_tj = a_tj·w_j, so the map γ ⊙ (u − mean u) / σ_t puts γ ⊙ centring on w (here, once) and
    1/σ_t on a (per batch)."""
    weight = surgery.get(layer, sub.out).weight
    if sub.kind == "heads":
        return weight, None
    if norm is not None:
        weight = norm.weight[:, None] * (weight - weight.mean(dim=0))
    return weight, weight.T @ weight


def _add(
    equations: NormalEquations | WeightEquations,
    kind: str,
    count: int,
    head_dim: int,
    mine: dict,
    target_sum: torch.Tensor,
    bias: torch.Tensor,
    tokens: torch.Tensor,
    norm: nn.LayerNorm | None,
    weight: tuple[torch.Tensor, torch.Tensor | None] | None,
) -> None:
    """One batch's share of the normal equations, in the configured space (`norm` given: post-norm)."""
    residual = mine["norm_in"] - (mine["out"] if count else bias)  # the student's residual input x_s
    target = (target_sum - residual - bias)[tokens]  # (tokens, hidden)
    scale = _post_norm(target_sum[tokens], norm) if norm is not None else None
    if scale is not None:
        target = scale(target)
    if isinstance(equations, WeightEquations):  # pre-norm only (TuningConfig): what the projection reads and writes
        equations.add(mine["units"][tokens], target)
        return
    if not count:
        equations.add_target_only(target)
        return
    assert weight is not None  # scales of kept units: the projection's weight (and Gram) came with them
    matrix, gram = weight
    units = mine["units"][tokens]
    if kind == "heads":
        contributions = torch.einsum("tkd,hkd->tkh", units.view(-1, count, head_dim), matrix.view(-1, count, head_dim))
        equations.add_heads(scale(contributions) if scale is not None else contributions, target)
    else:
        equations.add_neurons(
            units / _sigma(target_sum[tokens], norm)[:, None] if norm is not None else units, matrix, target, gram
        )


def _sigma(norm_in: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """(tokens,) the standard deviation the LayerNorm divides each token by."""
    return (norm_in.var(dim=-1, unbiased=False) + norm.eps).sqrt()


def _post_norm(norm_in: torch.Tensor, norm: nn.LayerNorm):
    """v ↦ γ ⊙ (v − mean v) / σ_t: a change of the LayerNorm's input, as its output sees it (to first order)."""
    sigma = _sigma(norm_in, norm)

    def scale(v: torch.Tensor) -> torch.Tensor:  # (tokens, ..., hidden)
        return (v - v.mean(dim=-1, keepdim=True)) * norm.weight / sigma.view(-1, *[1] * (v.dim() - 1))

    return scale


def _layer_call(model: nn.Module, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, _Call]:
    """The first layer's input hidden states and the other arguments the encoder passes to every layer."""
    captured = {}

    def hook(module, args, kwargs):
        # Every supported encoder passes the hidden states as the first positional argument.
        captured.update(hidden=args[0], call=_Call(tuple(args[1:]), dict(kwargs)))
        raise _Stop

    handle = surgery.encoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(**feeds)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured["hidden"], captured["call"]


def _run(
    layer: nn.Module,
    hidden: torch.Tensor,
    call: _Call,
    *,
    norm: str | None = None,
    out: str | None = None,
    stop: bool = False,
) -> dict:
    """Run one layer: its output, or (`stop`) up to the LayerNorm at `norm`; the LayerNorm's input and the output
    projection's input and output (`out`) are captured on the way."""
    captured, handles = {}, []

    def at_sum(residual_sum):
        captured["norm_in"] = residual_sum
        if stop:
            raise _Stop

    if norm is not None:  # "" (pre-LN FFN): the sum is the layer's output
        handles.append(surgery.on_residual_sum(layer, norm, at_sum))
    if out is not None:
        handles.append(
            surgery.get(layer, out).register_forward_hook(
                lambda module, args, output: captured.update(units=args[0], out=output)
            )
        )
    try:
        output = layer(hidden, *call.args, **call.kwargs)
        captured["output"] = output[0] if isinstance(output, tuple) else output
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _relative(
    equations: NormalEquations | WeightEquations, fitted: torch.Tensor, shift: torch.Tensor | None = None
) -> float:
    """The error of unit scales or of a weight (`fitted`), relative to the target's squared norm."""
    return round(max(equations.error(fitted, shift), 0.0) / max(equations.target.squares, 1e-30), 6)
