"""TensorRT optimization profiles from the token lengths a model will see. Pure functions."""

from __future__ import annotations

import numpy as np

# Sequence lengths are rounded up to this multiple: tensor-core tiles are 8 wide in fp16 and int8.
_TILE = 8


def round_up(value: int, multiple: int = _TILE) -> int:
    return -(-value // multiple) * multiple


def length_histogram(lengths: np.ndarray, max_seq_len: int) -> dict[str, float | int]:
    """What the profile is derived from: count, percentiles, longest, and the share that fits max_seq_len."""
    lengths = np.asarray(lengths)
    return {
        "texts": int(lengths.size),
        "p50": int(np.percentile(lengths, 50)),
        "p90": int(np.percentile(lengths, 90)),
        "p99": int(np.percentile(lengths, 99)),
        "longest": int(lengths.max()),
        "share_within_max": round(float((lengths <= max_seq_len).mean()), 4),
    }


def optimization_profile(
    input_names: list[str], lengths: np.ndarray, *, max_batch: int, opt_batch: int, max_seq_len: int
) -> dict[str, dict[str, list[int]]]:
    """One profile over (batch, sequence) for every input: min 1 x 1, opt at the data's typical length, max at the limits.

    opt is where TensorRT times its kernels, so it sits at the median token count (rounded up to a tile),
    the length most requests have; min and max only bound the shapes the engine accepts. One profile
    covers every length up to max_seq_len, so the engine is never rebuilt for a new length.
    """
    opt_len = min(round_up(int(np.median(lengths))), max_seq_len)
    shapes = {"min": [1, 1], "opt": [opt_batch, opt_len], "max": [max_batch, max_seq_len]}
    return {name: {k: list(v) for k, v in shapes.items()} for name in input_names}


def trtexec_shapes(profile: dict[str, dict[str, list[int]]], which: str) -> str:
    """`input_ids:1x128,attention_mask:1x128` for --minShapes / --optShapes / --maxShapes."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims[which])}" for name, dims in profile.items())
