"""edgec verify --emulate aarch64: an ARM64 artifact and a mobile bundle run on emulated aarch64 ONNX Runtime."""

import json

import pytest
from conftest import invoke

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["ort-arm64", "mobile"])
def test_artifact_runs_on_emulated_aarch64_with_parity(arm64_runtime, tiny_models, data_files, tmp_path, target):
    out = tmp_path / ("m.zip" if target == "mobile" else "m")
    built = invoke("build", tiny_models("bert"), "--target", target, "--calib", data_files["calib"], "--out", out)
    assert built.exit_code == 0, built.output
    result = invoke("verify", out, "--emulate", "aarch64", "--data", data_files["pairs"], "--samples", 8, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "aarch64" in report["runtime"] and report["passed"] and report["examples"] == 8
    assert (
        report["metrics"]["cosine_mean"] > 0.99
        and report["emulated_latency"]["note"] == "emulated: not a device figure"
    )


def test_verify_refuses_what_it_cannot_emulate(tiny_models, data_files, tmp_path):
    assert invoke("verify", tmp_path, "--emulate", "riscv64", "--data", data_files["calib"]).exit_code == 2
    out = tmp_path / "trt"
    assert invoke("build", tiny_models("bert"), "--target", "trt-fp16", "--out", out).exit_code == 0
    result = invoke("verify", out, "--data", data_files["calib"])
    assert result.exit_code == 2 and "only ONNX Runtime artifacts" in result.stderr
