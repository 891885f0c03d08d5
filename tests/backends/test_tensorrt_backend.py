"""The TensorRT back end on a CPU-only machine: Q/DQ placement, profiles, spec, script, deferred engine, parity."""

import json
import re

import numpy as np
import onnx
import pytest
from conftest import fake_engine
from onnx import numpy_helper

import edgec
from edgec.artifacts.artifact import load_artifact, verify_hashes
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
    weight_matmuls = [
        n
        for n in graph.node
        if n.op_type == "MatMul"
        and made.get(n.input[1], None) is not None
        and made[n.input[1]].op_type == "DequantizeLinear"
    ]
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
        # Strongly typed: the scales carry the type the MatMul runs in (fp16 here: no value of the tiny model's
        # calibration data comes near 512), so the int8 GEMM's output is fp16 with no Cast in between.
        assert scales.dtype == np.float16 and init[quantize.input[1]].dtype == np.float16


def test_qdq_only_where_tensorrt_fuses_it(int8_artifact):
    graph = _graph(int8_artifact)
    init = {i.name: i for i in graph.initializer}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.op_type not in ("MatMul", "QuantizeLinear", "DequantizeLinear"):
            assert not dequantized & set(node.input), f"{node.op_type} {node.name} reads a dequantized tensor"
    for node in graph.node:  # biases stay float (fp16), LayerNorm and its parameters fp32
        for name in [i for i in node.input if i in init and node.op_type in ("Add", "LayerNormalization")]:
            expected = onnx.TensorProto.FLOAT if node.op_type == "LayerNormalization" else onnx.TensorProto.FLOAT16
            assert init[name].data_type == expected, f"{node.op_type} {node.name} reads {name}"
    assert not any(n.domain not in ("", "ai.onnx") for n in graph.node), (
        "ONNX Runtime contrib ops block TensorRT's parser"
    )
    model = onnx.load(str(int8_artifact.model_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == 19, "fp16 inputs and scales of Q/DQ need opset 19"
    onnx.checker.check_model(model, full_check=True)
    import onnxruntime

    onnxruntime.InferenceSession(str(int8_artifact.model_path), providers=["CPUExecutionProvider"])  # loads as is


def test_spec_profile_and_script_agree(int8_artifact, data_files):
    spec = json.loads((int8_artifact.path / "trt_build.json").read_text())
    assert spec["precision"] == "int8" and spec["strongly_typed"] is True and spec["tensorrt_majors"] == [10, 11]
    assert "flags" not in spec and "implicit_int8" not in spec, "TensorRT 11 has no precision flags or implicit int8"
    names = [i["name"] for i in spec["inputs"]]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    profile = spec["profiles"][0]
    histogram = spec["length_histogram"]
    for name in names:
        assert profile[name]["min"] == [1, 1]
        assert profile[name]["max"] == [32, int8_artifact.manifest.recipe.max_length]
        assert profile[name]["opt"][1] >= histogram["p50"] and profile[name]["opt"][1] % 8 == 0
    assert spec["onnx_sha256"] == int8_artifact.manifest.files["model.onnx"]["sha256"]
    script = (int8_artifact.path / "build_engine.sh").read_text()
    main = script[script.rindex("exec trtexec") :]
    shapes = ",".join(f"{n}:{'x'.join(map(str, profile[n]['max']))}" for n in names)
    for expected in (
        "--onnx=model.onnx",
        "--saveEngine=model.engine",
        f"--maxShapes={shapes}",
        "--stronglyTyped",
        "--memPoolSize=workspace:4096",
        "--timingCacheFile=timing.cache",
        "--builderOptimizationLevel=3",
    ):
        assert expected in main
    # TensorRT 11's trtexec lost every precision flag and the calibrator; 10's accepts the same line.
    assert not re.search(r"--(int8|fp16|bf16|best|calib)\b", script) and "--implicit" not in script
    assert "TensorRT 10 or 11" in script
    assert (int8_artifact.path / "build_engine.sh").stat().st_mode & 0o111
    assert (
        not (int8_artifact.path / "model_fp32.onnx").exists()
        and not (int8_artifact.path / "calibration.cache").exists()
    )


def test_deferred_engine_is_never_reported_as_built(int8_artifact, monkeypatch):
    manifest = int8_artifact.manifest
    assert manifest.engine["file"] is None and manifest.engine["status"].startswith("deferred (")
    assert not (int8_artifact.path / "model.engine").exists()
    final = manifest.parity.ledger[-1]
    assert final.stage == "artifact" and final.simulated and manifest.parity.passed
    assert "sentence_embedding.max_abs" in final.metrics and "sentence_embedding.median_rel" in final.metrics
    report = (int8_artifact.path / "report.md").read_text()
    assert "engine: deferred" not in report and "- **TensorRT engine**: deferred (" in report
    assert "| sentence_embedding |" in report.split("## Parity ledger")[1]  # the error statistics per output


def test_fp16_is_an_fp16_typed_onnx_with_layernorm_and_pooling_in_fp32(fp16_artifact):
    from edgec.ops.mixed_precision import tensor_types

    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp16_artifact.model_path)), strict_mode=True)
    types, graph = tensor_types(model), model.graph
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    io_types = lambda node: {types[t] for t in (*node.input, *node.output) if types.get(t) in floats}  # noqa: E731
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert matmuls and all(io_types(n) == {onnx.TensorProto.FLOAT16} for n in matmuls), (
        "attention and projections in fp16"
    )
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(io_types(n) == {onnx.TensorProto.FLOAT} for n in norms)
    pooling = [n for n in graph.node if n.name.startswith("edgec_") and io_types(n)]
    assert pooling and all(io_types(n) == {onnx.TensorProto.FLOAT} for n in pooling)
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    spec = json.loads((fp16_artifact.path / "trt_build.json").read_text())
    assert (
        spec["strongly_typed"]
        and "flags" not in spec
        and spec["quantization"].startswith("none; float parts typed fp16")
    )
    typing = fp16_artifact.manifest.stages.emit.typing
    assert typing["fp16_nodes"] > 0 and typing["fp32_nodes"]["LayerNormalization"] == len(norms)
    final = fp16_artifact.manifest.parity.ledger[-1]
    assert final.model == "tensorrt-fp16-rounding.onnx" and final.simulated
    assert 0 < final.metrics["max_abs_error"] < 1e-2  # fp16 rounding is visible, and small


