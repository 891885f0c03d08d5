"""SmoothQuant-style per-channel migration of activation outliers into the weights (pure numpy)."""

from __future__ import annotations

import numpy as np


def smoothing_scales(activation_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), per input channel j.

    Dividing X by s and multiplying W's rows by s leaves X W unchanged but evens out the per-channel
    ranges of X (a few outlier channels otherwise set the per-tensor int8 scale). Alpha near 1 moves
    more of the range into the weights, which are quantized per output channel and tolerate it.
    """
    act = np.maximum(np.asarray(activation_absmax, dtype=np.float64), 1e-5)
    weight = np.maximum(np.asarray(weight_absmax, dtype=np.float64), 1e-5)
    return (act**alpha / weight ** (1.0 - alpha)).astype(np.float32)
