"""Ledger rows: one model's outputs on the eval set against the reference, with the gate's verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.parity import metrics
from edgec.parity.evalset import EvalSet, task_metric
from edgec.parity.gate import failures
from edgec.recipe import ParityThresholds
from edgec.running.inference import Outputs
from edgec.source import TOKEN_LEVEL_TASKS


@dataclass(frozen=True)
class ParityRow:
    """One stage's outputs compared with the fp32 reference on the eval set."""

    stage: str
    model: str
    metrics: dict[str, float]
    failures: tuple[str, ...] = ()
    seconds: float = 0.0
    """Wall time of the stage itself (not of this measurement)."""
    simulated: bool = False
    """True where the artifact's own runtime was not available and ONNX Runtime CPU stood in."""
    comparison: str | None = None
    """None: the outputs were compared with the reference's value by value (cosine, agreement, absolute error); else
    what was compared instead, and why (compare_width_free)."""

    @property
    def passed(self) -> bool:
        return not self.failures


def compare(task: str, reference: Outputs, candidate: Outputs) -> dict[str, float]:
    """Agreement metrics between two runs on the same data."""
    ref, got = reference.values, candidate.values
    token_mask = reference.mask if task in TOKEN_LEVEL_TASKS else None
    errors = [metrics.abs_errors(ref[name], got[name], token_mask) for name in ref]
    result = {"max_abs_error": max(e[0] for e in errors), "mean_abs_error": float(np.mean([e[1] for e in errors]))}
    if task == "feature-extraction":
        cosine = metrics.cosine_rows(ref["sentence_embedding"], got["sentence_embedding"])
        result |= {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min())}
    elif task == "sequence-classification":
        result |= {
            "agreement": metrics.top1_agreement(ref["logits"], got["logits"]),
            "kl": metrics.mean_kl(ref["logits"], got["logits"]),
        }
    elif task == "token-classification":
        result |= {"agreement": metrics.top1_agreement(ref["logits"], got["logits"], reference.mask)}
    else:
        result |= {
            "agreement": metrics.span_agreement(
                ref["start_logits"], ref["end_logits"], got["start_logits"], got["end_logits"], reference.mask
            )
        }
    return result


def compare_width_free(reference: Outputs, candidate: Outputs) -> tuple[dict[str, float], str]:
    """Agreement of a narrower embedding with the reference's (hidden-size pruning), and what the row says about it.

    Per-example cosine and absolute error need the same coordinates; a narrower model has others. What users take
    from an embedding model is its similarities, so each text's cosine similarities to the other texts are
    correlated with the reference's (metrics.similarity_agreement), gated by min_cosine; the task metric (Spearman
    of pair similarities) is width-free and gated by max_drop as for any row.
    """
    ref, got = reference.values["sentence_embedding"], candidate.values["sentence_embedding"]
    agreement = metrics.similarity_agreement(ref, got)
    why = (
        f"width-free: embeddings {got.shape[1]} wide against the reference's {ref.shape[1]} (hidden-size pruning), "
        "so per-example cosine and absolute error are undefined; each text's similarities to the others are "
        "correlated with the reference's instead (similarity_corr)"
    )
    return {"similarity_corr_mean": float(agreement.mean()), "similarity_corr_min": float(agreement.min())}, why


def shape_mismatch(task: str, evaluation: EvalSet, candidate: Outputs) -> tuple[str | None, bool]:
    """(the failure a candidate's output shapes earn, whether its embedding is compared width-free).

    Only an embedding narrower than the reference's after hidden-size pruning is expected; any other difference
    means the wrong model or the wrong reference, and fails the row rather than comparing unlike arrays.
    """
    for name, ref in evaluation.reference.values.items():
        got = candidate.values[name]
        if got.shape == ref.shape:
            continue
        narrower = got.ndim == ref.ndim == 2 and got.shape[0] == ref.shape[0] and 0 < got.shape[1] < ref.shape[1]
        if task == "feature-extraction" and narrower and evaluation.hidden_pruned:
            return None, True
        return (
            f"output {name} is {got.shape} where the reference's is {ref.shape}; only hidden-size pruning "
            "(--prune-units ...,hidden) narrows an embedding: check that the model and its reference match",
            False,
        )
    return None, False


def output_statistics(reference: Outputs, candidate: Outputs) -> dict[str, float]:
    """Polygraphy-style error statistics per output (`name.max_abs`, ...), over real tokens for token-level outputs."""
    result: dict[str, float] = {}
    for name, ref in reference.values.items():
        got = candidate.values[name]
        if ref.ndim >= 3:  # (examples, tokens, ...): padding positions are not outputs
            real = reference.mask.astype(bool)
            ref, got = ref[real], got[real]
        result |= {f"{name}.{k}": v for k, v in metrics.error_statistics(ref, got).items()}
    return result


def parity_row(
    stage: str,
    model: str,
    task: str,
    evaluation: EvalSet,
    outputs: Outputs,
    thresholds: ParityThresholds,
    *,
    simulated: bool = False,
    statistics: bool = False,
) -> ParityRow:
    """One ledger row from a model's outputs on the eval set: closeness to the reference, task metric, failures."""
    missing = sorted(set(evaluation.reference.values) - set(outputs.values))
    if missing:
        found = ", ".join(sorted(outputs.values)) or "none"
        return ParityRow(
            stage, model, {}, (f"the model lacks output(s) {', '.join(missing)} (it has {found})",), simulated=simulated
        )
    mismatch, width_free = shape_mismatch(task, evaluation, outputs)
    if mismatch:
        return ParityRow(stage, model, {}, (mismatch,), simulated=simulated)
    mask = outputs.mask if task in TOKEN_LEVEL_TASKS else None
    non_finite = {name: metrics.non_finite_count(values, mask) for name, values in outputs.values.items()}
    if width_free:
        result, comparison = compare_width_free(evaluation.reference, outputs)
    else:
        result, comparison = compare(task, evaluation.reference, outputs), None
    result |= task_metric(task, outputs, evaluation.dataset, evaluation.labels)
    result |= output_statistics(evaluation.reference, outputs) if statistics and not width_free else {}
    result |= {f"{name}.non_finite": float(count) for name, count in non_finite.items() if count}
    verdict = failures(result, thresholds, evaluation.reference_metric, non_finite)
    return ParityRow(stage, model, result, verdict, simulated=simulated, comparison=comparison)


def first_loss(ledger: tuple[ParityRow, ...]) -> ParityRow | None:
    """The earliest row that failed the thresholds: where accuracy was lost."""
    return next((row for row in ledger if not row.passed), None)


def parity_score(metrics: dict[str, float]) -> float:
    """One number to maximize: the task metric where the data has one, else closeness to the reference."""
    for name in ("spearman", "accuracy", "cosine_mean", "similarity_corr_mean", "agreement"):
        if name in metrics:
            return metrics[name]
    return -metrics["mean_abs_error"]
