"""TensorRT engine building and running: the availability checks run everywhere, real engines where a GPU and
tensorrt are present."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import numpy as np
import pytest

from edgec.backends import tensorrt_engine
from edgec.backends.tensorrt_engine import (
    build_engine,
    check_tensorrt_major,
    engine_forward,
    engine_unavailable_reason,
    strongly_typed_flags,
)
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


def test_known_majors_pass_and_an_unknown_one_is_refused_in_one_line():
    check_tensorrt_major("10.16.1.11", [10, 11])
    check_tensorrt_major("11.4.0.106", [10, 11])
    for version in ("12.0.0.1", "9.3.0", "dev"):
        with pytest.raises(BackendUnavailable) as caught:
            check_tensorrt_major(version, [10, 11])
        message = str(caught.value)
        assert f"TensorRT {version}" in message and "(10, 11)" in message and "\n" not in message


class _Flags:
    """A stand-in for tensorrt.NetworkDefinitionCreationFlag: a pybind11 enum exposes its members by name."""

    def __init__(self, **members):
        self.__members__ = members


def test_strongly_typed_flag_is_looked_up_by_name_in_both_majors():
    from types import SimpleNamespace

    tensorrt_10 = SimpleNamespace(NetworkDefinitionCreationFlag=_Flags(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    tensorrt_11 = SimpleNamespace(NetworkDefinitionCreationFlag=_Flags(STRONGLY_TYPED=0))  # renumbered, ignored
    without = SimpleNamespace(NetworkDefinitionCreationFlag=_Flags(PREFER_JIT_PYTHON_PLUGINS=2))
    assert strongly_typed_flags(tensorrt_10) == 0b10
    assert strongly_typed_flags(tensorrt_11) == 0b1
    assert strongly_typed_flags(without) == 0


def _spec(**overrides) -> dict:
    spec = {
        "onnx": "model.onnx",
        "engine": "model.plan",
        "timing_cache": "timing.cache",
        "tensorrt_majors": [10, 11],
        "workspace_mib": 256,
        "builder_optimization_level": 2,
        "strongly_typed": True,
        "profiles": [
            {"x": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}, "ids": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}}
        ],
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
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 4]),
        ],
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


def test_a_parser_error_is_one_line_naming_the_node(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "model.onnx").write_bytes(b"stand-in")
    error = (
        "In node 7 with name: /encoder/Attention and operator: Attention (parseNode):\n  UNSUPPORTED_NODE: no importer"
    )
    parser = SimpleNamespace(parse_from_file=lambda path: False, num_errors=1, get_error=lambda i: error)
    trt = SimpleNamespace(
        NetworkDefinitionCreationFlag=_Flags(STRONGLY_TYPED=0), OnnxParser=lambda network, logger: parser
    )
    builder = SimpleNamespace(create_network=lambda flags: "network")
    with pytest.raises(InputError) as caught:
        tensorrt_engine._parse_onnx(trt, builder, SimpleNamespace(errors=[]), tmp_path / "model.onnx", True)
    message = str(caught.value)
    assert "\n" not in message and "/encoder/Attention" in message and "UNSUPPORTED_NODE" in message


def test_a_profile_tensorrt_rejects_is_one_line_naming_the_input():
    from types import SimpleNamespace

    def set_shape(name, low, opt, high):
        raise RuntimeError("min dimensions in profile 0 are larger than\nopt dimensions")

    profile = SimpleNamespace(set_shape=set_shape)
    builder = SimpleNamespace(create_optimization_profile=lambda: profile)
    network = SimpleNamespace(num_inputs=1, get_input=lambda i: SimpleNamespace(name="input_ids"))
    shapes = {"input_ids": {"min": [4, 8], "opt": [1, 8], "max": [8, 8]}}
    with pytest.raises(InputError) as caught:
        tensorrt_engine._add_profiles(builder, SimpleNamespace(), network, [shapes], SimpleNamespace(errors=[]))
    message = str(caught.value)
    assert "\n" not in message and "input 'input_ids'" in message and "larger than opt" in message
