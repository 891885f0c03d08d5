"""Verify stage: compare a model's outputs with the fp32 reference on the eval set (the ledger rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.data import Dataset
from edgec.errors import InputError
from edgec.inference import Forward, Outputs, collect_outputs, ort_forward, ort_session, torch_forward
from edgec.ops import metrics
from edgec.pipeline import Context, EvalSet, ParityRow
from edgec.recipe import ParityThresholds
from edgec.source import OUTPUT_NAMES, TOKEN_LEVEL_TASKS, Source
from edgec.targets import SessionSettings


def eval_texts(task: str, dataset: Dataset) -> Dataset:
    """What the model is run on: an embedding model embeds each side of a pair on its own."""
    return dataset.single_texts() if task == "feature-extraction" else dataset


def label_ids(dataset: Dataset, label2id: dict[str, int]) -> np.ndarray | None:
    """Integer class ids of the dataset's labels (names mapped through the model's label2id)."""
    if not dataset.has_labels:
        return None
    ids = []
    for example in dataset.examples:
        label = example.label
        if isinstance(label, str):
            if label not in label2id:
                raise InputError(f"{dataset.source}: label {label!r} is not one of the model's labels ({', '.join(label2id)})")
            label = label2id[label]
        ids.append(int(label))
    return np.asarray(ids)


def task_metric(task: str, outputs: Outputs, dataset: Dataset, labels: np.ndarray | None) -> dict[str, float]:
    """The model's own score on labelled data: Spearman x100 for scored pairs, accuracy % for labels."""
    if task == "feature-extraction" and dataset.has_pairs and dataset.has_scores:
        scores = np.asarray([e.score for e in dataset.examples])
        return {"spearman": metrics.pair_spearman(outputs.values["sentence_embedding"], scores)}
    if task == "sequence-classification" and labels is not None:
        return {"accuracy": metrics.accuracy(outputs.values["logits"], labels)}
    return {}


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
        result |= {"agreement": metrics.top1_agreement(ref["logits"], got["logits"]), "kl": metrics.mean_kl(ref["logits"], got["logits"])}
    elif task == "token-classification":
        result |= {"agreement": metrics.top1_agreement(ref["logits"], got["logits"], reference.mask)}
    else:
        result |= {
            "agreement": metrics.span_agreement(ref["start_logits"], ref["end_logits"], got["start_logits"], got["end_logits"], reference.mask)
        }
    return result


def failures(result: dict[str, float], thresholds: ParityThresholds, reference_metric: dict[str, float]) -> tuple[str, ...]:
    """Each threshold the result misses, as a readable phrase."""
    found = []
    if thresholds.min_cosine is not None and result.get("cosine_mean", 1.0) < thresholds.min_cosine:
        found.append(f"mean cosine {result['cosine_mean']:.6f} < {thresholds.min_cosine}")
    if thresholds.min_agreement is not None and result.get("agreement", 1.0) < thresholds.min_agreement:
        found.append(f"top-1 agreement {result['agreement']:.4f} < {thresholds.min_agreement}")
    for name, value in reference_metric.items():
        drop = value - result[name]
        if thresholds.max_drop is not None and drop > thresholds.max_drop:
            found.append(f"{name} dropped {drop:.2f} points ({value:.2f} -> {result[name]:.2f}) > {thresholds.max_drop}")
    return tuple(found)


def model_forward(model_path: Path, settings: SessionSettings, task: str) -> Forward:
    """Run a model file: a TensorRT engine on its GPU, anything else (ONNX, ORT) on ONNX Runtime CPU.

    Only the task's outputs are compared (an embedding artifact's token states are there for other runtimes).
    """
    if model_path.suffix == ".engine":
        from edgec.backends.tensorrt_engine import engine_forward

        return engine_forward(model_path)
    return ort_forward(ort_session(model_path, settings), OUTPUT_NAMES[task])


def output_statistics(reference: Outputs, candidate: Outputs) -> dict[str, float]:
    """Polygraphy-style error statistics per output (`name.max_abs`, ...), over real tokens for token-level outputs."""
    result = {}
    for name, ref in reference.values.items():
        got = candidate.values[name]
        if ref.ndim >= 3:  # (examples, tokens, ...): padding positions are not outputs
            real = reference.mask.astype(bool)
            ref, got = ref[real], got[real]
        result |= {f"{name}.{k}": v for k, v in metrics.error_statistics(ref, got).items()}
    return result


def parity_row(
    stage: str, model: str, task: str, evaluation: EvalSet, outputs: Outputs, thresholds: ParityThresholds,
    *, simulated: bool = False, statistics: bool = False,
) -> ParityRow:
    """One ledger row from a model's outputs on the eval set: closeness to the reference, task metric, failures."""
    result = compare(task, evaluation.reference, outputs)
    result |= task_metric(task, outputs, evaluation.dataset, evaluation.labels)
    result |= output_statistics(evaluation.reference, outputs) if statistics else {}
    return ParityRow(stage, model, result, failures(result, thresholds, evaluation.reference_metric), simulated=simulated)


def measure_model(
    model_path: Path, stage: str, task: str, evaluation: EvalSet, thresholds: ParityThresholds,
    settings: SessionSettings, simulated: bool = False, statistics: bool = False,
) -> ParityRow:
    """One ledger row: run the model file on the eval set and compare it with the reference."""
    outputs = collect_outputs(model_forward(model_path, settings, task), evaluation.batches,
                              token_level=task in TOKEN_LEVEL_TASKS, description=f"parity: {stage}")
    return parity_row(stage, model_path.name, task, evaluation, outputs, thresholds, simulated=simulated, statistics=statistics)


def measure_module(source: Source, stage: str, evaluation: EvalSet, thresholds: ParityThresholds) -> ParityRow:
    """One ledger row for a PyTorch model (before export: after pruning or distillation)."""
    forward = torch_forward(source.reference_module(), source.input_names, source.output_names)
    outputs = collect_outputs(forward, evaluation.batches, token_level=source.task in TOKEN_LEVEL_TASKS,
                              description=f"parity: {stage}")
    return parity_row(stage, type(source.model).__name__, source.task, evaluation, outputs, thresholds)


def parity_score(metrics: dict[str, float]) -> float:
    """One number to maximize: the task metric where the data has one, else closeness to the reference."""
    for name in ("spearman", "accuracy", "cosine_mean", "agreement"):
        if name in metrics:
            return metrics[name]
    return -metrics["mean_abs_error"]


def measure(ctx: Context, stage: str) -> ParityRow:
    """The ledger row for the model a stage left in the context (ONNX once exported, PyTorch before)."""
    if ctx.onnx_path is None:
        return measure_module(ctx.source, stage, ctx.evaluation, ctx.thresholds)
    if ctx.parity_model is not None:  # the artifact's own file (.ort, .engine) or an ONNX standing in for an engine
        simulated = ctx.parity_model.suffix == ".onnx"
        return measure_model(
            ctx.parity_model, stage, ctx.source.task, ctx.evaluation, ctx.thresholds, ctx.target.session, simulated, statistics=True,
        )
    return measure_model(ctx.onnx_path, stage, ctx.source.task, ctx.evaluation, ctx.thresholds, ctx.target.session)
