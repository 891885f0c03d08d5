"""The int8 fallback judges quantization's own loss, and the artifact says how much of it is int8."""

import json

import pytest
from conftest import SENTENCES, invoke, make_tiny_model

import edgec
from edgec.artifacts.manifest import Manifest
from edgec.errors import ParityError
from edgec.parity import metrics
from edgec.parity.evalset import reference_outputs
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe
from edgec.source import load_source


@pytest.fixture(scope="module")
def sensitive_model(tmp_path_factory):
    """initializer_range 0.3: wide enough that removing half the compute changes the function (conftest)."""
    return make_tiny_model(tmp_path_factory.mktemp("fallback") / "bert", "bert", initializer_range=0.3)


@pytest.fixture(scope="module")
def own_similarities(sensitive_model, tmp_path_factory):
    """40 pairs scored with the unpruned model's own cosine similarities: its Spearman is 100, so what pruning
    changes can only lose points, on the selection part (12 pairs) as on the gate's."""
    texts = [(text, SENTENCES[(i * j * 7 + 3) % len(SENTENCES)]) for i, text in enumerate(SENTENCES) for j in (1, 3)]
    unscored = edgec.Dataset(tuple(edgec.Example(a, b) for a, b in texts), "pairs")
    embeddings = reference_outputs(load_source(sensitive_model), unscored, 64).reference.values["sentence_embedding"]
    scores = metrics.cosine_rows(embeddings[0::2], embeddings[1::2])
    path = tmp_path_factory.mktemp("fallback-data") / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": a, "text_pair": b, "score": float(score)}) + "\n"
            for (a, b), score in zip(texts, scores)
        )
    )
    return edgec.read_dataset(path)


def test_pruning_loss_does_not_drive_int8_to_float(sensitive_model, own_similarities, tmp_path):
    recipe = Recipe(
        prune=PruneConfig(fraction=0.5),
        quant=QuantConfig(precision="int8"),
        parity=ParityThresholds(min_cosine=0.4, max_drop=1.0),  # cosine passes: only pruning's drop fails the gate
    )
    data = own_similarities
    with pytest.raises(ParityError, match="first lost at stage 'prune'"):
        edgec.build(sensitive_model, "ort-x86", recipe=recipe, calib=data, eval=data, out=tmp_path / "out")
    manifest = Manifest.read(tmp_path / "out.rejected")
    prune_row = next(r for r in manifest.parity.ledger if r.stage == "prune")
    assert prune_row.failures and all("spearman dropped" in f for f in prune_row.failures)
    # Judged against the unpruned model, every try missed by the drop pruning had already spent, and every MatMul
    # went back to float; judged against the fp32 model it was quantized from, int8 keeps most of them.
    quantize, fallback = manifest.stages.quantize, manifest.stages.fallback
    assert len(fallback.kept_in_float) < quantize.quantized_nodes
    assert fallback.quantized_nodes == quantize.quantized_nodes - len(fallback.kept_in_float) > 0
    assert fallback.against == "the fp32 model it was quantized from"


def test_int8_share_is_in_the_manifest(tiny_models, data_files, tmp_path):
    data = edgec.read_dataset(data_files["pairs"])
    recipe = Recipe(quant=QuantConfig(precision="int8"))
    artifact = edgec.build(tiny_models("bert"), "ort-x86", recipe=recipe, calib=data, eval=data, out=tmp_path / "o")
    stages = json.loads((tmp_path / "o" / "edgec.json").read_text())["stages"]
    assert stages["fallback"]["quantized_nodes"] == stages["quantize"]["quantized_nodes"] > 0
    assert stages["fallback"]["kept_in_float"] == []
    count = stages["quantize"]["quantized_nodes"]
    assert artifact.manifest.stages.int8_matmuls() == (count, count)
    assert stages["fallback"]["against"] == "the fp32 reference"
    row = f"- **weight MatMuls in int8**: {count} of {count} (the fallback judged int8 against the fp32 reference)\n"
    assert row in (tmp_path / "o" / "report.md").read_text()
    assert f"({count} of {count} weight MatMuls in int8)" in (tmp_path / "o" / "README.md").read_text()


def test_int8_with_every_matmul_in_float_is_refused(tiny_models, data_files, tmp_path):
    # No int8 model is this close to fp32: only all MatMuls in float could pass, and that model is not int8.
    out = tmp_path / "out"
    result = invoke(
        "build",
        tiny_models("electra"),
        "--target",
        "ort-x86",
        "--precision",
        "int8",
        "--calib",
        data_files["calib"],
        "--eval",
        data_files["pairs"],
        "--min-cosine",
        0.9999999999,
        "--out",
        out,
    )
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "unless all 12 weight MatMuls stay in float" in message
    assert "--precision fp32" in message and "--min-cosine" in message
    assert not out.exists() and not out.with_name("out.rejected").exists()
