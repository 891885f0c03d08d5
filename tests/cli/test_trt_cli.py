"""The TensorRT commands on a CPU-only machine: build with a deferred engine, engine, parity, inspect, exit codes."""

import json

import pytest
from conftest import fake_engine, invoke

from edgec.backends import tensorrt as trt_backend


@pytest.fixture(scope="module")
def built(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-trt") / "art"
    result = invoke(
        "build",
        tiny_models("bert"),
        "--target",
        "trt",
        "--calib",
        data_files["calib"],
        "--eval",
        data_files["pairs"],
        "--max-batch",
        "8",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_trt_build_says_what_it_chose_and_what_it_did_not_build(built):
    out, stdout = built
    assert "chose trt-int8 because calibration data was given" in stdout
    assert "deferred (" in stdout and "simulated" in stdout
    spec = json.loads((out / "trt_build.json").read_text())
    assert spec["profiles"][0]["input_ids"]["max"][0] == 8
    assert not (out / "model.engine").exists()


def test_engine_without_gpu_is_one_line_exit_2_and_leaves_the_artifact(built, data_files, monkeypatch):
    out, _ = built
    monkeypatch.setattr("edgec.backends.tensorrt_engine.engine_unavailable_reason", lambda: "no CUDA device")
    before = sorted(p.name for p in out.iterdir())
    result = invoke("engine", out, "--data", data_files["pairs"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "pip install" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == before


def test_engine_on_a_non_tensorrt_artifact_is_refused(tiny_models, data_files, tmp_path):
    out = tmp_path / "ort"
    assert (
        invoke(
            "build", tiny_models("bert"), "--precision", "fp32", "--calib", data_files["calib"], "--out", out
        ).exit_code
        == 0
    )
    result = invoke("engine", out, "--data", data_files["calib"])
    assert result.exit_code == 2 and "not a TensorRT artifact" in result.stderr


def test_engine_gates_on_parity_exit_0_or_1(built, data_files, tmp_path, monkeypatch):
    import shutil

    from edgec.backends import tensorrt_engine

    out = tmp_path / "art"
    shutil.copytree(built[0], out)
    fake_engine(monkeypatch)
    passed = invoke("engine", out, "--data", data_files["pairs"])
    assert passed.exit_code == 0 and "PASS" in passed.stdout and (out / "model.engine").exists()
    honest = tensorrt_engine.engine_forward
    monkeypatch.setattr(
        tensorrt_engine, "engine_forward", lambda path: lambda feeds: {k: -v for k, v in honest(path)(feeds).items()}
    )
    failed = invoke("engine", out, "--data", data_files["pairs"])
    assert (
        failed.exit_code == 1
        and "engine parity failed" in failed.stderr
        and len(failed.stderr.strip().splitlines()) == 1
    )
    assert (out / "model.engine.rejected").exists() and json.loads((out / "edgec.json").read_text())["engine"][
        "status"
    ] == "built"


def test_engine_without_data_gates_on_the_golden_sample(built, tmp_path, monkeypatch):
    import shutil

    from edgec.backends import tensorrt_engine

    out = tmp_path / "art"
    shutil.copytree(built[0], out)
    fake_engine(monkeypatch)
    passed = invoke("engine", out)
    assert (
        passed.exit_code == 0
        and "its golden sample: PASS" in " ".join(passed.stdout.split())
        and (out / "model.engine").exists()
    )
    honest = tensorrt_engine.engine_forward
    monkeypatch.setattr(
        tensorrt_engine, "engine_forward", lambda path: lambda feeds: {k: -v for k, v in honest(path)(feeds).items()}
    )
    failed = invoke("engine", out)
    assert failed.exit_code == 1 and "engine parity failed on the golden sample" in failed.stderr


def test_require_engine_fails_clearly_without_a_gpu(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "engine_unavailable_reason", lambda: "tensorrt not installed")
    result = invoke("build", tiny_models("bert"), "--target", "trt-fp16", "--require-engine", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--require-engine" in result.stderr and "tensorrt not installed" in result.stderr
    assert not (tmp_path / "o").exists()


def test_parity_is_simulated_without_an_engine(built, data_files):
    out, _ = built
    result = invoke("parity", out, "--data", data_files["pairs"], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row = report["rows"][0]
    assert report["passed"] and row["simulated"] and row["model"] == "tensorrt-fp16-rounding.onnx"
    assert row["metrics"]["sentence_embedding.max_abs"] >= row["metrics"]["sentence_embedding.median_abs"] >= 0


def test_inspect_shows_the_deferred_engine(built):
    out, _ = built
    result = invoke("inspect", out)
    assert result.exit_code == 0 and "TensorRT engine" in result.stdout and "deferred" in result.stdout


def test_trt_options_on_a_cpu_target_are_refused(tiny_models, tmp_path):
    result = invoke("build", tiny_models("bert"), "--max-seq-len", "64", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "TensorRT targets only" in result.stderr


def test_bench_says_it_did_not_time_an_engine(built):
    out, _ = built
    result = invoke("bench", out, "--runs", "3", "--warmup", "1", "--seq-len", "16")
    assert result.exit_code == 0 and "not engine figures" in result.stdout
