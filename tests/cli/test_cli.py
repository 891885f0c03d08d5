"""Every command through typer's runner, including the bad-input contract: one line, exit 2, no output."""

import json

import numpy as np
import onnx
import pytest
from conftest import invoke
from onnx import numpy_helper

import edgec


@pytest.fixture(scope="module")
def built(tiny_models, data_files, tmp_path_factory):
    """An int8 artifact of the tiny BERT embedder, built through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "art"
    result = invoke(
        "build",
        tiny_models("bert"),
        "--target",
        "ort-x86",
        "--precision",
        "int8",
        "--calib",
        data_files["calib"],
        "--eval",
        data_files["pairs"],
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "parity ledger" in result.stdout and "passed" in result.stdout
    return out


def test_targets_lists_profiles():
    result = invoke("targets", "--verbose")
    assert (
        result.exit_code == 0
        and "ort-x86" in result.stdout
        and "ort-arm64" in result.stdout
        and "min_cosine" in result.stdout
    )


def test_parity_passes_and_prints_json(built, data_files):
    result = invoke("parity", built, "--data", data_files["pairs"], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["rows"][0]["metrics"]["cosine_mean"] > 0.98 and report["failures"] == []


def test_parity_gate_fails_on_a_damaged_artifact(built, data_files, tmp_path):
    import shutil

    damaged = shutil.copytree(built, tmp_path / "damaged")
    model = onnx.load(str(damaged / "model.onnx"))
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:  # scramble the float biases: the graph still runs, the outputs drift
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.ndim == 1 and values.size >= 32:
            tensor.CopyFrom(numpy_helper.from_array(rng.normal(size=values.shape).astype(np.float32) * 3, tensor.name))
    onnx.save(model, str(damaged / "model.onnx"))
    result = invoke("parity", damaged, "--data", data_files["pairs"])
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "model.onnx" in result.output  # names the changed file too


def test_bench_with_pytorch_baseline(built):
    result = invoke("bench", built, "--runs", 5, "--warmup", 1, "--seq-len", 16, "--baseline", "pytorch", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    runtimes = [r["runtime"] for r in report["results"]]
    assert runtimes == ["onnxruntime", "pytorch fp32"]
    assert all(r["p50_ms"] > 0 and r["peak_rss_mb"] > 0 for r in report["results"]) and report["speedup_vs_pytorch"] > 0


def test_bench_table(built):
    result = invoke("bench", built, "--runs", 3, "--warmup", 0, "--seq-len", 8)
    assert result.exit_code == 0 and "p50 ms" in result.stdout


def test_bench_profile_shows_where_the_time_goes(built):
    result = invoke("bench", built, "--runs", 4, "--warmup", 1, "--seq-len", 16, "--profile", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    operators = {o["op_type"]: o for o in report["profile"]["operators"]}
    assert {"MatMulIntegerToFloat", "MultiHeadAttention"} <= set(operators), (
        "ORT fused the Q/DQ MatMuls; the attention is fused"
    )
    assert sum(o["share"] for o in operators.values()) == pytest.approx(1.0) and len(report["profile"]["nodes"]) == 10
    assert (
        report["host"]["instruction_set"] and report["session"]["intra_op_threads"] == 0
    )  # the artifact's own settings
    table = invoke("bench", built, "--runs", 3, "--warmup", 1, "--seq-len", 8, "--profile", "--threads", 1)
    assert table.exit_code == 0 and "time per operator type" in table.stdout and "slowest nodes" in table.stdout


def test_bench_tune_records_the_chosen_settings_for_run_and_bench(built, tmp_path, monkeypatch):
    import shutil

    import edgec.cli.bench as bench_command

    tuned = shutil.copytree(built, tmp_path / "tuned")
    # The tuning logic is tested in test_tuning; here a fake clock makes spinning off and one thread the winners.
    fake = lambda path, vocab, config: lambda s: 5.0 * s.intra_op_threads * (1.0 if not s.allow_spinning else 1.5)  # noqa: E731
    monkeypatch.setattr(bench_command, "onnx_latency", fake)
    result = invoke("bench", tuned, "--runs", 3, "--warmup", 1, "--seq-len", 8, "--tune", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tuning"]["chosen"]["intra_op_threads"] == 1 and report["tuning"]["chosen"]["allow_spinning"] is False
    manifest = json.loads((tuned / "edgec.json").read_text())
    assert (
        manifest["session"]["settings"] == report["tuning"]["chosen"]
        and "edgec bench --tune" in manifest["session"]["chosen_by"]
    )
    assert report["session"] == report["tuning"]["chosen"], "the benchmark itself ran with the tuned settings"
    assert "every file matches" in invoke("inspect", tuned).stdout, "the manifest changed, the files it hashes did not"
    again = json.loads(invoke("bench", tuned, "--runs", 2, "--warmup", 0, "--seq-len", 8, "--json").stdout)
    assert again["session"]["allow_spinning"] is False
    assert invoke("bench", tuned, "--tune", "--threads", 2).exit_code == 2


def test_inspect(built):
    result = invoke("inspect", built)
    assert result.exit_code == 0
    for text in ("operators", "DequantizeLinear", "parity ledger", "every file matches"):
        assert text in result.stdout
    manifest = json.loads(invoke("inspect", built, "--json").stdout)["manifest"]
    assert manifest["precision"] == "int8" and "onnxruntime" in manifest["versions"]


def test_run_embeddings(built):
    result = invoke("run", built, "the movie was good", "the film was great")
    assert result.exit_code == 0 and "cosine(text 1, text 2)" in result.stdout
    vectors = json.loads(invoke("run", built, "hello", "--json").stdout)["outputs"]["sentence_embedding"]
    assert len(vectors) == 1 and abs(np.linalg.norm(vectors[0]) - 1) < 1e-3


def test_run_classifier(tiny_models, data_files, tmp_path):
    out = tmp_path / "cls"
    assert (
        invoke(
            "build",
            tiny_models("bert", "sequence-classification"),
            "--precision",
            "fp32",
            "--eval",
            data_files["labels"],
            "--out",
            out,
        ).exit_code
        == 0
    )
    result = invoke("run", out, "we love this phone")
    assert result.exit_code == 0 and "LABEL_" in result.stdout


def _assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def broken_models(tiny_models, tmp_path):
    import shutil

    def copy(name):
        return shutil.copytree(tiny_models("bert"), tmp_path / name)

    no_config = copy("no_config")
    (no_config / "config.json").unlink()
    truncated = copy("truncated")
    (truncated / "model.safetensors").write_bytes(b"\x00" * 100)
    unsupported = copy("unsupported")
    config = json.loads((unsupported / "config.json").read_text())
    (unsupported / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    return {"missing": tmp_path / "nowhere", "no_config": no_config, "truncated": truncated, "unsupported": unsupported}


@pytest.mark.parametrize(
    "case, extra, needle",
    [
        ("missing", [], "does not exist"),
        ("no_config", [], "no config.json"),
        ("truncated", [], "weights do not load"),
        ("unsupported", [], "not supported"),
        ("good", ["--task", "summarization"], "unknown task"),
        ("good", ["--target", "tpu"], "unknown target"),
        ("good", ["--precision", "int3"], "unknown precision"),
        ("good", ["--calibration", "magic"], "unknown calibration"),
    ],
)
def test_build_bad_input(broken_models, tiny_models, tmp_path, case, extra, needle):
    model = tiny_models("bert") if case == "good" else broken_models[case]
    result = invoke("build", model, "--out", tmp_path / "out", *extra)
    _assert_one_line_error(result, needle)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("empty.txt", "", "no examples"),
        ("bad.jsonl", "{nope\n", "not valid JSON"),
        ("x.csv", "a,b\n1,2\n", "not in the header"),
    ],
)
def test_build_bad_data(tiny_models, tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    _assert_one_line_error(invoke("build", tiny_models("bert"), "--calib", path, "--out", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


def test_build_output_problems(tiny_models, tmp_path):
    (tmp_path / "exists").mkdir()
    _assert_one_line_error(invoke("build", tiny_models("bert"), "--out", tmp_path / "exists"), "--force")
    (tmp_path / "file").write_text("x")
    _assert_one_line_error(invoke("build", tiny_models("bert"), "--out", tmp_path / "file" / "sub"), "cannot create")


def test_other_commands_bad_input(tmp_path, built):
    _assert_one_line_error(invoke("inspect", tmp_path), "not an edgec artifact")
    _assert_one_line_error(invoke("run", tmp_path, "x"), "not an edgec artifact")
    _assert_one_line_error(invoke("parity", built, "--data", tmp_path / "none.jsonl"), "does not exist")
    _assert_one_line_error(invoke("bench", built, "--baseline", "tensorflow"), "unknown --baseline")
    _assert_one_line_error(invoke("run", built, "a", "--pair", "b", "--pair", "c"), "--pair")


def test_build_prunes_on_its_own_calibration_count_not_quantizations(tiny_models, tmp_path):
    """Pruning draws PruneConfig.calib_samples texts (1,024) from --calib, more than quantization's 256: the CLI
    must not cut the file to quantization's count before pruning sees it."""
    words = ["river", "stone", "light", "quiet", "music", "garden", "winter", "paper", "window", "morning"]
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.txt"
    calib.write_text("".join(" ".join(rng.choice(words, size=6)) + "\n" for _ in range(300)))
    out = tmp_path / "out"
    result = invoke("build", tiny_models("bert"), "--prune", "0.3", "--calib", calib, "--out", out)
    assert result.exit_code == 0, result.output
    assert edgec.load_artifact(out).manifest.stages.prune.calibration_texts == 300
