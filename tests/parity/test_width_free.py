"""Issue 14: an embedding narrowed by hidden-size pruning is judged width-free against the wider reference (its
similarity structure and the task metric), a broken narrow model still fails, and any other shape difference fails
the row in one line instead of crashing on arrays that do not broadcast."""

import numpy as np
import onnx
import pytest
import torch
from conftest import invoke

import edgec
from edgec.artifacts.artifact_ops import check_parity
from edgec.data import Dataset, Example
from edgec.parity import metrics
from edgec.parity.evalset import EvalSet
from edgec.parity.ledger import parity_row
from edgec.recipe import ParityThresholds
from edgec.running.inference import Outputs
from edgec.stages import prune_hidden

THRESHOLDS = ParityThresholds(min_cosine=0.75, max_drop=2.0)
HIDDEN = edgec.PruneConfig(fraction=0.3, units=("heads", "ffn", "hidden"), hidden_size=24)


def _rows(n: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


def _row(reference: np.ndarray, candidate: np.ndarray, *, hidden_pruned: bool, task: str = "feature-extraction"):
    name = "sentence_embedding" if task == "feature-extraction" else "logits"
    dataset = Dataset(tuple(Example(f"t{i}") for i in range(len(reference))), "d")
    mask = np.ones((len(reference), 4), np.int64)
    evaluation = EvalSet(dataset, [], Outputs({name: reference}, mask), {}, None, hidden_pruned)
    return parity_row("prune", "m", task, evaluation, Outputs({name: candidate}, mask), THRESHOLDS)


def test_similarity_agreement_is_width_free_and_sees_unrelated_or_collapsed_embeddings():
    reference = _rows(60, 32, 0)
    projection = np.linalg.qr(np.random.default_rng(1).normal(size=(32, 32)))[0][:, :24]  # orthonormal columns
    assert metrics.similarity_agreement(reference, reference @ projection).mean() > 0.7
    assert metrics.similarity_agreement(reference, reference[:, :24] * 3.0).min() > 0.5  # scale does not matter
    assert metrics.similarity_agreement(reference, reference).min() == pytest.approx(1.0)
    assert abs(metrics.similarity_agreement(reference, _rows(60, 24, 2)).mean()) < 0.1
    assert np.isnan(metrics.similarity_agreement(reference, np.ones((60, 24))).mean())
    assert np.isnan(metrics.similarity_agreement(reference[:2], reference[:2, :24])).all()


def test_a_narrower_embedding_is_compared_width_free_and_says_so():
    reference = _rows(40, 32, 0)
    row = _row(reference, reference[:, :28], hidden_pruned=True)
    assert row.passed and "cosine_mean" not in row.metrics and "max_abs_error" not in row.metrics
    assert row.metrics["similarity_corr_mean"] > 0.75 and "width-free" in (row.comparison or "")
    broken = _row(reference, _rows(40, 28, 3), hidden_pruned=True)
    assert not broken.passed and broken.failures[0].startswith("mean similarity correlation")


def test_the_same_width_is_still_compared_value_by_value():
    reference = _rows(40, 32, 0)
    row = _row(reference, reference * 1.001, hidden_pruned=True)
    assert row.comparison is None and row.metrics["cosine_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("task", "candidate", "hidden_pruned"),
    [
        ("feature-extraction", _rows(40, 24, 1), False),  # narrower, but nothing pruned hidden channels
        ("feature-extraction", _rows(40, 48, 1), True),  # wider: no pruning widens
        ("feature-extraction", _rows(39, 24, 1), True),  # an example lost
        ("sequence-classification", _rows(40, 24, 1), True),  # a classifier's logits are never width-free
    ],
)
def test_any_other_shape_difference_fails_in_one_line(task, candidate, hidden_pruned):
    row = _row(_rows(40, 32, 0), candidate, hidden_pruned=hidden_pruned, task=task)
    (failure,) = row.failures
    assert f"is {candidate.shape} where the reference's is (40, 32)" in failure and "\n" not in failure


def test_a_hidden_pruned_embedding_model_passes_parity_end_to_end(tiny_models, data_files, tmp_path):
    data = edgec.read_dataset(data_files["pairs"])
    recipe = edgec.Recipe(prune=HIDDEN, quant=edgec.QuantConfig(precision="fp32"))
    artifact = edgec.build(tiny_models("bert"), "ort", recipe=recipe, calib=data, eval=data, out=tmp_path / "a")
    ledger = artifact.manifest.parity.ledger
    assert artifact.manifest.parity.passed and ledger[0].stage == "prune"
    assert all("width-free" in (r.comparison or "") and "similarity_corr_mean" in r.metrics for r in ledger)
    assert "spearman" in ledger[-1].metrics
    report = (artifact.path / "report.md").read_text()
    assert "prune (width-free)" in report and "similarity_corr" in report
    alone, own = check_parity(artifact, None)  # the golden sample: width-free against the reference, not its own
    assert alone.passed and alone.comparison and own.passed and own.comparison is None
    (again,) = check_parity(artifact, data)
    assert again.passed and again.comparison
    result = invoke("parity", artifact.path)
    assert result.exit_code == 0 and "golden vs fp32 reference: width-free" in result.output


def test_a_broken_narrow_model_fails_the_gate(tiny_models, data_files, tmp_path, monkeypatch):
    keep = prune_hidden.keep_top_channels

    def keep_then_scramble(student, *args):
        kept = keep(student, *args)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # every matrix's entries shuffled: the same sizes and values, none of the function
            for weight in (p for p in student.parameters() if p.ndim == 2):
                weight.copy_(weight.flatten()[torch.randperm(weight.numel(), generator=generator)].view_as(weight))
        return kept

    monkeypatch.setattr(prune_hidden, "keep_top_channels", keep_then_scramble)
    data = edgec.read_dataset(data_files["pairs"])
    recipe = edgec.Recipe(prune=HIDDEN, quant=edgec.QuantConfig(precision="fp32"))
    with pytest.raises(edgec.ParityError, match="mean similarity correlation .* < 0.75 .*first lost at stage 'prune'"):
        edgec.build(tiny_models("bert"), "ort", recipe=recipe, calib=data, eval=data, out=tmp_path / "a")
    final = edgec.load_artifact(tmp_path / "a.rejected").manifest.parity.ledger[-1]
    assert final.metrics["similarity_corr_mean"] < 0.5, final.metrics  # far below the threshold, not at its edge


def test_a_width_mismatch_without_hidden_pruning_fails_in_one_line(tiny_models, data_files, tmp_path):
    """A narrow model's artifact checked against a wider --reference than it was built from: one failing line."""
    data = edgec.read_dataset(data_files["pairs"])
    summary = edgec.compress(tiny_models("bert"), edgec.Recipe(prune=HIDDEN), calib=data, eval=data, out=tmp_path / "m")
    assert summary.ledger[0].comparison and summary.ledger[0].passed  # compress: width-free as well
    recipe = edgec.Recipe(quant=edgec.QuantConfig(precision="fp32"))
    artifact = edgec.build(tmp_path / "m", "ort", recipe=recipe, calib=data, eval=data, out=tmp_path / "a")
    (row,) = check_parity(artifact, data, reference=tiny_models("bert"))
    (failure,) = row.failures
    assert "sentence_embedding is (40, 24) where the reference's is (40, 32)" in failure and "\n" not in failure


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_a_hidden_pruned_model_keeps_every_attention_fused_and_passes_in_static_int8(
    tiny_models, data_files, tmp_path, model_type
):
    """Static int8 quantizes the fused graph of a hidden-pruned model (its Q/K/V MatMuls narrower than before and
    MPNet's layers sharing one Gather of the bias columns the width holds) and changes little beside pruning.

    The Spearman of a random model moves by points under pruning alone, so max_drop is loose here and int8 is judged
    against the fused fp32 row; the fallback is off because it would put MatMuls back in float wherever pruning alone
    misses the gate on its 6-text selection part, leaving no int8 to check."""
    data = edgec.read_dataset(data_files["pairs"])
    recipe = edgec.Recipe(
        prune=HIDDEN,
        quant=edgec.QuantConfig(precision="int8", fallback=False),
        parity=ParityThresholds(max_drop=10.0),
    )
    artifact = edgec.build(tiny_models(model_type), "ort", recipe=recipe, calib=data, eval=data, out=tmp_path / "a")
    stages = artifact.manifest.stages
    assert artifact.manifest.parity.passed and stages.prune.hidden_after == 24
    assert stages.optimize.fused_ops["MultiHeadAttention"] == 2, "one fused attention per layer"
    ops = [n.op_type for n in onnx.load(str(artifact.path / "model.onnx")).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "Softmax" not in ops
    assert ops.count("QuantizeLinear") >= 8, (
        "int8 activations: per layer the Q/K/V input, attention output, FFN in and out"
    )
    rows = {row.stage: row.metrics for row in artifact.manifest.parity.ledger}
    for name, slack in (("similarity_corr_mean", 0.02), ("spearman", 1.0)):
        assert abs(rows["quantize"][name] - rows["optimize"][name]) <= slack, (name, rows["quantize"], rows["optimize"])
