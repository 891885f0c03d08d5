"""edgec sweep: the grid built and measured, the Pareto front marked, the table and plot written."""

import csv

import pytest
from typer.testing import CliRunner

import edgec
from edgec.cli.main import app
from edgec.errors import ConfigError
from edgec.ops.frontier import pareto_front
from edgec.running.bench import BenchConfig
from edgec.sweep import COLUMNS, sweep


def test_pareto_front_keeps_points_nothing_beats():
    # (latency, accuracy): the 2nd is slower and worse than the 1st; the 4th ties the 3rd on cost but is worse.
    points = [(1.0, 80.0), (2.0, 79.0), (3.0, 85.0), (3.0, 84.0), (0.5, 70.0)]
    assert pareto_front(points) == [True, False, True, False, True]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [True, True]  # equal points do not beat each other


def test_sweep_builds_every_cell_and_writes_table_and_plot(tiny_models, data_files, tmp_path):
    pairs = edgec.read_dataset(data_files["pairs"])
    rows = sweep(
        tiny_models("bert"),
        "ort-x86",
        fractions=[0.0, 0.5],
        precisions=["fp32", "int8"],
        calib=pairs,
        eval=pairs,
        out=tmp_path / "sw",
        bench=BenchConfig(seq_len=16, warmup=1, runs=5),
    )
    assert [r["name"] for r in rows] == ["prune0-fp32", "prune0-int8", "prune0.5-fp32", "prune0.5-int8"]
    assert all(r["metric"] == "spearman" and r["latency_ms"] > 0 and r["size_mb"] > 0 for r in rows)
    assert rows[0]["drop"] == pytest.approx(0.0, abs=0.05)  # the unpruned fp32 cell is the reference itself
    assert any(r["pareto"] for r in rows)
    with open(tmp_path / "sw" / "sweep.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and tuple(table[0]) == COLUMNS
    markdown = (tmp_path / "sw" / "sweep.md").read_text()
    assert markdown.count("**yes**") == sum(r["pareto"] for r in rows)
    assert (tmp_path / "sw" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all((tmp_path / "sw" / "artifacts" / r["name"] / "edgec.json").exists() for r in rows)


def test_bad_grids_are_refused_before_any_build(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match="prune fraction"):
        sweep(
            tiny_models("bert"),
            "ort-x86",
            fractions=[0.0, 1.0],
            precisions=["fp32"],
            calib=None,
            eval=None,
            out=tmp_path / "sw",
            bench=BenchConfig(),
        )
    result = CliRunner().invoke(
        app, ["sweep", str(tiny_models("bert")), "--prune", "0,half", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "comma-separated numbers" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_sweep_command(tiny_models, data_files, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(tiny_models("bert")),
            "--prune",
            "0",
            "--precision",
            "fp32",
            "--calib",
            str(data_files["calib"]),
            "--runs",
            "3",
            "--seq-len",
            "8",
            "--out",
            str(tmp_path / "sw"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "prune0-fp32" in result.stdout and (tmp_path / "sw" / "sweep.md").exists()
