"""predict.py in every ONNX Runtime artifact: runs with onnxruntime, tokenizers and numpy alone, agrees with the
tokenization the build verified with, and on emulated aarch64 computes what it computes here."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import onnxruntime as ort
import pytest
from conftest import invoke

import edgec

TEXTS = ["the movie was really good", "the food was cold and the service slow", "a small edge device is fast"]
# Runs predict.py as a device would: any import of torch, transformers or edgec fails.
NO_TORCH = """import runpy, sys
for name in ("torch", "transformers", "edgec", "optimum"):
    sys.modules[name] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def embedder(tiny_models, data_files, tmp_path_factory):
    return edgec.build(
        tiny_models("bert"),
        "ort-arm64",
        calib=edgec.read_dataset(data_files["calib"]),
        eval=edgec.read_dataset(data_files["pairs"]),
        out=tmp_path_factory.mktemp("runner") / "emb",
    )


@pytest.fixture(scope="module")
def classifier(tiny_models, data_files, tmp_path_factory):
    return edgec.build(
        tiny_models("bert", "sequence-classification"),
        "ort-x86",
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="fp32")),
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path_factory.mktemp("runner") / "cls",
    )


def device_run(artifact, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(artifact.path / "predict.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_runner_and_its_pinned_requirements_ship_with_the_artifact(embedder):
    assert {"predict.py", "requirements.txt"} <= set(embedder.manifest.files)
    pins = (embedder.path / "requirements.txt").read_text().split()
    assert pins == [f"{name}=={metadata.version(name)}" for name in ("onnxruntime", "tokenizers", "numpy")]
    assert embedder.manifest.stages.emit.runner == "predict.py"


def test_predict_py_needs_no_torch_and_matches_the_verified_tokenization(embedder):
    done = device_run(embedder, "--json", *TEXTS)
    assert done.returncode == 0, done.stderr
    printed = np.asarray(json.loads(done.stdout)["outputs"]["sentence_embedding"], dtype=np.float32)
    encoded = embedder.tokenizer()(
        TEXTS, padding=True, truncation=True, max_length=embedder.manifest.recipe.max_length, return_tensors="np"
    )
    session = ort.InferenceSession(str(embedder.model_path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    (expected,) = session.run(
        ["sentence_embedding"], {k: v.astype(np.int64) for k, v in encoded.items() if k in inputs}
    )
    assert printed.shape == (3, 32) and np.abs(printed - expected).max() < 1e-5
    # The graph also returns last_hidden_state (for sentence-transformers and Optimum); the runner leaves it out.
    assert "last_hidden_state" in {o.name for o in session.get_outputs()}
    assert set(json.loads(done.stdout)["outputs"]) == {"sentence_embedding"}


def test_the_runner_knows_each_tasks_outputs_as_edgec_does():
    from edgec.running.device_predict import _OUTPUTS
    from edgec.source import OUTPUT_NAMES

    assert _OUTPUTS == OUTPUT_NAMES  # predict.py is standalone: it keeps its own copy


def test_predict_py_reads_stdin_and_names_the_classifiers_labels(classifier):
    done = device_run(classifier, stdin="\n".join(TEXTS) + "\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and all("label=" in line and "probability=" in line for line in lines)
    assert device_run(classifier, stdin="").returncode == 2


def test_edgec_run_is_the_runner_on_this_host(classifier):
    result = invoke("run", classifier.path, "--json", *TEXTS[:2])
    assert result.exit_code == 0, result.output
    done = device_run(classifier, "--json", *TEXTS[:2])
    ours, device = json.loads(result.stdout)["outputs"]["logits"], json.loads(done.stdout)["outputs"]["logits"]
    assert np.allclose(ours, device, atol=1e-6)


@pytest.mark.slow
def test_predict_py_on_emulated_aarch64_agrees_with_this_host(arm64_runtime, embedder, data_files):
    versions = (arm64_runtime / "versions.txt").read_text()
    assert f"tokenizers {metadata.version('tokenizers')}" in versions and "torch" not in versions
    result = invoke(
        "verify",
        embedder.path,
        "--emulate",
        "aarch64",
        "--runner",
        "--data",
        data_files["pairs"],
        "--samples",
        6,
        "--json",
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["passed"] and row["stage"].startswith("predict.py: aarch64") and row["metrics"]["cosine_min"] > 0.999
