"""Scoring pruned models for the prune-quality benchmark: the task metric on validation and on the reported split,
and how far the pruned encoder's output moved from the unpruned one's (the error the layer fits chase).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import prune_data
import torch

from edgec.data import Dataset
from edgec.parity.evalset import EvalSet, reference_outputs
from edgec.parity.ledger import parity_score
from edgec.parity.runtime import measure_module
from edgec.running.inference import encode_batches
from edgec.source import Source
from edgec.stages.prune import PruneResult, calibration_batches, prune_in_steps
from edgec.stages.prune_fisher import Fisher, fisher_information
from edgec.sweep import MEASURE_ONLY

MAX_LENGTH = 128
ROLES = ("validation", "report")


@dataclass
class Scorer:
    """The unpruned model's outputs on the validation and reported splits, computed once per case."""

    source: Source
    validation: EvalSet
    report: EvalSet
    hidden_batches: list
    reference_hidden: list[torch.Tensor]

    @classmethod
    def of(cls, source: Source, data: dict[str, Dataset]) -> Scorer:
        validation, report = (reference_outputs(source, data[role], MAX_LENGTH) for role in ("validation", "report"))
        texts = data["validation"].single_texts() if source.task == "feature-extraction" else data["validation"]
        batches = encode_batches(source.tokenizer, texts.sample(512, 0), max_length=MAX_LENGTH)
        return cls(source, validation, report, batches, [_last_hidden(source, source.model, b) for b in batches])

    def unpruned(self) -> dict:
        return {
            "validation": parity_score(self.validation.reference_metric),
            "report": parity_score(self.report.reference_metric),
        }

    def score(self, model: torch.nn.Module) -> dict:
        """Task metric on both splits, and the relative squared error of the last hidden states the task reads
        (classifiers: the first token; embeddings: every real token), on 512 validation texts."""
        pruned = dataclasses.replace(self.source, model=model)
        scores = split_scores(
            {role: measure_module(pruned, role, getattr(self, role), MEASURE_ONLY).metrics for role in ROLES},
            len(self.report.dataset.examples),
        )
        error = sum(
            float(((_last_hidden(self.source, model, b) - ref) ** 2).sum())
            for b, ref in zip(self.hidden_batches, self.reference_hidden)
        )
        scores["output_error"] = round(error / sum(float((ref**2).sum()) for ref in self.reference_hidden), 5)
        return scores


def split_scores(metrics: dict[str, dict[str, float]], report_examples: int) -> dict:
    """A row's task metric on each split; for classifiers also the share of reported predictions that are the
    unpruned model's, from which prune_report bounds the drop's noise (prune_report.drop_interval)."""
    scores: dict = {role: parity_score(metrics[role]) for role in ROLES}
    if "agreement" in metrics["report"]:
        scores |= {"report_agreement": metrics["report"]["agreement"], "report_examples": report_examples}
    return scores


@torch.no_grad()
def _last_hidden(source: Source, model: torch.nn.Module, batch) -> torch.Tensor:
    feeds = {k: torch.from_numpy(batch.feeds[k]) for k in source.input_names}
    hidden = model.base_model(**feeds).last_hidden_state
    if source.task == "sequence-classification":
        return hidden[:, 0]  # (texts, hidden): the first token, all the classifier head reads
    return hidden[feeds["attention_mask"].bool()]  # (real tokens, hidden): what mean pooling reads


@dataclass
class Calibration:
    """One case's calibration batches at one size, with its importance pass (shared by the rows that use it)."""

    count: int
    batches: list
    labels: object
    fisher: Fisher
    seconds: float


def calibrate(
    case: prune_data.Case, source: Source, data: dict[str, Dataset], count: int, clip: float | None, draw: int = 0
) -> Calibration:
    """`count` calibration texts of draw `draw` (prune_data.calibration's seed), batched, with their importance pass."""
    batches, labels = calibration_batches(source, prune_data.calibration(case, data, count, seed=draw), MAX_LENGTH)
    started = time.perf_counter()
    fisher = fisher_information(source, batches, labels, 0, blocks=True, clip=clip)
    return Calibration(count, batches, labels, fisher, time.perf_counter() - started)


def prune_row(source: Source, calibration: Calibration, config, scorer: Scorer) -> tuple[dict, PruneResult]:
    """Prune with `config` on the calibration (its importance pass reused) and score the result."""
    started = time.perf_counter()
    result = prune_in_steps(source, calibration.batches, calibration.labels, config, seed=0, fisher=calibration.fisher)
    seconds = time.perf_counter() - started + calibration.seconds
    summary = result.summary
    fits = summary.least_squares
    row = {
        "fraction": config.fraction,
        "calibration": calibration.count,
        "units": list(config.units),
        "rearrange": config.rearrange,
        "tuning": summary.tuning,
        "importance_clip": config.importance_clip,
        "steps": config.steps,
        "importance_capped": summary.importance_capped,
        "macs_kept": round(summary.macs_after / summary.macs_before, 4),
        "layers_removed": summary.layers_removed,
        "heads_after": summary.heads_after,
        "ffn_after": summary.ffn_after,
        "estimated_loss": summary.estimated_loss,
        "prune_seconds": round(seconds, 1),
        "stage_seconds": summary.seconds,
        "fit_error_before": _mean(f["error_before"] for f in fits),
        "fit_error_after": _mean(f["error_after"] for f in fits),
        "fits_applied": sum(f["applied"] for f in fits),
        "fits": len(fits),
        **scorer.score(result.model),
    }
    return row, result


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 5) if values else None
