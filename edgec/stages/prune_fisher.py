"""The prune stage's importance pass: Fisher information of head, neuron and layer masks on the calibration texts.

Multiplicative masks sit on every head's and neuron's output and a gate on every layer's residual branch
(x + g·(layer(x) − x)), all 1, one row per example, so one backward pass gives every example's own gradient
(ops.importance explains the loss). Per layer the pass keeps the Fisher blocks F = Σ_n g_n g_nᵀ of heads and
of neurons (rearrangement needs them), and the diagonal where blocks are not asked for. Memory depends on the
model, not on the number of texts: blocks are summed batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgec.compression import surgery
from edgec.ops.importance import gate_layer, mask_heads, mask_neurons, sensitivity_loss
from edgec.progress import track
from edgec.running.inference import Batch
from edgec.source import Source


@dataclass(frozen=True)
class Fisher:
    """Per layer: Σ over examples of g gᵀ for the head masks and for the neuron masks, and Σ g² of the layer gate."""

    heads: list[np.ndarray]
    """(heads, heads) per layer, float64."""
    neurons: list[np.ndarray]
    """(neurons, neurons) per layer (float32), or the (neurons,) diagonal where blocks were not collected."""
    layers: np.ndarray
    """(layers,) Fisher of each layer's gate: its score as a unit."""

    @property
    def head_scores(self) -> list[np.ndarray]:
        return [block.diagonal().copy() for block in self.heads]

    @property
    def neuron_scores(self) -> list[np.ndarray]:
        return [block.diagonal().astype(np.float64) if block.ndim == 2 else block for block in self.neurons]


def fisher_information(
    source: Source, batches: list[Batch], labels: np.ndarray | None, seed: int, *, blocks: bool
) -> Fisher:
    """Run the importance pass; `blocks` keeps the neurons' Fisher blocks (else their diagonal only)."""
    model = source.model
    layers, heads, widths = surgery.encoder_layers(model), surgery.head_counts(model), surgery.ffn_widths(model)
    head_sums = [torch.zeros(h, h, dtype=torch.float64) for h in heads]
    neuron_sums = [
        torch.zeros((f, f) if blocks else (f,), dtype=torch.float32 if blocks else torch.float64) for f in widths
    ]
    gate_sums = torch.zeros(len(layers), dtype=torch.float64)
    module, generator = source.reference_module(), torch.Generator().manual_seed(seed)
    masks: dict[tuple[str, int], torch.Tensor] = {}
    handles = _mask_hooks(model, masks)
    try:
        for batch in track(batches, "importance (Fisher)"):
            size = len(batch.indices)
            masks.clear()
            masks.update({("heads", i): torch.ones(size, h, requires_grad=True) for i, h in enumerate(heads) if h})
            masks.update({("ffn", i): torch.ones(size, f, requires_grad=True) for i, f in enumerate(widths) if f})
            masks.update({("layer", i): torch.ones(size, requires_grad=True) for i in range(len(layers))})
            inputs = {k: torch.from_numpy(batch.feeds[k]) for k in source.input_names}
            batch_labels = torch.from_numpy(labels[batch.indices]) if labels is not None else None
            loss = sensitivity_loss(source.task, module(**inputs), inputs["attention_mask"], batch_labels, generator)
            keys = list(masks)
            for (kind, i), grad in zip(keys, torch.autograd.grad(loss, [masks[k] for k in keys])):
                if kind == "heads":
                    head_sums[i] += (grad.T @ grad).double()
                elif kind == "layer":
                    gate_sums[i] += grad.double().pow(2).sum()
                elif blocks:
                    neuron_sums[i] += (
                        grad.T @ grad
                    )  # (neurons, neurons): summed here, so memory does not grow with texts
                else:
                    neuron_sums[i] += grad.double().pow(2).sum(dim=0)
    finally:
        for handle in handles:
            handle.remove()
    return Fisher([s.numpy() for s in head_sums], [s.numpy() for s in neuron_sums], gate_sums.numpy())


def _mask_hooks(model: torch.nn.Module, masks: dict[tuple[str, int], torch.Tensor]) -> list:
    """Hooks that multiply head and neuron outputs by their masks and gate each layer's residual branch."""
    parts, handles = surgery.parts_for(model), []
    heads, widths = surgery.head_counts(model), surgery.ffn_widths(model)

    def unit_hook(key, apply):
        return lambda module, args: (apply(args[0], masks[key]), *args[1:])

    def gate_hook(index):
        return lambda module, args, kwargs, output: gate_layer(
            args[0] if args else next(iter(kwargs.values())), output, masks[("layer", index)]
        )

    for i, layer in enumerate(surgery.encoder_layers(model)):
        if heads[i]:
            handles.append(
                surgery.get(layer, parts.attn_out).register_forward_pre_hook(unit_hook(("heads", i), mask_heads))
            )
        if widths[i]:
            handles.append(
                surgery.get(layer, parts.ffn_out).register_forward_pre_hook(unit_hook(("ffn", i), mask_neurons))
            )
        handles.append(layer.register_forward_hook(gate_hook(i), with_kwargs=True))
    return handles
