"""`edgec search`: the budgeted search as its own command, on a tiny random model; bad input is one line, exit 2."""

from __future__ import annotations

import json

from test_cli import _assert_one_line_error, invoke


def _search(tiny_models, data_files, out, *budgets):
    return invoke(
        "search",
        tiny_models("bert"),
        "--precision",
        "int8",
        "--search-prune",
        "0,0.5",
        "--seq-len",
        "16",
        "--calib",
        data_files["pairs"],
        "--eval",
        data_files["pairs"],
        "--out",
        out,
        *budgets,
    )


def test_search_builds_the_fastest_candidate_within_the_budgets(tiny_models, data_files, tmp_path):
    result = _search(tiny_models, data_files, tmp_path / "a", "--max-latency-ms", "1000", "--max-drop", "100")
    assert result.exit_code == 0, result.output
    assert "budgeted search" in result.stdout and "prune 0.5, int8" in result.stdout and "<-" in result.stdout
    assert "parity ledger" in result.stdout, "the chosen artifact's summary follows the table"
    manifest = json.loads((tmp_path / "a" / "edgec.json").read_text())
    assert manifest["precision"] == "int8"


def test_search_saves_the_closest_candidate_and_exits_1_when_none_meets_the_budgets(tiny_models, data_files, tmp_path):
    result = _search(tiny_models, data_files, tmp_path / "b", "--max-size-mb", "0.000001")
    assert result.exit_code == 1 and "no candidate met --max-size-mb" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "b" / "edgec.json").exists(), "the closest candidate is saved"


def test_search_needs_a_latency_or_size_budget(tiny_models, data_files, tmp_path):
    _assert_one_line_error(
        _search(tiny_models, data_files, tmp_path / "c", "--max-drop", "1"), "--max-latency-ms and/or --max-size-mb"
    )
    assert not (tmp_path / "c").exists()


def test_search_refuses_bad_input_before_any_work(tiny_models, data_files, tmp_path):
    out = tmp_path / "d"
    _assert_one_line_error(
        _search(tiny_models, data_files, out, "--max-latency-ms", "5", "--target", "trt-fp16"),
        "not an ONNX Runtime target",
    )
    _assert_one_line_error(
        _search(tiny_models, data_files, out, "--max-latency-ms", "5", "--search-prune", "0,half"),
        "--search-prune takes comma-separated numbers",
    )
    _assert_one_line_error(_search(tiny_models, data_files, out, "--max-size-mb", "-1"), "--max-size-mb must be >= 0")
    _assert_one_line_error(
        _search(tiny_models, data_files, out, "--max-size-mb", "1", "--ray-address", "auto"),
        "--ray-address needs --ray",
    )
    assert not out.exists() and not list(tmp_path.glob(".d.*"))
