"""Activation statistics from calibration data, accumulated batch by batch, and the ranges int8 takes from them:
minmax, percentile, entropy (KL). Pure numpy.

Memory does not grow with the calibration set: each activation keeps a histogram, per-channel maxima and a bounded
sample of rows, never every value (ONNX Runtime's own calibrators keep every activation: onnxruntime#10503).
"""

from __future__ import annotations

import numpy as np

_BINS = 2048
_ENTROPY_LEVELS = 128  # positive levels of a signed 8-bit grid


class RunningStats:
    """One activation's statistics over every batch added: min and max; max |x| per channel (SmoothQuant's
    statistic); histograms of the positive values and of the negative values' magnitudes over [0, edge] in _BINS
    bins; and a uniform sample of at most `keep` rows (the bottom `keep` of random keys), for error estimates.

    When a batch reaches beyond `edge`, the edge doubles (as often as needed) and neighbouring bins merge, so each
    bin's count stays exact for its (wider) interval.
    """

    def __init__(self, keep: int = 0, seed: int = 0):
        self.low, self.high, self.edge, self.rows_seen = np.inf, -np.inf, 0.0, 0
        self.positive, self.negative = np.zeros(_BINS, np.int64), np.zeros(_BINS, np.int64)
        self.channel_absmax: np.ndarray | None = None
        self.keep, self._rng = keep, np.random.default_rng(seed)
        self.rows: np.ndarray | None = None  # (<= keep, channels)
        self._keys = np.zeros(0)

    def add(self, rows: np.ndarray) -> None:
        """rows: (rows, channels), or a flat array of values (one channel)."""
        rows = np.asarray(rows, dtype=np.float32)
        rows = rows.reshape(-1, 1) if rows.ndim < 2 else rows.reshape(-1, rows.shape[-1])
        if rows.size == 0:
            return
        self.low, self.high = min(self.low, float(rows.min())), max(self.high, float(rows.max()))
        self._widen(max(-self.low, self.high))
        width = self.edge / _BINS
        flat = rows.ravel()
        for values, hist in ((flat[flat >= 0], self.positive), (-flat[flat < 0], self.negative)):
            # float64: a tiny edge's bin width underflows float32 (1e-45 / 2048), which would put values out of range
            bins = (
                np.clip(values.astype(np.float64) / width, 0, _BINS - 1).astype(np.int64)
                if width > 0
                else np.zeros(values.size, np.int64)
            )
            hist += np.bincount(bins, minlength=_BINS)
        peak = np.abs(rows).max(axis=0)
        self.channel_absmax = peak if self.channel_absmax is None else np.maximum(self.channel_absmax, peak)
        self.rows_seen += len(rows)
        if self.keep:
            keys = np.concatenate([self._keys, self._rng.random(len(rows))])
            pool = rows if self.rows is None else np.concatenate([self.rows, rows])
            kept = np.sort(np.argsort(keys, kind="stable")[: self.keep])
            self.rows, self._keys = pool[kept], keys[kept]

    def _widen(self, peak: float) -> None:
        if peak <= self.edge:
            return
        if self.edge == 0.0:  # every value so far was 0, which bin 0 holds at any edge
            self.edge = peak
            return
        factor = 1
        while self.edge * factor < peak:
            factor *= 2
        for hist in (self.positive, self.negative):
            merged = hist.reshape(-1, factor).sum(axis=1) if factor < _BINS else np.array([hist.sum()])
            hist[:] = 0
            hist[: len(merged)] = merged
        self.edge *= factor

    def range(self, method: str, percentile: float = 99.999) -> tuple[float, float]:
        """(low, high) covering the values by `method`; always includes 0 so zero stays exactly representable."""
        if self.rows_seen == 0:
            raise ValueError("no values were added")
        if method == "minmax":
            low, high = self.low, self.high
        elif method == "percentile":
            tail = (100.0 - percentile) / 100.0
            low, high = self._quantile(tail), self._quantile(1.0 - tail)
        elif method == "entropy":
            threshold = entropy_threshold(self.positive + self.negative, self.edge)
            low, high = max(self.low, -threshold), min(self.high, threshold)
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        return min(low, 0.0), max(high, 0.0)

    def _quantile(self, q: float) -> float:
        """The signed value at quantile q, to the bin edge away from zero (so a range never shrinks below it)."""
        width = self.edge / _BINS
        counts = np.concatenate([self.negative[::-1], self.positive])  # most negative first, then ascending
        edges = np.concatenate([-np.arange(_BINS, 0, -1) * width, np.arange(1, _BINS + 1) * width])
        cumulative = np.cumsum(counts)
        index = int(np.searchsorted(cumulative, q * (cumulative[-1] - 1) + 1))
        return float(np.clip(edges[min(index, 2 * _BINS - 1)], self.low, self.high))


