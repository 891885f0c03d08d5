"""--target mobile --accelerator: fixed shapes, the additive mask instead of shape ops, parity on the reshaped graph, and
the usability checker's verdict node by node."""

from __future__ import annotations

import json
import zipfile
from collections import Counter

import numpy as np
import pytest
from conftest import invoke

import edgec
from edgec.errors import ConfigError
from edgec.running.device_predict import Predictor
from edgec.source import load_source

pytestmark = pytest.mark.slow
SHAPE = {"fixed_batch": 2, "fixed_seq": 16}


@pytest.fixture(scope="module")
def coreml(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator") / "coreml.zip"
    return edgec.build(
        tiny_models("bert"),
        "mobile",
        calib=edgec.read_dataset(data_files["calib"]),
        eval=edgec.read_dataset(data_files["pairs"]),
        out=out,
        mobile={"accelerator": "coreml", **SHAPE},
    )


def test_coreml_graph_is_one_partition_with_only_the_embedding_lookup_on_the_cpu(coreml):
    report = json.loads((coreml.path / "mobile_usability.json").read_text())["accelerator"]
    assert report["provider"] == "CoreML MLProgram" and report["partitions"] == 1 and report["suitability"] == "YES"
    assert report["supported_share"] > 75
    assert [(n["op"], n["why"]) for n in report["remaining_nodes"]] == [("Gather", "op not in the provider's list")]
    assert coreml.manifest.stages.emit.accelerator["suitability"] == "YES"


def test_the_graph_is_float_with_fixed_shapes_and_no_shape_ops(coreml):
    assert coreml.manifest.precision == "fp32"
    assert all(i["shape"] == [2, 16] for i in coreml.manifest.io["inputs"])
    ops = Counter(coreml.manifest.stages.emit.operator_counts)
    assert not {"Expand", "Equal", "Where", "ConstantOfShape", "Range", "Shape", "QuantizeLinear"} & set(ops)
    assert ops["Gather"] == 1  # the word embeddings; token types are arithmetic


def test_parity_runs_on_the_reshaped_graph_and_holds_the_mobile_thresholds(coreml):
    final = coreml.manifest.parity.ledger[-1]
    assert final.model == "model.ort" and coreml.manifest.parity.passed
    assert final.metrics["cosine_mean"] >= coreml.manifest.parity.thresholds.min_cosine == 0.9999
    assert coreml.manifest.recipe.max_length == 16  # texts are truncated to the fixed sequence


def test_the_device_runner_pads_and_batches_for_the_fixed_shape(coreml, tiny_models):
    texts = ["the movie was really good", "we love this phone", "the battery is terrible"]  # 3 texts, batches of 2
    outputs = Predictor(coreml.path).run(texts)["sentence_embedding"]
    source = load_source(tiny_models("bert"))
    encoded = source.tokenizer(texts, padding=True, return_tensors="pt")
    expected = source.reference_module()(**{k: encoded[k] for k in source.input_names})[0].detach().numpy()
    assert outputs.shape == (3, 32) and np.abs(outputs - expected).max() < 1e-4


def test_nnapi_names_what_it_cannot_take(tiny_models, data_files, tmp_path):
    artifact = edgec.build(
        tiny_models("bert"),
        "mobile",
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "n.zip",
        mobile={"accelerator": "nnapi", **SHAPE},
    )
    report = json.loads((artifact.path / "mobile_usability.json").read_text())["accelerator"]
    assert report["provider"] == "NNAPI" and artifact.manifest.parity.passed
    left = {n["op"] for n in report["remaining_nodes"]}
    assert (
        "Erf" in left and "LayerNormalization" not in left and "Gather" not in left
    )  # int32 ids: NNAPI's Gather takes them
    assert "ReduceMean" in artifact.manifest.stages.emit.operator_counts  # LayerNorm as primitives (opset 16)


def test_classifiers_shape_too_and_xnnpack_is_not_checked(tiny_models, data_files, tmp_path):
    artifact = edgec.build(
        tiny_models("bert", "sequence-classification"),
        "mobile",
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "x.zip",
        mobile={"accelerator": "xnnpack", **SHAPE},
    )
    report = json.loads(zipfile.ZipFile(tmp_path / "x.zip").read("mobile_usability.json"))["accelerator"]
    assert report == {
        "provider": "xnnpack",
        "checked": False,
        "why": "ONNX Runtime's usability checker has no rules for this provider",
    }
    assert artifact.manifest.parity.passed and artifact.manifest.parity.ledger[-1].metrics["agreement"] == 1.0


def test_bad_accelerator_requests_are_refused_before_any_work(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match="graphs are float"):
        edgec.build(
            tiny_models("bert"),
            "mobile",
            recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="int8")),
            out=tmp_path / "a.zip",
            mobile={"accelerator": "coreml"},
        )
    with pytest.raises(ConfigError, match="use --target mobile"):
        edgec.build(tiny_models("bert"), "ort-x86", out=tmp_path / "b", mobile={"accelerator": "coreml"})
    with pytest.raises(ConfigError, match="one of coreml, nnapi, xnnpack"):
        edgec.build(tiny_models("bert"), "mobile", out=tmp_path / "c.zip", mobile={"accelerator": "gpu"})
    bad = invoke(
        "build", tiny_models("bert"), "--target", "mobile", "--fixed-shape", "1x128", "--out", tmp_path / "d.zip"
    )
    assert bad.exit_code == 2 and "pass --accelerator" in bad.stderr
    too_long = invoke(
        "build",
        tiny_models("bert"),
        "--target",
        "mobile",
        "--accelerator",
        "coreml",
        "--fixed-shape",
        "1x128",
        "--out",
        tmp_path / "e.zip",
    )
    assert too_long.exit_code == 2 and "at most 64 tokens" in too_long.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_command_takes_an_accelerator(tiny_models, data_files, tmp_path):
    result = invoke(
        "build",
        tiny_models("bert"),
        "--target",
        "mobile",
        "--accelerator",
        "coreml",
        "--fixed-shape",
        "1x16",
        "--calib",
        data_files["calib"],
        "--out",
        tmp_path / "m.zip",
    )
    assert result.exit_code == 0, result.output
    assert (
        json.loads(zipfile.ZipFile(tmp_path / "m.zip").read("edgec.json"))["target"]["mobile"]["accelerator"]
        == "coreml"
    )
