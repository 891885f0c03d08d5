"""Every example runs (on the default model where installed, on a tiny model otherwise)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, minilm_path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tiny_models, tmp_path):
    command = [
        sys.executable,
        str(ROOT / "examples" / "quickstart.py"),
        "--out",
        str(tmp_path / "demo"),
        "--eval-pairs",
        "300",
        "--runs",
        "10",
        "--summary",
        str(tmp_path / "summary.json"),
    ]
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
    command = [
        sys.executable,
        str(ROOT / "examples" / "clinc150_classifier.py"),
        "--model",
        str(minilm),
        "--out",
        str(out),
        "--max-train",
        "4",
        "--max-test",
        "150",
        "--steps",
        "50",
        "--summary",
        str(tmp_path / "summary.json"),
    ]
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
        result = subprocess.run(
            [sys.executable, script, "--out", str(tmp_path / "m"), "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


# Two fine-tunes, a compression and timed rounds in a subprocess (~35 s): `make test-deep`. The verdict's logic is
# checked in `make test` by the test_proof_verdict_* tests below.
@pytest.mark.deep
def test_train_large_then_compress_runs(tiny_models, data_files, tmp_path):
    """The proof's whole path on two tiny models: both families under one budget, both int8, timed, a verdict."""
    command = [
        sys.executable,
        str(ROOT / "examples" / "train_large_then_compress.py"),
        "--small",
        str(tiny_models("bert")),
        "--large",
        str(tiny_models("mpnet")),
        "--train",
        str(data_files["labels"]),
        "--validation",
        str(data_files["labels"]),
        "--dev",
        str(data_files["labels"]),
        "--budget-minutes",
        "0.3",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--prune",
        "0.5",
        "--hidden-size",
        "16",
        "--runs",
        "3",
        "--rounds",
        "2",
        "--seq-len",
        "8",
        "--out",
        str(tmp_path / "proof"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    proof = json.loads((tmp_path / "proof" / "proof.json").read_text())
    names = [r["name"] for r in proof["artifacts"]]
    assert names == ["small finetuned int8", "large finetuned int8", "large compressed int8"]
    large = proof["families"]["large"]
    assert large["compress"]["hidden_after"] == 16 and large["compress"]["distill"]["steps"] >= 1
    assert large["compress"]["macs_after"] <= 0.5 * large["compress"]["macs_before"] * 1.0001
    assert proof["verdict"]["small"] == "small finetuned int8"
    assert proof["verdict"]["outcome"] in ("shown", "not shown", "no artifact fast enough")
    assert all(len(r["latency_rounds"]) == 2 for r in proof["artifacts"])
    assert (tmp_path / "proof" / "proof.png").read_bytes()[:4] == b"\x89PNG" and "chart:" in result.stdout
    assert all(r["latency_ms"] == min(r["latency_rounds"]) for r in proof["artifacts"])  # the fastest round
    # RESULTS.md's section is rendered from this record by benchmarks/proof_sst2.py, with the example's verdict.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import proof_sst2

    section = proof_sst2.markdown(proof)
    assert proof_sst2.proof.sentence(proof["verdict"]) in section and proof["machine"]["model"] in section
    assert "| large | " in section and "hidden 16" in section and "teacher cache" in section


def test_proof_timing_before_a_family_ran_fails_in_one_line(tmp_path):
    """--time on a folder where no family has run: exit 2, one line naming the family and the fix, no proof.json."""
    absent = str(tmp_path / "absent")
    out = tmp_path / "proof"
    command = [sys.executable, str(ROOT / "examples" / "train_large_then_compress.py"), "--time", "--out", str(out)]
    for flag in ("--small", "--large", "--train", "--validation", "--dev"):
        command += [flag, absent]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {out} holds no finished small family (small/family.json): run it with --family small first"
    )
    assert not (out / "proof.json").exists()


def _proof_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("proof", ROOT / "examples" / "train_large_then_compress.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(family, name, value, latency, validation=None):
    """An artifact row; validation (what the verdict chooses on) defaults to its dev accuracy (`value`)."""
    return {
        "family": family,
        "name": name,
        "value": value,
        "latency_ms": latency,
        "validation": value if validation is None else validation,
    }


SMALL = [_row("small", "small int8", 88.0, 4.0), _row("small", "small pruned int8", 85.0, 3.0)]


def test_the_large_model_takes_the_small_ones_width_and_depth_unless_told(tiny_models):
    proof = _proof_module()
    small = tiny_models("bert")  # hidden 32, 2 layers
    assert proof.large_shape(small, ("heads", "ffn", "layers", "hidden"), None, None) == (32, 2)
    assert proof.large_shape(small, ("heads", "ffn", "layers", "hidden"), 16, 1) == (16, 1)
    assert proof.large_shape(small, ("heads", "ffn"), None, None) == (None, None)


def test_proof_verdict_claim_shown():
    """The small family's most accurate artifact sets the latency; the best large artifact at least as fast wins."""
    large = [
        _row("large", "large int8", 92.0, 20.0),
        _row("large", "large 0.88", 89.0, 3.9),
        _row("large", "large 0.92", 88.2, 2.5),
    ]
    v = _proof_module().verdict(SMALL, large)
    assert (v["small"], v["latency_ms"], v["large"], v["outcome"]) == ("small int8", 4.0, "large 0.88", "shown")
    assert v["difference"] == pytest.approx(1.0) and v["target_met"]


def test_proof_verdict_chooses_on_validation_never_on_dev():
    """Of two artifacts fast enough, the one better on validation is compared, though the other scores more on dev."""
    large = [_row("large", "large 0.88", 90.0, 3.9, validation=93.0), _row("large", "large 0.9", 91.0, 3.5, 92.0)]
    small = [_row("small", "small int8", 88.0, 4.0, 95.0), _row("small", "small 0.5", 89.0, 3.0, 94.0)]
    v = _proof_module().verdict(small, large)
    assert (v["small"], v["large"], v["large_accuracy"]) == ("small int8", "large 0.88", 90.0)
    assert v["difference"] == pytest.approx(2.0)


def test_proof_verdict_claim_not_shown():
    large = [_row("large", "large int8", 92.0, 20.0), _row("large", "large 0.88", 87.9, 4.0)]
    v = _proof_module().verdict(SMALL, large)
    assert (v["large"], v["outcome"], v["target_met"]) == ("large 0.88", "not shown", False)
    assert v["difference"] == pytest.approx(-0.1)
    shown_but_short = _proof_module().verdict(SMALL, [_row("large", "large 0.88", 88.3, 3.0)])
    assert shown_but_short["outcome"] == "shown" and not shown_but_short["target_met"]


def test_proof_verdict_no_artifact_fast_enough():
    large = [_row("large", "large int8", 92.0, 20.0), _row("large", "large 0.88", 95.0, 4.01)]
    v = _proof_module().verdict(SMALL, large)
    assert (v["outcome"], v["large"], v["target_met"], v["fastest_large"]) == (
        "no artifact fast enough",
        None,
        False,
        "large 0.88",
    )
