"""aarch64 ONNX Runtime under qemu: an emulated run matches the host's and proves that it ran on aarch64."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import BackendUnavailable, EdgecError, InputError
from edgec.running import emulation
from edgec.running.emulation import ensure_arm64_runtime, run_emulated

FEATURES, UNITS = 16, 8
BATCH_SIZES = (3, 5, 1)


def _feeds(seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((size, FEATURES)).astype(np.float32)} for size in BATCH_SIZES]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory) -> Path:
    """MatMul + Add + Relu with a dynamic batch dimension, opset 17."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((FEATURES, UNITS)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(UNITS).astype(np.float32), "B")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", UNITS])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's IR version: readable by every onnxruntime edgec supports
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("emulation") / "mlp.onnx"
    onnx.save(model, path)
    return path


class _Calibration:
    """The CalibrationDataReader protocol over a few random batches."""

    def __init__(self) -> None:
        self._batches = iter(_feeds(seed=2))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@pytest.fixture(scope="module")
def int8_model(float_model) -> Path:
    """The float model, static int8 with Q/DQ nodes."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    path = float_model.with_name("mlp-int8.onnx")
    quantize_static(
        str(float_model),
        str(path),
        _Calibration(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return path


def _host_outputs(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The host's onnxruntime with the runner's settings, batches concatenated."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["y"], batch)[0] for batch in feeds])


def _output_scale(model: Path) -> float:
    """The scale of the DequantizeLinear that produces the graph output: one quantum of the int8 result."""
    graph = onnx.load(model).graph
    producer = next(node for node in graph.node if graph.output[0].name in node.output)
    assert producer.op_type == "DequantizeLinear"
    scales = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    return float(scales[producer.input[1]])


def _check_ran_on_arm(run: emulation.EmulatedRun) -> None:
    assert run.runtime.startswith(f"onnxruntime {ort.__version__} (aarch64, ")
    if platform.machine() == "x86_64":
        assert "qemu-aarch64" in run.runtime and "-cpu neoverse-n1" in run.runtime
    assert len(run.latency_ms) == len(BATCH_SIZES) and all(ms > 0 for ms in run.latency_ms)


@pytest.mark.slow
def test_float_model_matches_host(arm64_runtime, float_model):
    feeds = _feeds()
    run = run_emulated(float_model, feeds)
    expected = _host_outputs(float_model, feeds)
    assert list(run.outputs) == ["y"]
    assert run.outputs["y"].dtype == np.float32 and run.outputs["y"].shape == (sum(BATCH_SIZES), UNITS)
    np.testing.assert_allclose(run.outputs["y"], expected, rtol=0, atol=1e-5)
    _check_ran_on_arm(run)


@pytest.mark.slow
def test_int8_model_within_one_quantum(arm64_runtime, int8_model):
    feeds = _feeds()
    run = run_emulated(int8_model, feeds)
    expected = _host_outputs(int8_model, feeds)
    quantum = _output_scale(int8_model)
    difference = np.abs(run.outputs["y"] - expected)
    assert difference.max() <= quantum * (1 + 1e-6), f"{difference.max()} > one quantum {quantum}"
    _check_ran_on_arm(run)


@pytest.mark.slow
def test_runner_failure_is_one_line_error(arm64_runtime, float_model):
    with pytest.raises(EdgecError, match=r"aarch64 onnxruntime failed on mlp.onnx: .*; check"):
        run_emulated(float_model, [{"wrong_name": np.zeros((1, FEATURES), np.float32)}])


def test_missing_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is not a file"):
        run_emulated(tmp_path / "absent.onnx", _feeds())


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the setup script runs only where emulation is needed")
def test_setup_exit_2_is_backend_unavailable(tmp_path, monkeypatch):
    script = tmp_path / "setup_arm64.sh"
    script.write_text(
        'echo "setup_arm64: progress"\necho "setup_arm64: apt-get is missing; run on Debian" >&2\nexit 2\n'
    )
    monkeypatch.setattr(emulation, "_SETUP_SCRIPT", script)
    monkeypatch.setenv("EDGEC_ARM64_HOME", str(tmp_path / "home"))
    with pytest.raises(BackendUnavailable, match=r"^setup_arm64: apt-get is missing; run on Debian$"):
        ensure_arm64_runtime()
