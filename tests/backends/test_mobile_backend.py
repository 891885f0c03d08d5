"""The mobile bundle: layout, the .ort's own parity, the reduced-build operator config, the usability check."""

import json
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import edgec
from edgec.backends.mobile import config_operators
from edgec.cli.main import app
from edgec.errors import ConfigError
from edgec.recipe import QuantConfig, Recipe

BUNDLE = {
    "golden/texts.jsonl",
    "golden/outputs.npz",
    "edgec.json",
    "model.ort",
    "required_operators_and_types.config",
    "mobile_usability.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "report.md",
    "report.html",
    "parity.png",
    "predict.py",
    "requirements.txt",
    "README.md",
}


@pytest.fixture(scope="module")
def bundle(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("mobile") / "m.zip"
    artifact = edgec.build(
        tiny_models("bert"),
        "mobile",
        calib=edgec.read_dataset(data_files["calib"]),
        eval=edgec.read_dataset(data_files["pairs"]),
        out=out,
    )
    return out, artifact


def test_bundle_is_one_zip_with_the_documented_layout(bundle):
    out, artifact = bundle
    assert zipfile.is_zipfile(out) and set(zipfile.ZipFile(out).namelist()) == BUNDLE
    assert artifact.manifest.model_file == "model.ort" and artifact.manifest.files["model.ort"]["bytes"] > 0


def test_the_ort_file_itself_passes_parity(bundle, data_files):
    out, artifact = bundle  # noqa: RUF059
    final = artifact.manifest.parity.ledger[-1]
    assert final.model == "model.ort" and not final.simulated and artifact.manifest.parity.passed
    session = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    tokenizer = artifact.tokenizer()
    feeds = tokenizer(["the movie was really good"], return_tensors="np")
    names = {i.name for i in session.get_inputs()}
    (embedding,) = session.run(None, {k: v.astype(np.int64) for k, v in feeds.items() if k in names})
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-3


def test_operator_config_lists_exactly_the_models_operators(bundle):
    _, artifact = bundle
    config = config_operators((artifact.path / "required_operators_and_types.config").read_text())
    assert set(config) == {"ai.onnx"}, "only standard ONNX ops: no CPU-only contrib ops in a mobile graph"
    assert config["ai.onnx"] == set(artifact.manifest.stages.emit.operator_counts)


def test_int8_is_static_qdq_without_dynamic_quantization_ops(bundle, tiny_models, tmp_path):
    _, artifact = bundle
    ops = set(artifact.manifest.stages.emit.operator_counts)
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    with pytest.raises(ConfigError, match="does not support precision int8-dynamic"):
        edgec.build(
            tiny_models("bert"),
            "mobile",
            recipe=Recipe(quant=QuantConfig(precision="int8-dynamic")),
            out=tmp_path / "m.zip",
        )


def test_usability_report_counts_what_nnapi_and_coreml_could_take(bundle):
    _, artifact = bundle
    report = json.loads((artifact.path / "mobile_usability.json").read_text())
    assert set(report) == {"NNAPI", "CoreML MLProgram"}
    for ep in report.values():
        assert 0 <= ep["supported_nodes"] <= ep["supported_nodes_with_fixed_shapes"] <= ep["nodes"]
        assert ep["suitability"] in ("YES", "MAYBE", "NO")
    assert "mobile usability" in (artifact.path / "report.md").read_text()


def test_run_parity_and_inspect_take_the_bundle(bundle, data_files):
    out, _ = bundle
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(out), "the movie was good"])
    assert ran.exit_code == 0 and "1.0000" in ran.stdout
    parity = runner.invoke(app, ["parity", str(out), "--data", str(data_files["pairs"]), "--json"])
    assert parity.exit_code == 0 and json.loads(parity.stdout)["rows"][0]["model"] == "model.ort"
    alone = runner.invoke(app, ["parity", str(out), "--json"])  # the golden sample, run by model.ort itself
    assert alone.exit_code == 0 and [r["model"] for r in json.loads(alone.stdout)["rows"]] == ["model.ort", "model.ort"]
    inspected = runner.invoke(app, ["inspect", str(out)])
    assert (
        inspected.exit_code == 0 and "every file matches" in inspected.stdout and "QuantizeLinear" in inspected.stdout
    )


def test_mobile_needs_a_zip_path_and_a_bad_zip_is_refused(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match=r"\.zip"):
        edgec.build(tiny_models("bert"), "mobile", out=tmp_path / "folder")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "bad.zip")])
    assert result.exit_code == 2 and "not a valid zip" in result.stderr
