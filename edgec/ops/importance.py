"""Unit importance: Fisher information of head and neuron masks, estimated from per-example gradients.

A multiplicative mask m (1 = kept) sits on every head's and neuron's output, and a gate on every layer's
residual branch (its score as a whole unit). Removing unit i changes
the loss by about ½·F_ii with F = E[g gᵀ], g = ∂loss/∂m (Kwon et al. 2022). Gradients must be those of a
loss whose curvature is the model's output sensitivity: a distillation loss to the unpruned model is zero
and flat at m = 1, so its gradient says nothing. Instead:
- with labels: the task loss;
- classifiers without labels: cross-entropy to labels sampled from the model's own softmax (the true
  Fisher of the predictive distribution);
- embeddings: a random projection vᵀe with v ~ N(0, I), since E_v[(vᵀ ∂e/∂m)²] = ‖∂e/∂m‖².
Masks get one row per example, so one backward pass yields every example's own gradient.
"""

from __future__ import annotations

import torch


def mask_heads(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, heads·head_dim) attention context times a (batch, heads) mask."""
    batch, seq, width = x.shape
    heads = mask.shape[1]
    return (x.view(batch, seq, heads, width // heads) * mask[:, None, :, None].to(x.dtype)).view(batch, seq, width)


def mask_neurons(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, neurons) FFN activations times a (batch, neurons) mask."""
    return x * mask[:, None, :].to(x.dtype)


def gate_layer(inputs: torch.Tensor, output, gate: torch.Tensor):
    """A layer's output with its residual branch gated per example: x + g·(layer(x) − x); g = 0 skips the layer.

    inputs (batch, seq, hidden); `output` the layer's own (a tensor, or a tuple holding the hidden states first:
    the encoders here return (hidden,) when attentions are not asked for); gate (batch,).
    """
    hidden = output[0] if isinstance(output, tuple) else output
    gated = inputs + gate[:, None, None].to(hidden.dtype) * (hidden - inputs)
    return (gated, *output[1:]) if isinstance(output, tuple) else gated


def sensitivity_loss(
    task: str,
    outputs: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """A sum over examples whose per-example gradients estimate the Fisher information (see module doc)."""
    if task == "feature-extraction":
        embedding = outputs[0]  # (batch, hidden)
        projection = torch.randn(embedding.shape, generator=generator, dtype=embedding.dtype)
        return (embedding * projection).sum()
    if task == "sequence-classification":
        return _sampled_cross_entropy(outputs[0], labels, generator)
    real = attention_mask.bool()
    if task == "token-classification":
        return _sampled_cross_entropy(outputs[0][real], None, generator)
    # question answering: start and end are distributions over the real positions
    return sum(_sampled_cross_entropy(logits.masked_fill(~real, -1e4), None, generator) for logits in outputs)


def _sampled_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """(rows, classes) logits; labels drawn from the model's own softmax where none are given."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    if labels is None:
        labels = torch.multinomial(log_probs.detach().exp(), 1, generator=generator).squeeze(1)
    return -log_probs.gather(1, labels[:, None]).sum()
