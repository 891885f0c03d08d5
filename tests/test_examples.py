"""Every example runs (on the default model where installed, on a tiny model otherwise)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, minilm_path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tiny_models, tmp_path):
    command = [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path / "demo"),
               "--eval-pairs", "300", "--runs", "10", "--summary", str(tmp_path / "summary.json")]
    if minilm_path() is None:
        command += ["--model", str(tiny_models("bert"))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "edgec demo" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and summary["p50_ms"] > 0 and summary["model_mb"] > 0


def test_clinc150_classifier_runs(minilm, tmp_path):
    """A head on 4 texts per intent: the folder reloads as a 150-way classifier, well above chance (1/150)."""
    data = SHARED_DATA / "clinc150" / "data_full.json"
    if not data.exists():
        pytest.skip(f"CLINC150 not found at {data}")
    out, data_out = tmp_path / "clinc150", tmp_path / "clinc150-data"
    command = [sys.executable, str(ROOT / "examples" / "clinc150_classifier.py"), "--model", str(minilm),
               "--out", str(out), "--max-train", "4", "--max-test", "150", "--steps", "50",
               "--summary", str(tmp_path / "summary.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_texts"] == 600 and summary["test_texts"] == 150 and summary["labels"] == 150
    assert summary["accuracy"] > 30.0 and summary["logit_gap"] < 1e-3

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 150 and len(model.config.id2label) == 150
    assert [model.config.id2label[i] for i in range(150)] == sorted(model.config.label2id)
    rows = [json.loads(line) for line in (data_out / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 150
    assert all(set(row) == {"text", "label"} and row["label"] in model.config.label2id for row in rows)
    assert len((data_out / "train.txt").read_text().splitlines()) == 600
    assert not (out / "test.jsonl").exists()


def test_clinc150_classifier_rejects_bad_data(tmp_path):
    """A missing or malformed data file is one line on stderr and exit code 2, before any model loads."""
    bad = tmp_path / "data_full.json"
    bad.write_text(json.dumps({"train": [["only a text"]], "test": []}))
    script = str(ROOT / "examples" / "clinc150_classifier.py")
    for data in (tmp_path / "missing.json", bad):
        result = subprocess.run([sys.executable, script, "--out", str(tmp_path / "m"), "--data", str(data)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


def test_train_large_then_compress_runs(tiny_models, data_files, tmp_path):
    """The proof's whole path on two tiny models: fine-tune both, sweep both, one chart and a verdict."""
    command = [sys.executable, str(ROOT / "examples" / "train_large_then_compress.py"), "--small", str(tiny_models("bert")),
               "--large", str(tiny_models("roberta")), "--train", str(data_files["labels"]), "--dev", str(data_files["labels"]),
               "--text-column", "text", "--minutes", "1", "--steps", "6", "--eval-every", "3", "--prune", "0,0.5",
               "--precision", "fp32", "--runs", "3", "--seq-len", "8", "--out", str(tmp_path / "proof")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    proof = json.loads((tmp_path / "proof" / "proof.json").read_text())
    assert len(proof["small"]["artifacts"]) == len(proof["large"]["artifacts"]) == 2
    assert proof["verdict"]["small_best"] in {r["name"] for r in proof["small"]["artifacts"]}
    assert (tmp_path / "proof" / "proof.png").read_bytes()[:4] == b"\x89PNG" and "chart:" in result.stdout
