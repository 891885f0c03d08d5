"""`make test-deep`: all-MiniLM-L6-v2 on the device paths of issue 18 (minutes each; skipped where the model, the data
or the aarch64 runtime is absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke

import edgec
from edgec.running.device_check import check_runner_emulated

pytestmark = [pytest.mark.deep, pytest.mark.real_model]
TEXTS = [
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "Two dogs run across the snowy field.",
    "The stock market fell sharply today.",
]


@pytest.fixture(scope="module")
def sts_pairs(sts_test) -> edgec.Dataset:
    return edgec.read_dataset(sts_test)


def test_arm64_minilm_int8_predict_py_on_emulated_aarch64_agrees_with_edgec_run(
    arm64_runtime, minilm, sts_pairs, tmp_path
):
    """check_runner_emulated compares predict.py under qemu with edgec run's own code (device_predict.Predictor) here."""
    assert "torch" not in (arm64_runtime / "versions.txt").read_text()
    artifact = edgec.build(
        minilm,
        "ort-arm64",
        eval=edgec.Dataset(sts_pairs.examples[:100], "sts-test (first 100)"),
        out=tmp_path / "arm64",
    )
    assert artifact.manifest.precision == "int8" and artifact.manifest.parity.passed
    row = check_runner_emulated(artifact, sts_pairs, samples=64)  # 128 sentences through predict.py under qemu
    assert row.passed and row.metrics["cosine_min"] > 0.999, row.metrics
    result = invoke("run", artifact.path, "--json", *TEXTS)
    assert result.exit_code == 0, result.output
    on_x86 = np.asarray(json.loads(result.stdout)["outputs"]["sentence_embedding"])
    assert on_x86.shape == (4, 384)


def test_minilm_coreml_graph_is_one_partition(minilm, sts_pairs, tmp_path):
    artifact = edgec.build(
        minilm,
        "mobile",
        eval=edgec.Dataset(sts_pairs.examples[:100], "sts-test (first 100)"),
        out=tmp_path / "c.zip",
        mobile={"accelerator": "coreml", "fixed_batch": 1, "fixed_seq": 128},
    )
    report = json.loads((artifact.path / "mobile_usability.json").read_text())["accelerator"]
    assert report["partitions"] == 1 and report["suitability"] == "YES" and artifact.manifest.parity.passed
    assert [n["op"] for n in report["remaining_nodes"]] == ["Gather"]
