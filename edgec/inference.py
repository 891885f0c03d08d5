"""Running a model (PyTorch or ONNX Runtime) over a dataset in batches, outputs in dataset order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgec.data import Dataset, length_sorted_batches
from edgec.errors import InputError, first_line
from edgec.targets import SessionSettings

Feeds = dict[str, np.ndarray]
Forward = Callable[[Feeds], dict[str, np.ndarray]]
_ORT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class Batch:
    """Tokenized inputs for some examples of a dataset, padded to their longest."""

    indices: np.ndarray
    feeds: Feeds


@dataclass(frozen=True)
class Outputs:
    """Named outputs, one row per example; token-level outputs padded to the longest example, with `mask`."""

    values: dict[str, np.ndarray]
    mask: np.ndarray  # (examples, max_tokens), 1 for real tokens


def encode_batches(tokenizer, dataset: Dataset, *, max_length: int, batch_size: int = 32) -> list[Batch]:
    """Tokenize in batches of similar length, each padded to its own longest (not to max_length)."""
    texts, pairs = dataset.texts, [e.text_pair for e in dataset.examples] if dataset.has_pairs else None
    lengths = [len(t) + (len(p) if pairs else 0) for t, p in zip(texts, pairs or texts)]
    batches = []
    for indices in length_sorted_batches(lengths, batch_size):
        encoded = tokenizer(
            [texts[i] for i in indices],
            [pairs[i] for i in indices] if pairs else None,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        batches.append(Batch(indices, {k: v.astype(np.int64) for k, v in encoded.items()}))
    return batches


def collect_outputs(forward: Forward, batches: list[Batch], *, token_level: bool) -> Outputs:
    """Run `forward` on every batch and put the rows back in dataset order.

    Token-level outputs, (batch, seq, ...), are padded with zeros to the longest example of the dataset.
    """
    count = sum(len(b.indices) for b in batches)
    longest = max(b.feeds["input_ids"].shape[1] for b in batches)
    mask = np.zeros((count, longest), dtype=np.int64)
    values: dict[str, np.ndarray] = {}
    for batch in batches:
        seq = batch.feeds["input_ids"].shape[1]
        mask[batch.indices, :seq] = batch.feeds["attention_mask"]
        for name, value in forward(batch.feeds).items():
            if name not in values:
                shape = (count, longest, *value.shape[2:]) if token_level else (count, *value.shape[1:])
                values[name] = np.zeros(shape, dtype=np.float32)
            if token_level:
                values[name][batch.indices, :seq] = value
            else:
                values[name][batch.indices] = value
    return Outputs(values, mask)


def torch_forward(module: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> Forward:
    """A Forward over a PyTorch module returning the artifact's named outputs, in fp32."""

    def forward(feeds: Feeds) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = module(**{k: torch.from_numpy(feeds[k]) for k in input_names})
        return {name: out.float().numpy() for name, out in zip(output_names, outputs)}

    return forward


def ort_session(model_path: str | Path, settings: SessionSettings):
    """An ONNX Runtime CPU session with the target's settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[settings.graph_optimization_level])
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises a type per cause; every one means this file is unusable
        raise InputError(f"ONNX Runtime cannot load {Path(model_path).name} ({first_line(exc)}); the file is damaged or "
                         "not a model ONNX Runtime runs: rebuild it") from None


def ort_forward(session) -> Forward:
    """A Forward over an ONNX Runtime session; feeds it only the inputs the graph declares."""
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]

    def forward(feeds: Feeds) -> dict[str, np.ndarray]:
        try:
            results = session.run(output_names, {k: feeds[k] for k in input_names if k in feeds})
        except Exception as exc:  # noqa: BLE001 - as in ort_session
            raise InputError(f"ONNX Runtime failed to run the model ({first_line(exc)}); the file is damaged: rebuild it") from None
        return {name: np.asarray(r, dtype=np.float32) for name, r in zip(output_names, results)}

    return forward


def replay_forward(batches: list[Batch], values: dict[str, np.ndarray]) -> Forward:
    """A Forward that hands back outputs computed elsewhere (another process or machine), batch by batch.

    `values` holds every batch's rows in batch order, token-level outputs zero-padded to the longest batch; use it
    with collect_outputs over the same `batches`, which calls the Forward once per batch in that order.
    """
    bounds = np.cumsum([0, *(len(b.indices) for b in batches)])
    calls = iter(range(len(batches)))

    def forward(feeds: Feeds) -> dict[str, np.ndarray]:
        index = next(calls)
        seq = feeds["input_ids"].shape[1]
        rows = slice(bounds[index], bounds[index + 1])
        return {name: value[rows, :seq] if value.ndim >= 3 else value[rows] for name, value in values.items()}

    return forward
