"""The prune stage's importance pass: Fisher information of head, neuron and layer masks on the calibration texts.

Multiplicative masks sit on every head's and neuron's output and a gate on every layer's residual branch
(x + g·(layer(x) − x)), all 1, one row per example, so one backward pass gives every example's own gradient
(ops.importance explains the loss). Per layer the pass keeps the Fisher blocks F = Σ_n g_n g_nᵀ of heads and
of neurons (rearrangement needs them), and the diagonal where blocks are not asked for. Memory depends on the
model, not on the number of texts: blocks are summed batch by batch.

Each text's share is capped (`clip`): its squared gradient norm counts at most the `clip` quantile of all texts'.
The per-text norms are heavy-tailed, and one text can outweigh all the others: in MiniLM fine-tuned on CLINC150,
"turn up your volume", labelled whisper_mode and memorised at p = 0.54, had 1.5 million times the median norm and
99.5% of the Fisher of 2,048 texts, so the plan served that text alone, and more calibration texts pruned worse.
The cap is exact in one pass: only the texts that can lie above the quantile keep their gradients until the end.
"""

from __future__ import annotations

import heapq
import math
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
    capped: int = 0
    """Calibration texts whose share was capped at the clip quantile."""

    @property
    def head_scores(self) -> list[np.ndarray]:
        return [block.diagonal().copy() for block in self.heads]

    @property
    def neuron_scores(self) -> list[np.ndarray]:
        return [block.diagonal().astype(np.float64) if block.ndim == 2 else block for block in self.neurons]


def fisher_information(
    source: Source, batches: list[Batch], labels: np.ndarray | None, seed: int, *, blocks: bool, clip: float | None
) -> Fisher:
    """Run the importance pass; `blocks` keeps the neurons' Fisher blocks (else their diagonal only); `clip` caps
    each text's squared gradient norm at that quantile of all texts' (None: no cap)."""
    model = source.model
    layers, heads, widths = surgery.encoder_layers(model), surgery.head_counts(model), surgery.ffn_widths(model)
    sums = _Sums(
        heads=[torch.zeros(h, h, dtype=torch.float64) for h in heads],
        neurons=[
            torch.zeros((f, f) if blocks else (f,), dtype=torch.float32 if blocks else torch.float64) for f in widths
        ],
        layers=torch.zeros(len(layers), dtype=torch.float64),
    )
    texts = sum(len(batch.indices) for batch in batches)
    largest = _Largest(math.ceil((1 - clip) * texts) + 1) if clip is not None else None
    norms: list[torch.Tensor] = []
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
            grads = dict(zip(keys, torch.autograd.grad(loss, [masks[k] for k in keys])))
            sums.add(grads)
            if largest is not None:
                norm = torch.stack([g.double().pow(2).reshape(size, -1).sum(dim=1) for g in grads.values()]).sum(0)
                norms.append(norm)
                largest.offer(norm, grads)
    finally:
        for handle in handles:
            handle.remove()
    capped = 0
    if largest is not None and clip is not None:
        cap = float(np.quantile(torch.cat(norms).numpy(), clip))
        for text_norm, text_grads in largest.items:
            if text_norm > cap:  # replace the text's g gᵀ by (cap / norm)·g gᵀ
                sums.add(text_grads, weight=cap / text_norm - 1)
                capped += 1
    return Fisher(
        [s.numpy() for s in sums.heads], [s.numpy() for s in sums.neurons], sums.layers.numpy(), capped=capped
    )


@dataclass(frozen=True)
class _Sums:
    """The running Fisher sums, added to in place, batch by batch."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]
    layers: torch.Tensor

    def add(self, grads: dict[tuple[str, int], torch.Tensor], weight: float = 1.0) -> None:
        """Add weight · Σ g gᵀ of a batch's per-text gradients, (texts, units) per mask (layer gates: (texts,))."""
        for (kind, i), grad in grads.items():
            if kind == "heads":
                self.heads[i] += weight * (grad.T @ grad).double()
            elif kind == "layer":
                self.layers[i] += weight * grad.double().pow(2).sum()
            elif self.neurons[i].ndim == 2:
                self.neurons[i] += weight * (grad.T @ grad)  # (neurons, neurons): memory does not grow with texts
            else:
                self.neurons[i] += weight * grad.double().pow(2).sum(dim=0)


class _Largest:
    """The `count` texts of largest squared gradient norm so far, each with its own gradients (one row each)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._heap: list[tuple[float, int, dict[tuple[str, int], torch.Tensor]]] = []
        self._offered = 0

    def offer(self, norms: torch.Tensor, grads: dict[tuple[str, int], torch.Tensor]) -> None:
        for row, norm in enumerate(norms.tolist()):
            self._offered += 1
            if len(self._heap) == self.count and norm <= self._heap[0][0]:
                continue
            kept = {key: grad[row : row + 1].clone() for key, grad in grads.items()}
            entry = (norm, self._offered, kept)  # the counter breaks ties, so dicts are never compared
            if len(self._heap) < self.count:
                heapq.heappush(self._heap, entry)
            else:
                heapq.heapreplace(self._heap, entry)

    @property
    def items(self) -> list[tuple[float, dict[tuple[str, int], torch.Tensor]]]:
        return [(norm, grads) for norm, _, grads in self._heap]


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
