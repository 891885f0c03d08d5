"""`edgec prune` and `edgec build --prune/--distill` through typer's runner, and bad budgets (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import _assert_one_line_error, invoke


def test_prune_writes_a_folder_transformers_loads(tiny_models, data_files, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "pruned"
    result = invoke("prune", tiny_models("bert"), "--prune", "0.5", "--calib", data_files["calib"], "--out", out)
    assert result.exit_code == 0, result.output
    assert "heads kept per layer" in result.stdout and "prune" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["edgec_pruning"]["fraction"] == 0.5 and (out / "modules.json").exists()
    model, tokenizer = AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(["the movie was really good"], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**encoded).last_hidden_state).all()
    built = invoke("build", out, "--precision", "fp32", "--calib", data_files["calib"], "--out", tmp_path / "art")
    assert built.exit_code == 0, built.output


def test_prune_whole_layers_writes_a_shallower_folder(tiny_models, data_files, tmp_path):
    from transformers import AutoConfig

    out = tmp_path / "pruned"
    result = invoke(
        "prune",
        tiny_models("bert"),
        "--prune",
        "0.5",
        "--prune-units",
        "layers",
        "--calib-samples",
        "8",
        "--calib",
        data_files["calib"],
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "layers removed" in result.stdout
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 1
    pruning = json.loads((out / "config.json").read_text())["edgec_pruning"]
    assert len(pruning["layers_removed"]) == 1


def test_build_with_prune_and_distill_shows_both_rows(tiny_models, data_files, tmp_path):
    result = invoke(
        "build",
        tiny_models("distilbert"),
        "--precision",
        "fp32",
        "--prune",
        "0.4",
        "--distill",
        data_files["calib"],
        "--distill-steps",
        "4",
        "--calib",
        data_files["calib"],
        "--eval",
        data_files["pairs"],
        "--max-drop",
        "100",
        "--min-cosine",
        "0",
        "--out",
        tmp_path / "art",
    )
    assert result.exit_code == 0, result.output
    ledger = json.loads((tmp_path / "art" / "edgec.json").read_text())["parity"]["ledger"]
    assert [row["stage"] for row in ledger][:3] == ["prune", "distill", "export"]
    assert "encoder MACs per text" in result.stdout


def test_prune_with_distillation_reports_the_run(tiny_models, data_files, tmp_path):
    result = invoke(
        "prune",
        tiny_models("bert"),
        "--prune",
        "0.4",
        "--distill",
        data_files["calib"],
        "--distill-steps",
        "3",
        "--calib",
        data_files["calib"],
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    assert "3 steps in" in result.stdout and "distill" in result.stdout


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--prune", "0"], "--prune must be in (0, 1)"),
        (["--prune", "-0.2"], "--prune must be in (0, 1)"),
        (["--prune", "1"], "prune fraction must be in [0, 1)"),
        (["--prune", "1.5"], "prune fraction must be in [0, 1)"),
        (["--prune", "0.99999"], "too small to keep any"),
        (["--prune", "0.5", "--prune-units", "neurons"], "prune units must be some of heads, ffn, layers"),
        (["--prune", "0.9", "--prune-units", "heads"], "with attention heads alone"),
        (["--distill-steps", "5"], "nothing to do"),
    ],
)
def test_bad_budgets_are_one_line_errors(tiny_models, data_files, tmp_path, extra, needle):
    result = invoke("prune", tiny_models("bert"), "--calib", data_files["calib"], "--out", tmp_path / "out", *extra)
    _assert_one_line_error(result, needle)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_build_rejects_a_bad_budget_before_any_work(tiny_models, tmp_path):
    _assert_one_line_error(
        invoke("build", tiny_models("bert"), "--prune", "2", "--out", tmp_path / "out"), "prune fraction"
    )
    assert not (tmp_path / "out").exists()
