"""Parity metrics: pure functions of reference and candidate outputs (numpy arrays)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two (n, d) arrays."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.maximum(norms, 1e-12)


def similarity_agreement(reference: np.ndarray, candidate: np.ndarray, anchors: int = 1024) -> np.ndarray:
    """Per row of two (n, d) and (n, d') embedding arrays, the Spearman correlation of its cosine similarities to the
    other rows (up to `anchors` of them, evenly spaced) under the reference and under the candidate.

    Width-free: it compares how each model ranks the other texts by similarity, which is what similarity search and
    STS use, so it holds where d != d' (hidden-size pruning). A text's similarity to itself, or to a copy of itself
    (the reference's cosine 1), is 1 under any model and is left out: STS pairs repeat sentences, and counting those
    lets a broken model agree. Embeddings unrelated to the reference's score near 0; a row whose similarities are all
    equal (a collapsed model, or fewer than three rows) gives NaN, which the gate fails.
    """
    if len(reference) < 3:  # one other text: its similarity cannot correlate with anything
        return np.full(len(reference), np.nan)
    columns = np.unique(np.linspace(0, len(reference) - 1, min(len(reference), anchors)).round().astype(int))

    def similarities(embeddings: np.ndarray) -> np.ndarray:
        unit = embeddings.astype(np.float64)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        return unit @ unit[columns].T  # (n, anchors)

    a, b = similarities(reference), similarities(candidate)
    same = a > 1 - 1e-6  # the text itself, or the same text again
    a[same], b[same] = np.nan, np.nan
    a, b = (rankdata(x, axis=1, nan_policy="omit") for x in (a, b))
    a, b = (np.nan_to_num(x - np.nanmean(x, axis=1, keepdims=True)) for x in (a, b))  # left-out entries: 0
    spread = np.sqrt(np.einsum("na,na->n", a, a) * np.einsum("na,na->n", b, b))
    return np.einsum("na,na->n", a, b) / np.where(spread > 1e-9, spread, np.nan)  # all ranks tied: undefined


def pair_spearman(embeddings: np.ndarray, scores: np.ndarray) -> float:
    """Spearman x100 between gold scores and the cosine of interleaved pairs (rows 2i and 2i+1)."""
    similarity = cosine_rows(embeddings[0::2], embeddings[1::2])
    if np.ptp(similarity) == 0 or np.ptp(scores) == 0:
        return float("nan")  # a rank correlation with a constant is undefined; the gate fails a NaN
    return float(spearmanr(similarity, scores).statistic * 100.0)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of positions where the arg-max class is the same; `mask` selects the positions that count."""
    same = reference.argmax(-1) == candidate.argmax(-1)
    return float(same[mask.astype(bool)].mean() if mask is not None else same.mean())


def span_agreement(ref_start, ref_end, start, end, mask: np.ndarray) -> float:
    """Question answering: share of examples whose best start and end token are both unchanged."""

    def best(logits):
        return np.where(mask.astype(bool), logits, -np.inf).argmax(-1)

    return float(((best(ref_start) == best(start)) & (best(ref_end) == best(end))).mean())


def mean_kl(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Mean KL(reference || candidate) of the softmax distributions over the last axis."""

    def log_softmax(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p_log, q_log = log_softmax(reference_logits), log_softmax(candidate_logits)
    return float((np.exp(p_log) * (p_log - q_log)).sum(-1).mean())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(-1) == labels).mean() * 100.0)


def abs_errors(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(max, mean) absolute difference; for token-level outputs only real tokens count."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    if mask is not None:
        diff = diff[mask.astype(bool)]
    return float(diff.max()), float(diff.mean())


def error_statistics(reference: np.ndarray, candidate: np.ndarray, quantile: float = 0.99) -> dict[str, float]:
    """Polygraphy-style statistics of one output's |candidate - reference|: max/mean/median absolute and relative
    error, and the `quantile` absolute error (keys max_abs, mean_abs, median_abs, max_rel, mean_rel, median_rel, q_abs).

    As in polygraphy, the relative error divides by |reference|, with exact zeros of the reference replaced by eps
    (1e-12) so that they give a large but finite relative error instead of inf or nan.
    """
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    absolute = np.abs(candidate - reference)
    relative = absolute / np.abs(np.where(reference == 0, 1e-12, reference))
    return {
        "max_abs": float(absolute.max()),
        "mean_abs": float(absolute.mean()),
        "median_abs": float(np.median(absolute)),
        "max_rel": float(relative.max()),
        "mean_rel": float(relative.mean()),
        "median_rel": float(np.median(relative)),
        "q_abs": float(np.quantile(absolute, quantile)),
    }


def non_finite_count(values: np.ndarray, mask: np.ndarray | None = None) -> int:
    """NaN and inf entries; for token-level outputs (examples, tokens, ...) only real tokens (mask 1) count."""
    if mask is not None and values.ndim >= 3:
        values = values[mask.astype(bool)]
    return int(values.size - np.isfinite(values).sum())
