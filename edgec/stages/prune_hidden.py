"""Hidden-size pruning in the prune stage: the width to keep, the heads it can hold, and the channels that stay.

Channels are scored from activations on the calibration texts, as Minitron does (Muralidharan et al. 2024): for
each stream LayerNorm (and ELECTRA's embedding projection), the mean over real tokens of the squared output,
summed over them. The width comes from PruneConfig.hidden_size or, unset, ops.width.default_width; the heads and
neurons then fill the MAC budget at that width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgec.compression import hidden_surgery, surgery
from edgec.ops import width as widths
from edgec.recipe import PruneConfig
from edgec.running.inference import Batch


@torch.no_grad()
def channel_scores(model: nn.Module, batches: list[Batch], input_names: tuple[str, ...]) -> np.ndarray:
    """(hidden,) activation energy of each stream channel over the real tokens of `batches`."""
    total, tokens = torch.zeros(surgery.hidden_size(model), dtype=torch.float64), 0
    real: dict[str, torch.Tensor] = {}

    def record(module, args, output):
        values = output[real["mask"]].double()  # (real tokens, hidden)
        total.add_(values.pow(2).sum(0))

    sites = [*hidden_surgery.stream_norms(model)]
    sites += [w for w in hidden_surgery.stream_writers(model) if w not in sites]
    handles = [site.register_forward_hook(record) for site in sites]
    try:
        for batch in batches:
            feeds = {k: torch.from_numpy(batch.feeds[k]) for k in input_names}
            real["mask"] = feeds["attention_mask"].bool()
            tokens += int(real["mask"].sum())
            model(**feeds)
    finally:
        for handle in handles:
            handle.remove()
    return (total / max(tokens, 1)).numpy()


def planned_width(model: nn.Module, config: PruneConfig, kept_share: float) -> int:
    """The hidden size to keep: the full width unless `hidden` is among the units."""
    hidden, size = surgery.hidden_size(model), surgery.head_dim(model)
    if "hidden" not in config.units:
        return hidden
    hidden_surgery.check_prunable(model)
    width = config.hidden_size or widths.default_width(hidden, size, kept_share)
    widths.check_width(width, hidden, size)
    return width


def allowed_heads(model: nn.Module, head_scores: list[np.ndarray], width: int) -> list[np.ndarray]:
    """Indices of the heads each layer may keep at `width` (transformers' layout holds width / head size heads)."""
    capacity = width // surgery.head_dim(model)
    columns = surgery.bias_columns(model) if model.config.model_type == "mpnet" else None
    return widths.allowed_heads(head_scores, capacity, columns)


def keep_top_channels(
    student: nn.Module, teacher: nn.Module, batches: list[Batch], input_names: tuple[str, ...], width: int
) -> list[int]:
    """Remove all but the `width` channels of most activation energy in `teacher` (the model pruning started
    from, whose channels the student shares); returns the kept ones."""
    keep = widths.top_channels(channel_scores(teacher, batches, input_names), width)
    hidden_surgery.keep_channels(student, keep)
    return keep
