"""The eval data as parity uses it: tokenized once, the fp32 reference outputs on it, labels checked, and the split
between the part stages may select on and the part the gate judges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import numpy as np

from edgec.data import Dataset, sample_indices
from edgec.errors import InputError
from edgec.parity import metrics
from edgec.running.inference import Batch, Outputs, collect_outputs, encode_batches, torch_forward
from edgec.source import TOKEN_LEVEL_TASKS, Source

SELECTION_SHARE = 0.3
"""Share of --eval a selecting stage (fallback search, distillation's early stop, budgeted search) may choose on;
the gate judges the rest. 30% keeps most of a small eval set for the gate while giving a selection ~400 pairs on
STS-B test."""


@dataclass(frozen=True)
class EvalSet:
    """Eval data, tokenized once, and the fp32 PyTorch reference outputs on it."""

    dataset: Dataset
    batches: list[Batch]
    reference: Outputs
    reference_metric: dict[str, float]
    """The uncompressed model's own task metric (spearman or accuracy) where the data has scores/labels."""
    labels: np.ndarray | None
    """Class ids of the data's labels (names mapped through the model's label2id), classifiers only."""
    hidden_pruned: bool = False
    """The models judged against this reference may have lost hidden channels (Recipe.prunes_hidden): an embedding
    narrower than the reference's is then compared width-free (parity.ledger.compare_width_free), not refused."""


def eval_texts(task: str, dataset: Dataset) -> Dataset:
    """What the model is run on: an embedding model embeds each side of a pair on its own."""
    return dataset.single_texts() if task == "feature-extraction" else dataset


def label_ids(dataset: Dataset, label2id: dict[str, int], classes: int) -> np.ndarray | None:
    """Class ids of a classifier's eval labels: names through the model's label2id, integers checked against the head.

    Every bad label is an InputError naming the file and line: an unknown name, an id outside 0..classes-1.
    """
    if not dataset.has_labels:
        return None
    ids = []
    for example in dataset.examples:
        where, label = dataset.where(example), example.label
        if isinstance(label, str):
            if label not in label2id:
                known = ", ".join(list(label2id)[:20])
                raise InputError(
                    f"{where}: label {label!r} is not one of the model's labels ({known}); use those names or ids"
                )
            label = label2id[label]
        label = cast(int, label)  # has_labels: every example has one, and names became ids above
        if not 0 <= label < classes:
            raise InputError(
                f"{where}: class id {label} is outside the model's {classes} classes; use ids 0..{classes - 1}"
            )
        ids.append(label)
    return np.asarray(ids, dtype=np.int64)


def classifier_labels(source: Source, dataset: Dataset) -> np.ndarray | None:
    """label_ids for a sequence classifier's data; other tasks do not score labels."""
    if source.task != "sequence-classification":
        return None
    config = source.model.config
    return label_ids(dataset, {str(k): int(v) for k, v in (config.label2id or {}).items()}, config.num_labels)


def task_metric(task: str, outputs: Outputs, dataset: Dataset, labels: np.ndarray | None) -> dict[str, float]:
    """The model's own score on labelled data: Spearman x100 for scored pairs, accuracy % for labels."""
    if task == "feature-extraction" and dataset.has_pairs and dataset.has_scores:
        scores = np.asarray([e.score for e in dataset.examples])
        return {"spearman": metrics.pair_spearman(outputs.values["sentence_embedding"], scores)}
    if task == "sequence-classification" and labels is not None:
        return {"accuracy": metrics.accuracy(outputs.values["logits"], labels)}
    return {}


def chained(evaluation: EvalSet, task: str, outputs: Outputs) -> EvalSet:
    """The same data with another model's outputs (and task metric) as the reference: a chained comparison, which
    judges what one step did to the model it started from, where the ledger judges every stage against the
    uncompressed model. Both models have the same width, so the comparison is value by value even after hidden-size
    pruning."""
    metric = task_metric(task, outputs, evaluation.dataset, evaluation.labels)
    return dataclasses.replace(evaluation, reference=outputs, reference_metric=metric, hidden_pruned=False)


def reference_outputs(source: Source, dataset: Dataset, max_length: int, *, hidden_pruned: bool = False) -> EvalSet:
    """Tokenize the eval data once and run the uncompressed fp32 PyTorch model on it; `hidden_pruned`: the models
    judged against it may be narrower (EvalSet.hidden_pruned).

    A reference that is not finite is a broken source model, not a parity result: it is refused.
    """
    labels = classifier_labels(source, dataset)
    batches = encode_batches(source.tokenizer, eval_texts(source.task, dataset), max_length=max_length)
    forward = torch_forward(source.reference_module(), source.input_names, source.output_names)
    token_level = source.task in TOKEN_LEVEL_TASKS
    reference = collect_outputs(forward, batches, token_level=token_level, description="reference pass (PyTorch fp32)")
    for name, values in reference.values.items():
        if bad := metrics.non_finite_count(values, reference.mask if token_level else None):
            raise InputError(
                f"{source.path}: the model's own output {name} has {bad} NaN/inf values on {dataset.source}; "
                "fix or re-save the model"
            )
    metric = task_metric(source.task, reference, dataset, labels)
    return EvalSet(dataset, batches, reference, metric, labels, hidden_pruned)


def selection_split(dataset: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """(the part a selecting stage may choose on, the held-out part the gate judges): deterministic and disjoint."""
    if len(dataset) < 2:
        raise InputError(
            f"{dataset.source}: one example cannot be split into a selection part and a gate part; "
            "pass an --eval file with more examples"
        )
    picked = sample_indices(len(dataset), max(1, round(len(dataset) * SELECTION_SHARE)), seed)
    chosen = set(picked)
    return dataset.subset(picked), dataset.subset(i for i in range(len(dataset)) if i not in chosen)
