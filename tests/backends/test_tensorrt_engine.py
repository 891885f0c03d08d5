"""TensorRT engine building and running: the availability checks run everywhere, real engines where a GPU and
tensorrt are present."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import numpy as np
import pytest

from edgec.backends import tensorrt_engine
from edgec.backends.tensorrt_engine import build_engine, engine_forward, engine_unavailable_reason
from edgec.errors import BackendUnavailable, InputError

REAL_FIND_SPEC = importlib.util.find_spec
NEEDS_ENGINE = pytest.mark.skipif(
    engine_unavailable_reason() is not None, reason=f"no TensorRT engine here: {engine_unavailable_reason()}"
)


def _pretend(monkeypatch, *, tensorrt: bool, devices: int) -> None:
    """Make tensorrt look installed or not, and the CUDA driver report `devices` devices."""
    def find_spec(name, *args, **kwargs):
        if name == "tensorrt":
            return importlib.machinery.ModuleSpec("tensorrt", None) if tensorrt else None
        return REAL_FIND_SPEC(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(tensorrt_engine, "_cuda_device_count", lambda: devices)


def test_reason_names_missing_tensorrt(monkeypatch):
    _pretend(monkeypatch, tensorrt=False, devices=1)
    assert engine_unavailable_reason() == "tensorrt not installed"


def test_reason_names_missing_cuda_device(monkeypatch):
    _pretend(monkeypatch, tensorrt=True, devices=0)
    assert engine_unavailable_reason() == "no CUDA device"


def test_reason_names_both_and_none_when_all_present(monkeypatch):
    _pretend(monkeypatch, tensorrt=False, devices=0)
    assert engine_unavailable_reason() == "tensorrt not installed and no CUDA device"
    _pretend(monkeypatch, tensorrt=True, devices=2)
    assert engine_unavailable_reason() is None


def test_cuda_probe_never_raises():
    # No driver (a CPU machine) must read as 0 devices, not as an error.
    assert tensorrt_engine._cuda_device_count() >= 0


def test_build_engine_unavailable_says_how_to_fix(monkeypatch, tmp_path):
    _pretend(monkeypatch, tensorrt=False, devices=0)
    with pytest.raises(BackendUnavailable) as caught:
        build_engine(tmp_path, _spec())
    message = str(caught.value)
    assert "tensorrt not installed" in message and "pip install" in message
    assert "\n" not in message
    assert not (tmp_path / "model.plan").exists()


def test_engine_forward_needs_cuda_torch(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        engine_forward(tmp_path / "model.plan")


def _spec(**overrides) -> dict:
    spec = {
        "onnx": "model.onnx", "engine": "model.plan", "timing_cache": "timing.cache", "flags": [],
        "workspace_mib": 256, "builder_optimization_level": 2, "strongly_typed": False,
        "profiles": [{"x": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]},
                      "ids": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}}],
    }
    return {**spec, **overrides}


def _tiny_onnx(path, weight: np.ndarray, bias: np.ndarray) -> None:
    """y = (x + float(ids)) @ weight + bias, with a dynamic batch; ids is int32 so that int64 feeds must be cast."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "ids_f"], ["summed"]),
            helper.make_node("MatMul", ["summed", "weight"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    # IR 8 / opset 17: old enough for every TensorRT 10 parser.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@NEEDS_ENGINE
def test_engine_matches_numpy_and_reuses_timing_cache(tmp_path):
    # Quarter-integers are exact in TF32, which TensorRT may use for the MatMul: the only error left is fp32 rounding.
    rng = np.random.default_rng(0)

    def quarters(*shape):
        return (rng.integers(-8, 8, size=shape) / 4).astype(np.float32)

    weight, bias = quarters(4, 3), quarters(3)
    _tiny_onnx(tmp_path / "model.onnx", weight, bias)

    built = build_engine(tmp_path, _spec())
    assert set(built) == {"tensorrt", "device", "seconds", "engine_bytes", "timing_cache"}
    assert built["engine_bytes"] == (tmp_path / "model.plan").stat().st_size > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert build_engine(tmp_path, _spec())["engine_bytes"] > 0  # second build starts from the saved cache
    assert not list(tmp_path.glob("*.tmp"))

    # 20 rows exceed the profile's max batch of 8, so the run is split; "mask" is not an engine input.
    x = quarters(20, 4)
    ids = rng.integers(0, 5, size=(20, 4), dtype=np.int64)
    outputs = engine_forward(tmp_path / "model.plan")({"x": x, "ids": ids, "mask": np.ones((20, 4), np.int64)})
    expected = (x + ids.astype(np.float32)) @ weight + bias
    assert set(outputs) == {"y"} and outputs["y"].dtype == np.float32
    np.testing.assert_allclose(outputs["y"], expected, atol=1e-3, rtol=1e-3)


@NEEDS_ENGINE
def test_unparsable_onnx_is_an_input_error(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(InputError, match="cannot parse model.onnx"):
        build_engine(tmp_path, _spec())
    assert not (tmp_path / "model.plan").exists()
