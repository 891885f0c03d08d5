"""The gate: non-finite outputs and NaN metrics fail; labels are validated; the selection split is disjoint."""

import json

import numpy as np
import pytest

from edgec.data import Dataset, Example, read_dataset
from edgec.errors import InputError
from edgec.parity.evalset import EvalSet, reference_outputs, selection_split
from edgec.parity.gate import failures
from edgec.parity.ledger import parity_row
from edgec.recipe import ParityThresholds
from edgec.running.inference import Outputs
from edgec.source import load_source

STRICT = ParityThresholds(min_cosine=0.9, min_agreement=0.9, max_drop=1.0)


def _evalset(values: dict[str, np.ndarray], dataset: Dataset, metric: dict[str, float] | None = None) -> EvalSet:
    return EvalSet(
        dataset, [], Outputs(values, np.ones((len(next(iter(values.values()))), 4), np.int64)), metric or {}, None
    )


def test_nan_metrics_fail_every_threshold():
    nan = float("nan")
    found = failures({"cosine_mean": nan, "agreement": nan, "spearman": nan}, STRICT, {"spearman": 80.0}, {})
    assert len(found) == 3 and any("cosine" in f for f in found) and any("spearman" in f for f in found)
    assert failures({"cosine_mean": 0.95, "spearman": 79.5}, STRICT, {"spearman": 80.0}, {}) == ()


def test_non_finite_outputs_fail_naming_the_output_and_the_count():
    dataset = Dataset(tuple(Example(f"t{i}") for i in range(4)), "d")
    reference = np.ones((4, 3), np.float32)
    candidate = reference.copy()
    candidate[1, 0], candidate[2, 2] = np.nan, np.inf
    row = parity_row(
        "int8",
        "m",
        "feature-extraction",
        _evalset({"sentence_embedding": reference}, dataset),
        Outputs({"sentence_embedding": candidate}, np.ones((4, 4), np.int64)),
        ParityThresholds(),
    )
    assert not row.passed and row.failures[0] == "output sentence_embedding has 2 NaN/inf values"


def test_a_missing_output_fails_instead_of_crashing():
    dataset = Dataset(tuple(Example(f"t{i}") for i in range(2)), "d")
    values = np.ones((2, 3), np.float32)
    row = parity_row(
        "x",
        "m",
        "feature-extraction",
        _evalset({"sentence_embedding": values}, dataset),
        Outputs({"embedding": values}, np.ones((2, 4), np.int64)),
        ParityThresholds(),
    )
    assert not row.passed and "lacks output(s) sentence_embedding" in row.failures[0]


def test_nan_logits_are_not_read_as_class_zero():
    dataset = Dataset(tuple(Example(f"t{i}", label=0) for i in range(3)), "d")
    logits = np.array([[2.0, 0.0], [3.0, 1.0], [1.0, 0.0]], np.float32)
    broken = np.full_like(logits, np.nan)
    evaluation = EvalSet(
        dataset, [], Outputs({"logits": logits}, np.ones((3, 4), np.int64)), {"accuracy": 100.0}, np.zeros(3, np.int64)
    )
    row = parity_row(
        "int8",
        "m",
        "sequence-classification",
        evaluation,
        Outputs({"logits": broken}, evaluation.reference.mask),
        STRICT,
    )
    assert not row.passed and "NaN/inf" in row.failures[0]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("positive", r"e.jsonl:2: label 'positive' is not one of the model's labels"),
        (7, r"e.jsonl:2: class id 7 is outside the model's 3 classes"),
    ],
)
def test_labels_a_classifier_does_not_have_name_the_line(tiny_models, tmp_path, label, message):
    path = tmp_path / "e.jsonl"
    path.write_text(
        json.dumps({"text": "we love this phone", "label": 1})
        + "\n"
        + json.dumps({"text": "bad movie", "label": label})
        + "\n"
    )
    source = load_source(tiny_models("bert", "sequence-classification"))
    with pytest.raises(InputError, match=message):
        reference_outputs(source, read_dataset(path), 64)


def test_the_selection_split_is_deterministic_disjoint_and_complete():
    dataset = Dataset(tuple(Example(f"t{i}", score=float(i)) for i in range(100)), "d")
    selection, held_out = selection_split(dataset, seed=0)
    assert (selection, held_out) == selection_split(dataset, seed=0)
    assert len(selection) == 30 and len(held_out) == 70
    assert sorted(selection.texts + held_out.texts) == sorted(dataset.texts)
    with pytest.raises(InputError, match="cannot be split"):
        selection_split(Dataset((Example("only"),), "d"), seed=0)