def test_fp32_on_a_tensorrt_target_stays_fp32(tiny_models, tmp_path):
    art = edgec.build(
        tiny_models("bert"), "trt-fp16", recipe=Recipe(quant=QuantConfig(precision="fp32")), out=tmp_path / "o"
    )
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in _graph(art).initializer)
    assert art.manifest.parity.ledger[-1].model == "model.onnx" and art.manifest.stages.emit.typing is None


def test_trt_alias_chooses_by_calibration_data(tiny_models, data_files, tmp_path):
    with_calib = _build(tiny_models("bert"), tmp_path / "a", "trt", edgec.read_dataset(data_files["calib"]))
    without = edgec.build(tiny_models("bert"), "trt", out=tmp_path / "b")
    assert (
        with_calib.manifest.target.name == "trt-int8"
        and "calibration data was given" in with_calib.manifest.stages.target
    )
    assert without.manifest.target.name == "trt-fp16" and "--calib" in without.manifest.stages.target


def test_max_seq_len_caps_profile_and_truncation(tiny_models, data_files, tmp_path):
    art = _build(
        tiny_models("bert"),
        tmp_path / "o",
        "trt-fp16",
        edgec.read_dataset(data_files["calib"]),
        tensorrt={"max_seq_len": 16, "max_batch": 4},
    )
    spec = json.loads((art.path / "trt_build.json").read_text())
    assert spec["profiles"][0]["input_ids"]["max"] == [4, 16] and art.manifest.recipe.max_length == 16


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
        edgec.build(
            tiny_models("bert"), "trt-int8", recipe=Recipe(quant=QuantConfig(precision="fp16")), out=tmp_path / "o"
        )