def activation_range(values: np.ndarray, method: str, percentile: float = 99.999) -> tuple[float, float]:
    """(low, high) of a set of values by `method` (RunningStats over one batch)."""
    stats = RunningStats()
    stats.add(np.asarray(values, dtype=np.float32).ravel())
    return stats.range(method, percentile)


def entropy_threshold(hist: np.ndarray, edge: float, levels: int = _ENTROPY_LEVELS) -> float:
    """The clipping threshold whose 8-bit quantized histogram is closest in KL divergence to the original.

    `hist` counts |x| in equal bins over [0, edge]. It is cut at each candidate bin i; everything beyond is folded
    into bin i-1 (the clipped mass), the kept bins are merged into `levels` groups and spread back, and the
    candidate with the least KL(reference || quantized) wins.
    """
    if edge == 0.0 or hist.sum() == 0:
        return 0.0
    hist = hist.astype(np.float64)
    bins = int(np.flatnonzero(hist)[-1]) + 1  # bins past the largest value hold nothing (the edge only doubles)
    bins = max(bins, levels)
    best_kl, best_i = np.inf, bins
    for i in range(levels, bins + 1, 16):
        reference = hist[:i].copy()
        reference[-1] += hist[i:].sum()
        quantized = np.zeros(i)
        for group in np.array_split(np.arange(i), levels):
            nonzero = hist[group] > 0
            if nonzero.any():
                quantized[group[nonzero]] = hist[group].sum() / nonzero.sum()
        kl = _kl(reference, quantized)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(best_i * edge / len(hist))


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


def fake_quantize_weight(w: np.ndarray, per_channel: bool, reduce_range: bool = False) -> np.ndarray:
    """Symmetric signed weights, one scale per output column (axis 1 of a (in, out) matrix) or one overall; 8 bits
    (+-127), or 7 with reduce_range (+-64, as ONNX Runtime's quantizer writes them)."""
    levels = 64.0 if reduce_range else 127.0
    peak = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.maximum(peak, 1e-12) / levels
    return np.clip(np.round(w / scale), -levels, levels) * scale


def matmul_quantization_error(
    x: np.ndarray,
    w: np.ndarray,
    x_range: tuple[float, float],
    *,
    signed: bool,
    per_channel: bool,
    reduce_range: bool = False,
    outliers: np.ndarray | None = None,
) -> float:
    """Relative error ||xW - q(x)q(W)|| / ||xW|| of one MatMul quantized with the given activation range.

    x: (rows, in) calibration activations, w: (in, out) weights; `outliers`: input channels computed in float
    (ops.outliers), whose weight rows the int8 part leaves out. Ranks nodes for the float fallback.
    """
    exact = x @ w
    inliers, exact_part = w, 0.0
    if outliers is not None and len(outliers):
        inliers = w.copy()
        inliers[outliers] = 0.0
        exact_part = x[:, outliers] @ w[outliers]
    approx = (
        fake_quantize(x, *x_range, signed=signed) @ fake_quantize_weight(inliers, per_channel, reduce_range)
        + exact_part
    )
    return float(np.linalg.norm(exact - approx) / max(np.linalg.norm(exact), 1e-12))
