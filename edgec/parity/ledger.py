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
    mask = outputs.mask if task in TOKEN_LEVEL_TASKS else None
    non_finite = {name: metrics.non_finite_count(values, mask) for name, values in outputs.values.items()}
    result = compare(task, evaluation.reference, outputs)
    result |= task_metric(task, outputs, evaluation.dataset, evaluation.labels)
    result |= output_statistics(evaluation.reference, outputs) if statistics else {}
    result |= {f"{name}.non_finite": float(count) for name, count in non_finite.items() if count}
    return ParityRow(
        stage, model, result, failures(result, thresholds, evaluation.reference_metric, non_finite), simulated=simulated
    )


def first_loss(ledger: tuple[ParityRow, ...]) -> ParityRow | None:
    """The earliest row that failed the thresholds: where accuracy was lost."""
    return next((row for row in ledger if not row.passed), None)


def parity_score(metrics: dict[str, float]) -> float:
    """One number to maximize: the task metric where the data has one, else closeness to the reference."""
    for name in ("spearman", "accuracy", "cosine_mean", "agreement"):
        if name in metrics:
            return metrics[name]
    return -metrics["mean_abs_error"]
