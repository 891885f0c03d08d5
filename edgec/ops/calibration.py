"""Activation ranges from calibration samples: minmax, percentile, entropy (KL). Pure numpy."""

from __future__ import annotations

import numpy as np

_ENTROPY_BINS = 2048
_ENTROPY_LEVELS = 128  # positive levels of a signed 8-bit grid


def activation_range(values: np.ndarray, method: str, percentile: float = 99.999) -> tuple[float, float]:
    """(low, high) covering the values by `method`; always includes 0 so zero stays exactly representable."""
    values = np.asarray(values, dtype=np.float32).ravel()
    if method == "minmax":
        low, high = float(values.min()), float(values.max())
    elif method == "percentile":
        tail = (100.0 - percentile) / 100.0
        low, high = (float(v) for v in np.quantile(values, [tail, 1.0 - tail]))
    elif method == "entropy":
        threshold = entropy_threshold(np.abs(values))
        low, high = max(float(values.min()), -threshold), min(float(values.max()), threshold)
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return min(low, 0.0), max(high, 0.0)


def entropy_threshold(magnitudes: np.ndarray, bins: int = _ENTROPY_BINS, levels: int = _ENTROPY_LEVELS) -> float:
    """The clipping threshold whose 8-bit quantized histogram is closest in KL divergence to the original.

    The histogram of |x| is cut at each candidate bin i; everything beyond is folded into bin i-1 (the
    clipped mass), the kept bins are merged into `levels` groups and spread back, and the candidate with
    the least KL(reference || quantized) wins.
    """
    top = float(magnitudes.max())
    if top == 0.0:
        return 0.0
    hist, edges = np.histogram(magnitudes, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best_kl, best_i = np.inf, bins
    for i in range(levels, bins + 1, 16):
        reference = hist[:i].copy()
        reference[-1] += hist[i:].sum()
        groups = np.array_split(np.arange(i), levels)
        quantized = np.zeros(i)
        for group in groups:
            nonzero = hist[group] > 0
            if nonzero.any():
                quantized[group[nonzero]] = hist[group].sum() / nonzero.sum()
        kl = _kl(reference, quantized)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def _kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    # Empty quantized bins where the reference has mass (typically the folded outlier bin) get a small
    # share instead of making the divergence infinite, as ONNX Runtime's entropy calibrator smooths too.
    p, q = p / p.sum(), q / max(q.sum(), 1e-12)
    q = np.where((q == 0) & (p > 0), eps, q)
    q = q / q.sum()
    support = p > 0
    return float((p[support] * np.log(p[support] / q[support])).sum())


def fake_quantize(x: np.ndarray, low: float, high: float, signed: bool) -> np.ndarray:
    """Quantize to 8 bits over [low, high] (asymmetric, zero exact) and back to float."""
    qmin, qmax = (-128, 127) if signed else (0, 255)
    scale = max(high - low, 1e-12) / (qmax - qmin)
    zero_point = np.clip(np.round(qmin - low / scale), qmin, qmax)
    return (np.clip(np.round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale


def fake_quantize_weight(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """Symmetric signed 8-bit weights, one scale per output column (axis 1 of a (in, out) matrix) or one overall."""
    peak = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.maximum(peak, 1e-12) / 127.0
    return np.clip(np.round(w / scale), -127, 127) * scale


def matmul_quantization_error(
    x: np.ndarray, w: np.ndarray, x_range: tuple[float, float], *, signed: bool, per_channel: bool
) -> float:
    """Relative error ||xW - q(x)q(W)|| / ||xW|| of one MatMul quantized with the given activation range.

    x: (rows, in) calibration activations, w: (in, out) weights. Ranks nodes for the float fallback.
    """
    exact = x @ w
    approx = fake_quantize(x, *x_range, signed=signed) @ fake_quantize_weight(w, per_channel)
    return float(np.linalg.norm(exact - approx) / max(np.linalg.norm(exact), 1e-12))
