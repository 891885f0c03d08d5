"""The TensorRT back end on a CPU-only machine: Q/DQ placement, profiles, spec, script, deferred engine, parity."""

import json
import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec.artifact import load_artifact, verify_hashes
from edgec.backends import tensorrt as trt_backend
from edgec.errors import BackendUnavailable, ConfigError
from edgec.recipe import QuantConfig, Recipe


def _build(model, out, target, data=None, **kwargs):
    return edgec.build(model, target, calib=data, eval=data, out=out, **kwargs)


@pytest.fixture(scope="module")
def int8_artifact(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt") / "int8"
    return _build(tiny_models("bert"), out, "trt-int8", edgec.read_dataset(data_files["pairs"]))


@pytest.fixture(scope="module")
def fp16_artifact(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt") / "fp16"
    return _build(tiny_models("bert"), out, "trt-fp16", edgec.read_dataset(data_files["pairs"]))


def _graph(artifact):
    return onnx.load(str(artifact.model_path)).graph


def _attr(node, name):
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def test_every_weight_matmul_reads_symmetric_qdq_pairs(int8_artifact):
    graph = _graph(int8_artifact)
    made = {o: n for n in graph.node for o in n.output}
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weight_matmuls = [n for n in graph.node if n.op_type == "MatMul" and made.get(n.input[1], None) is not None
                      and made[n.input[1]].op_type == "DequantizeLinear"]
    assert len(weight_matmuls) == 12  # 2 layers x (Q, K, V, O, FFN in, FFN out)
    for node in weight_matmuls:
        act_dq = made[node.input[0]]
        assert act_dq.op_type == "DequantizeLinear" and made[act_dq.input[0]].op_type == "QuantizeLinear"
        quantize = made[act_dq.input[0]]
        zero = init[quantize.input[2]]
        assert zero.dtype == np.int8 and zero.item() == 0, "activations must be symmetric int8"
        weight_dq = made[node.input[1]]
        weight = init[weight_dq.input[0]]
        scales, zeros = init[weight_dq.input[1]], init[weight_dq.input[2]]
        assert weight.dtype == np.int8 and np.abs(weight.astype(int)).max() <= 127
        assert _attr(weight_dq, "axis") == 1 and scales.shape == (weight.shape[1],), "per output channel"
        assert zeros.dtype == np.int8 and not zeros.any()


def test_qdq_only_where_tensorrt_fuses_it(int8_artifact):
    graph = _graph(int8_artifact)
    init = {i.name: i for i in graph.initializer}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.op_type not in ("MatMul", "QuantizeLinear", "DequantizeLinear"):
            assert not dequantized & set(node.input), f"{node.op_type} {node.name} reads a dequantized tensor"
    for node in graph.node:  # biases and LayerNorm parameters stay float
        if node.op_type in ("Add", "LayerNormalization"):
            for name in node.input:
                if name in init:
                    assert init[name].data_type == onnx.TensorProto.FLOAT
    assert not any(n.domain not in ("", "ai.onnx") for n in graph.node), "ONNX Runtime contrib ops block TensorRT's parser"
    opset = next(o.version for o in onnx.load(str(int8_artifact.model_path)).opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17


def test_spec_profile_and_script_agree(int8_artifact, data_files):
    spec = json.loads((int8_artifact.path / "trt_build.json").read_text())
    assert spec["flags"] == ["INT8", "FP16"] and spec["precision"] == "int8"
    names = [i["name"] for i in spec["inputs"]]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    profile = spec["profiles"][0]
    histogram = spec["length_histogram"]
    for name in names:
        assert profile[name]["min"] == [1, 1]
        assert profile[name]["max"] == [32, int8_artifact.manifest["recipe"]["max_length"]]
        assert profile[name]["opt"][1] >= histogram["p50"] and profile[name]["opt"][1] % 8 == 0
    assert spec["onnx_sha256"] == int8_artifact.manifest["files"]["model.onnx"]["sha256"]
    script = (int8_artifact.path / "build_engine.sh").read_text()
    main = script[script.rindex("exec trtexec"):]
    shapes = ",".join(f"{n}:{'x'.join(map(str, profile[n]['max']))}" for n in names)
    for expected in ("--onnx=model.onnx", "--saveEngine=model.engine", f"--maxShapes={shapes}", "--int8", "--fp16",
                     "--memPoolSize=workspace:4096", "--timingCacheFile=timing.cache", "--builderOptimizationLevel=3"):
        assert expected in main
    assert (int8_artifact.path / "build_engine.sh").stat().st_mode & 0o111


def test_implicit_mode_table_names_tensors_of_the_float_graph(int8_artifact):
    lines = (int8_artifact.path / "calibration.cache").read_text().splitlines()
    assert re.fullmatch(r"TRT-\d+-EntropyCalibration2", lines[0])
    float_graph = onnx.load(str(int8_artifact.path / "model_fp32.onnx")).graph
    tensors = {v for n in float_graph.node for v in n.input}
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in float_graph.node)
    for line in lines[1:]:
        name, scale = line.rsplit(": ", 1)
        assert name in tensors and 0 < np.frombuffer(bytes.fromhex(scale), ">f4")[0] < 1


def test_deferred_engine_is_never_reported_as_built(int8_artifact, monkeypatch):
    manifest = int8_artifact.manifest
    assert manifest["engine"]["file"] is None and manifest["engine"]["status"].startswith("deferred (")
    assert not (int8_artifact.path / "model.engine").exists()
    final = manifest["parity"]["ledger"][-1]
    assert final["stage"] == "artifact" and final["simulated"] and manifest["parity"]["passed"]
    assert "sentence_embedding.max_abs" in final["metrics"] and "sentence_embedding.median_rel" in final["metrics"]
    report = (int8_artifact.path / "report.md").read_text()
    assert "engine: deferred" not in report and "| TensorRT engine | deferred (" in report
    assert "| sentence_embedding |" in report.split("## Error statistics")[1]


def test_fp16_keeps_the_fp32_onnx_and_simulates_fp16(fp16_artifact):
    graph = _graph(fp16_artifact)
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    spec = json.loads((fp16_artifact.path / "trt_build.json").read_text())
    assert spec["flags"] == ["FP16"] and spec["implicit_int8"] is None
    final = fp16_artifact.manifest["parity"]["ledger"][-1]
    assert final["model"] == "tensorrt-fp16-stand-in.onnx" and final["simulated"]
    assert 0 < final["metrics"]["max_abs_error"] < 1e-2  # fp16 rounding is visible, unlike the fp32 ONNX's


def test_fp16_onnx_when_asked(tiny_models, data_files, tmp_path):
    art = _build(tiny_models("bert"), tmp_path / "o", "trt-fp16", edgec.read_dataset(data_files["calib"]), tensorrt={"fp16_onnx": True})
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in _graph(art).initializer)


def test_trt_alias_chooses_by_calibration_data(tiny_models, data_files, tmp_path):
    with_calib = _build(tiny_models("bert"), tmp_path / "a", "trt", edgec.read_dataset(data_files["calib"]))
    without = edgec.build(tiny_models("bert"), "trt", out=tmp_path / "b")
    assert with_calib.manifest["target"]["name"] == "trt-int8" and "calibration data was given" in with_calib.manifest["stages"]["target"]
    assert without.manifest["target"]["name"] == "trt-fp16" and "--calib" in without.manifest["stages"]["target"]


def test_max_seq_len_caps_profile_and_truncation(tiny_models, data_files, tmp_path):
    art = _build(tiny_models("bert"), tmp_path / "o", "trt-fp16", edgec.read_dataset(data_files["calib"]),
                 tensorrt={"max_seq_len": 16, "max_batch": 4})
    spec = json.loads((art.path / "trt_build.json").read_text())
    assert spec["profiles"][0]["input_ids"]["max"] == [4, 16] and art.manifest["recipe"]["max_length"] == 16


def test_require_engine_fails_before_any_work(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "engine_unavailable_reason", lambda: "no CUDA device")
    with pytest.raises(BackendUnavailable, match="no CUDA device.*pip install"):
        edgec.build(tiny_models("bert"), "trt-fp16", out=tmp_path / "o", tensorrt={"require_engine": True})
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_settings_are_validated(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match="TensorRT targets only"):
        edgec.build(tiny_models("bert"), "ort-x86", out=tmp_path / "o", tensorrt={"max_batch": 4})
    with pytest.raises(ConfigError, match="opt_batch <= max_batch"):
        edgec.build(tiny_models("bert"), "trt-fp16", out=tmp_path / "o", tensorrt={"max_batch": 0})
    with pytest.raises(ConfigError, match="does not support precision"):
        edgec.build(tiny_models("bert"), "trt-int8", recipe=Recipe(quant=QuantConfig(precision="fp16")), out=tmp_path / "o")


def _fake_engine(monkeypatch):
    """Stand in for tensorrt on a GPU: the 'engine' is the ONNX file, run by ONNX Runtime."""
    from edgec.backends import tensorrt_engine
    from edgec.inference import ort_forward, ort_session
    from edgec.targets import SessionSettings

    def build_engine(folder, spec):
        (folder / spec["engine"]).write_bytes((folder / spec["onnx"]).read_bytes())
        return {"tensorrt": "fake", "device": "fake GPU", "seconds": 0.0, "engine_bytes": 1, "timing_cache": spec["timing_cache"]}

    monkeypatch.setattr(trt_backend, "engine_unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_backend, "build_engine", build_engine)
    monkeypatch.setattr(tensorrt_engine, "engine_forward", lambda path: ort_forward(ort_session(path, SessionSettings())))


def test_with_an_engine_the_engine_row_gates_the_build(tiny_models, data_files, tmp_path, monkeypatch):
    _fake_engine(monkeypatch)
    art = _build(tiny_models("bert"), tmp_path / "o", "trt-int8", edgec.read_dataset(data_files["pairs"]))
    ledger = art.manifest["parity"]["ledger"]
    assert [r["stage"] for r in ledger][-2:] == ["artifact", "engine"]
    assert ledger[-2]["simulated"] and not ledger[-1]["simulated"] and ledger[-1]["model"] == "model.engine"
    assert art.manifest["engine"]["status"] == "built" and "model.engine" in art.manifest["files"]


def test_engine_command_builds_later_and_updates_the_manifest(int8_artifact, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(int8_artifact.path, copy)
    _fake_engine(monkeypatch)
    built = trt_backend.build_artifact_engine(load_artifact(copy))
    manifest = load_artifact(copy).manifest
    assert built["status"] == manifest["engine"]["status"] == "built" and (copy / "model.engine").exists()
    assert verify_hashes(load_artifact(copy)) == []


def test_engine_command_refuses_a_changed_onnx(int8_artifact, tmp_path):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(int8_artifact.path, copy)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(edgec.InputError, match="changed since the build"):
        trt_backend.build_artifact_engine(load_artifact(copy))


def test_preflight_stops_a_graph_tensorrt_cannot_parse(tiny_models, data_files, tmp_path):
    from importlib import resources

    profile = (resources.files("edgec.profiles") / "trt-fp16.toml").read_text().replace("fuse = false", "fuse = true")
    (tmp_path / "fused.toml").write_text(profile)  # ONNX Runtime's contrib ops, which TensorRT's parser lacks
    with pytest.raises(edgec.InputError, match="TensorRT preflight: .*com.microsoft"):
        edgec.build(tiny_models("bert"), str(tmp_path / "fused.toml"), recipe=Recipe(quant=QuantConfig(precision="fp32")),
                    out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