def test_with_an_engine_the_engine_row_gates_the_build(tiny_models, data_files, tmp_path, monkeypatch):
    fake_engine(monkeypatch)
    art = _build(tiny_models("bert"), tmp_path / "o", "trt-int8", edgec.read_dataset(data_files["pairs"]))
    ledger = art.manifest.parity.ledger
    assert [r.stage for r in ledger][-2:] == ["artifact", "engine"]
    assert ledger[-2].simulated and not ledger[-1].simulated and ledger[-1].model == "model.engine"
    assert art.manifest.engine["status"] == "built" and "model.engine" in art.manifest.files


def _copy(artifact, tmp_path):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(artifact.path, copy)
    return copy


def test_engine_command_builds_gates_on_parity_and_updates_the_manifest(
    int8_artifact, data_files, tmp_path, monkeypatch
):
    copy = _copy(int8_artifact, tmp_path)
    fake_engine(monkeypatch)
    built, row = trt_backend.build_checked_engine(load_artifact(copy), edgec.read_dataset(data_files["pairs"]))
    manifest = load_artifact(copy).manifest
    assert built["status"] == manifest.engine["status"] == "built" and (copy / "model.engine").exists()
    assert row.passed and not row.simulated and manifest.engine["parity"]["passed"]
    assert (
        manifest.engine["parity"]["data"].endswith("pairs.jsonl")
        and "cosine_mean" in manifest.engine["parity"]["metrics"]
    )
    assert not (copy / "model.candidate.engine").exists() and verify_hashes(load_artifact(copy)) == []


def test_engine_failing_parity_is_kept_aside_and_exits_1(int8_artifact, data_files, tmp_path, monkeypatch):
    from edgec.backends import tensorrt_engine

    copy = _copy(int8_artifact, tmp_path)
    fake_engine(monkeypatch)
    honest = tensorrt_engine.engine_forward
    # An engine that flips every embedding: cosine -1 to the reference, far below the profile's thresholds.
    monkeypatch.setattr(
        tensorrt_engine, "engine_forward", lambda path: lambda feeds: {k: -v for k, v in honest(path)(feeds).items()}
    )
    with pytest.raises(edgec.ParityError, match="engine parity failed.*mean cosine.*model.engine.rejected") as caught:
        trt_backend.build_checked_engine(load_artifact(copy), edgec.read_dataset(data_files["pairs"]))
    assert caught.value.exit_code == 1
    manifest = load_artifact(copy).manifest
    assert (copy / "model.engine.rejected").exists() and not (copy / "model.engine").exists()
    assert manifest.engine["file"] is None and manifest.engine["status"].startswith("deferred (")
    assert (
        manifest.engine["rejected"]["file"] == "model.engine.rejected"
        and not manifest.engine["rejected"]["parity"]["passed"]
    )
    assert verify_hashes(load_artifact(copy)) == []
    assert trt_backend.parity_runtime(load_artifact(copy), tmp_path)[1], (
        "a rejected engine is never run as the artifact's"
    )


def test_engine_command_refuses_a_changed_onnx_and_an_old_spec(int8_artifact, data_files, tmp_path):
    copy = _copy(int8_artifact, tmp_path)
    spec = json.loads((copy / "trt_build.json").read_text())
    (copy / "trt_build.json").write_text(json.dumps({**spec, "format": 1}))
    with pytest.raises(edgec.InputError, match="format 1, written for weakly typed TensorRT"):
        trt_backend.artifact_spec(load_artifact(copy))
    (copy / "trt_build.json").write_text(json.dumps(spec))
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(edgec.InputError, match="changed since the build"):
        trt_backend.build_checked_engine(load_artifact(copy), edgec.read_dataset(data_files["pairs"]))


def test_preflight_stops_a_graph_tensorrt_cannot_parse(tiny_models, data_files, tmp_path):
    from importlib import resources

    profile = (resources.files("edgec.profiles") / "trt-fp16.toml").read_text().replace("fuse = false", "fuse = true")
    (tmp_path / "fused.toml").write_text(profile)  # ONNX Runtime's contrib ops, which TensorRT's parser lacks
    with pytest.raises(edgec.InputError, match="TensorRT preflight: .*com.microsoft"):
        edgec.build(
            tiny_models("bert"),
            str(tmp_path / "fused.toml"),
            recipe=Recipe(quant=QuantConfig(precision="fp32")),
            out=tmp_path / "o",
        )
    assert not (tmp_path / "o").exists()
