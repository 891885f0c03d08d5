"""The distillation data, tokenized once, and the teacher's targets on it, computed once within a size bound.

Running the uncompressed teacher at every step costs more than the pruned student's forward and backward together
(mpnet at --prune 0.85 keeps 15% of the MACs), so distillation runs it once, in length-sorted inference batches,
and keeps what the losses need: the task outputs (fp32) and the hidden states of a few teacher layers (fp16, real
tokens only). Ragged rows are stored flat with offsets and padded per training batch.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from edgec.data import Dataset, length_sorted_batches
from edgec.parity.evalset import label_ids
from edgec.source import Pooling, task_outputs

# Outputs with one row per token are stored per token, the others per example.
_TOKEN_LEVEL = ("token-classification", "question-answering")
_HIDDEN_BYTES = 2  # float16
# Examples per step of the teacher's pass between checks of the time bound.
_CHUNK = 256


@dataclass(frozen=True)
class TaskSpec:
    """How to turn a model's forward pass into the task's outputs."""

    task: str
    pooling: Pooling
    input_names: tuple[str, ...]

    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor]]:
        """(task outputs as TaskModule returns them, hidden states (layers + 1) x (batch, seq, hidden))."""
        out = model(**{name: batch[name] for name in self.input_names}, output_hidden_states=True)
        return task_outputs(out, self.task, self.pooling, batch["attention_mask"]), out.hidden_states


@dataclass(frozen=True)
class Encoded:
    """Tokenized examples without padding: each input's tokens flat, example i at offsets[i]:offsets[i + 1]."""

    ids: dict[str, np.ndarray]
    offsets: np.ndarray
    labels: np.ndarray | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def inputs(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Examples `indices` padded to their longest (right padding), with the attention mask and any labels."""
        lengths = self.lengths[indices]
        batch = {
            name: _pad(
                [flat[self.offsets[i] : self.offsets[i + 1]] for i in indices],
                lengths,
                self.pad_id if name == "input_ids" else 0,
            )
            for name, flat in self.ids.items()
        }
        batch["attention_mask"] = torch.from_numpy((np.arange(lengths.max()) < lengths[:, None]).astype(np.int64))
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[indices])
        return batch

    def token_rows(self, indices: np.ndarray) -> np.ndarray:
        """Flat token positions of examples `indices`, in that order."""
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def subset(self, indices: np.ndarray) -> Encoded:
        """The examples `indices`, in that order."""
        flat = self.token_rows(indices)
        offsets = np.concatenate([[0], np.cumsum(self.lengths[indices])])
        labels = self.labels[indices] if self.labels is not None else None
        return Encoded({k: v[flat] for k, v in self.ids.items()}, offsets, labels, self.pad_id)


def encode(
    tokenizer, data: Dataset, task: str, input_names: tuple[str, ...], max_length: int, label2id: dict[str, int]
) -> Encoded:
    """Tokenize `data` once. A classifier reads text pairs and labels where the data has them; an embedding model
    reads every text (and pair side) on its own."""
    classifier = task == "sequence-classification"
    data = data if classifier else data.single_texts()
    pairs = [e.text_pair for e in data.examples] if classifier and data.has_pairs else None
    encoded = tokenizer(data.texts, pairs, truncation=True, max_length=max_length)
    names = [name for name in input_names if name != "attention_mask"]
    lengths = [len(row) for row in encoded["input_ids"]]
    ids = {
        name: np.fromiter((t for row in encoded[name] for t in row), dtype=np.int64, count=sum(lengths))
        for name in names
    }
    labels = label_ids(data, label2id, len(label2id)) if classifier and data.has_labels else None
    return Encoded(ids, np.concatenate([[0], np.cumsum(lengths)]), labels, tokenizer.pad_token_id or 0)


@dataclass(frozen=True)
class TeacherCache:
    """The teacher's targets for every example of `encoded`: what distillation fits instead of a live teacher."""

    encoded: Encoded
    outputs: tuple[np.ndarray, ...]
    """Task outputs: (examples, ...) per example, or (tokens, ...) flat per token for token-level tasks."""
    hidden: np.ndarray | None
    """(tokens, len(layers), hidden) float16: the teacher's hidden states at `layers`, flat per token."""
    layers: tuple[int, ...]
    token_level: bool
    given: int
    """Examples there were before the bounds; len(encoded) were kept."""
    seconds: float
    limited_by: str | None = None
    """Which bound left texts out: "memory" (cache_mb), "time" (the budget's cache_share) or None (every text)."""

    @property
    def nbytes(self) -> int:
        arrays = [*self.outputs, *self.encoded.ids.values()] + ([self.hidden] if self.hidden is not None else [])
        return sum(a.nbytes for a in arrays)

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Examples `indices` padded, with the teacher's targets: teacher_out_<k> and teacher_hidden
        (batch, seq, layers, hidden), zeros at padding."""
        batch = self.encoded.inputs(indices)
        lengths, offsets = self.encoded.lengths[indices], self.encoded.offsets
        rows = [slice(offsets[i], offsets[i + 1]) for i in indices]
        for k, values in enumerate(self.outputs):
            batch[f"teacher_out_{k}"] = (
                _pad([values[r] for r in rows], lengths, 0.0) if self.token_level else torch.from_numpy(values[indices])
            )
        if self.hidden is not None:
            batch["teacher_hidden"] = _pad([self.hidden[r] for r in rows], lengths, 0.0)
        return batch


def bounded(encoded: Encoded, bytes_per_token: int, bytes_per_example: int, budget_mb: float, seed: int) -> Encoded:
    """At most as many examples as fit `budget_mb` (a deterministic sample, in its drawn order), or all of them."""
    lengths = encoded.lengths
    order = np.random.default_rng(seed).permutation(len(encoded))
    cost = np.cumsum(lengths[order] * bytes_per_token + bytes_per_example)
    keep = int(np.searchsorted(cost, budget_mb * 2**20, side="right"))
    if keep >= len(encoded):
        return encoded
    if keep == 0:
        return encoded.subset(order[:1])
    return encoded.subset(np.sort(order[:keep]))


@torch.inference_mode()
def build_cache(
    teacher: torch.nn.Module,
    encoded: Encoded,
    spec: TaskSpec,
    layers: tuple[int, ...],
    *,
    budget_mb: float,
    precision: str,
    seed: int,
    seconds: float | None = None,
    batch_size: int = 64,
) -> TeacherCache:
    """Run `teacher` once over the examples that fit `budget_mb` and keep its targets; with `seconds`, stop after the
    first chunk of examples that ends past it and keep the examples done (a random sample, never the shortest).

    `precision` bf16 runs the teacher under bf16 autocast (chosen only where the hardware computes bf16 natively);
    fp32 otherwise. The hidden states are stored as float16 whatever the precision.
    """
    started = time.perf_counter()
    hidden_size, token_level = _width(teacher), spec.task in _TOKEN_LEVEL
    outputs_per_token = _output_width(teacher, spec.task) if token_level else 0
    per_token = len(layers) * hidden_size * _HIDDEN_BYTES + 8 * len(encoded.ids) + 4 * outputs_per_token
    per_example = 0 if token_level else 4 * _output_width(teacher, spec.task)
    kept = bounded(encoded, per_token, per_example, budget_mb, seed)
    tokens, examples = int(kept.offsets[-1]), len(kept)
    # Allocated for every kept example; pages the teacher never reaches are never touched.
    hidden = np.zeros((tokens, len(layers), hidden_size), dtype=np.float16) if layers else None
    outputs: list[np.ndarray] = []
    home = next(teacher.parameters()).device
    autocast = torch.autocast(home.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    # Random chunks, length-sorted inside: a time bound then keeps a random sample at little padding cost.
    order = np.random.default_rng(seed).permutation(examples)
    done = 0
    while done < examples and (seconds is None or done == 0 or time.perf_counter() - started < seconds):
        chunk = order[done : done + _CHUNK]
        for positions in length_sorted_batches(kept.lengths[chunk], batch_size):
            indices = chunk[positions]
            batch = {k: v.to(home) for k, v in kept.inputs(indices.tolist()).items()}
            with autocast:
                task_out, states = spec.forward(teacher, batch)
            real = batch["attention_mask"].bool().cpu()
            rows = kept.token_rows(indices)
            for k, value in enumerate(task_out):
                value = value.float().cpu()
                value = (value[real] if token_level else value).numpy()  # token level: (real tokens, ...)
                if len(outputs) <= k:
                    outputs.append(np.zeros((tokens if token_level else examples, *value.shape[1:]), dtype=np.float32))
                outputs[k][rows if token_level else indices] = value
            if hidden is not None:
                hidden[rows] = torch.stack([states[t] for t in layers], dim=2).cpu()[real].to(torch.float16).numpy()
        done += len(chunk)
    if done < examples:  # the time bound ended the pass: keep the examples it reached
        reached = np.sort(order[:done])
        rows = kept.token_rows(reached)
        outputs = [values[rows] if token_level else values[reached] for values in outputs]
        hidden = hidden[rows] if hidden is not None else None
        kept = kept.subset(reached)
    limit = "time" if done < examples else "memory" if len(kept) < len(encoded) else None
    seconds_taken = time.perf_counter() - started
    return TeacherCache(kept, tuple(outputs), hidden, tuple(layers), token_level, len(encoded), seconds_taken, limit)


def _pad(rows: list[np.ndarray], lengths: np.ndarray, value: float) -> torch.Tensor:
    """Ragged rows (length_i, ...) -> (rows, longest, ...), `value` after each row's end."""
    longest = int(lengths.max())
    out = np.full((len(rows), longest, *rows[0].shape[1:]), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _width(model: torch.nn.Module) -> int:
    return getattr(model.config, "hidden_size", None) or model.config.dim


def _output_width(model: torch.nn.Module, task: str) -> int:
    """Floats per example (or per token, for token-level tasks) of the task's outputs."""
    if task == "feature-extraction":
        return _width(model)
    if task == "question-answering":
        return 2
    return int(model.config.num_labels)


def cache_note(cache: TeacherCache) -> dict:
    """What the report says about the cache."""
    return {
        "examples": len(cache.encoded),
        "given": cache.given,
        "limited_by": cache.limited_by,
        "layers": list(cache.layers),
        "megabytes": round(cache.nbytes / 2**20, 1),
        "seconds": round(cache.seconds, 2),
        "tokens": int(cache.encoded.offsets[-1]),
        "mean_tokens": round(float(np.mean(cache.encoded.lengths)), 1) if len(cache.encoded) else 0.0,
    }
