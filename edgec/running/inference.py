"""Running a model (PyTorch or ONNX Runtime) over a dataset in batches, outputs in dataset order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgec.data import Dataset, length_sorted_batches
from edgec.errors import InputError, first_line
from edgec.progress import track
from edgec.targets import SessionSettings

Feeds = dict[str, np.ndarray]
Forward = Callable[[Feeds], dict[str, np.ndarray]]
_ORT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


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


def collect_outputs(
    forward: Forward,
    batches: list[Batch],
    *,
    token_level: bool,
    description: str = "running the model",
) -> Outputs:
    """Run `forward` on every batch and put the rows back in dataset order (a progress bar says `description`).

    Token-level outputs, (batch, seq, ...), are padded with zeros to the longest example of the dataset.
    """
    count = sum(len(b.indices) for b in batches)
    longest = max(b.feeds["input_ids"].shape[1] for b in batches)
    mask = np.zeros((count, longest), dtype=np.int64)
    values: dict[str, np.ndarray] = {}
    for batch in track(batches, description):
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


def ort_session(
    model_path: str | Path,
    settings: SessionSettings,
    *,
    profile_prefix: str | None = None,
    optimized_model: str | Path | None = None,
):
    """An ONNX Runtime CPU session with the target's settings; `profile_prefix` turns ORT's profiler on.

    `optimized_model` writes the graph as ONNX Runtime runs it, after its own load-time optimizations (the nodes a
    profile's names refer to), with its weights in a `.data` file beside it so the graph loads without them.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _ORT_LEVELS[settings.graph_optimization_level]
    )
    options.execution_order = getattr(ort.ExecutionOrder, settings.execution_order.upper())
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    options.enable_mem_pattern = settings.mem_pattern
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", Path(optimized_model).name + ".data"
        )
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises a type per cause; every one means this file is unusable
        raise InputError(
            f"ONNX Runtime cannot load {Path(model_path).name} ({first_line(exc)}); the file is damaged or "
            "not a model ONNX Runtime runs: rebuild it"
        ) from None


def ort_forward(session, outputs: tuple[str, ...] | None = None) -> Forward:
    """A Forward over an ONNX Runtime session returning `outputs` (default: all); feeds only the inputs the graph
    declares.

    A graph with fixed input shapes (an accelerator-shaped mobile graph, (batch, seq) as ints) gets every batch
    padded to its sequence length and run in chunks of its batch size; outputs are cut back to the real rows
    (and, token-level, to the batch's own length).
    """
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs() if outputs is None or o.name in outputs]
    shape = session.get_inputs()[0].shape
    fixed = tuple(shape) if all(isinstance(d, int) and d > 0 for d in shape) else None

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        try:
            results = session.run(output_names, {k: feeds[k] for k in input_names if k in feeds})
        except Exception as exc:  # noqa: BLE001 - as in ort_session
            raise InputError(
                f"ONNX Runtime failed to run the model ({first_line(exc)}); the file is damaged: rebuild it"
            ) from None
        return {name: np.asarray(r, dtype=np.float32) for name, r in zip(output_names, results)}

    return (lambda feeds: fixed_shape_run(run, feeds, fixed)) if fixed else run


def fixed_shape_run(run: Forward, feeds: Feeds, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Run a fixed-(batch, seq) model on feeds of any shape: zero-padded (masked) up to seq, in chunks of batch."""
    batch, seq = shape
    rows, length = feeds["input_ids"].shape
    if length > seq:
        raise ValueError(f"inputs of {length} tokens do not fit the graph's fixed {seq}; truncate to {seq}")
    padded = {k: np.pad(v, [(0, (-rows) % batch), (0, seq - length)]) for k, v in feeds.items()}
    parts = [
        run({k: v[start : start + batch] for k, v in padded.items()})
        for start in range(0, len(padded["input_ids"]), batch)
    ]
    joined = {name: np.concatenate([part[name] for part in parts])[:rows] for name in parts[0]}
    return {name: value[:, :length] if value.ndim >= 3 else value for name, value in joined.items()}


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
