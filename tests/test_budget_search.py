"""Budgeted search in edgec build: the fastest candidate within every budget, or the closest one saved and exit 1."""

import pytest
from typer.testing import CliRunner

import edgec
from edgec import budget_search as search_module
from edgec.budget_search import Budgets, search
from edgec.cli.main import app
from edgec.errors import ConfigError
from edgec.recipe import Recipe
from edgec.running.bench import BenchConfig


def test_excess_is_relative_and_only_for_missed_budgets():
    budgets = Budgets(max_drop=1.0, max_latency_ms=10.0)
    assert budgets.excess(drop=0.5, latency_ms=15.0, size_mb=999.0) == {"max_latency_ms": 0.5}
    assert budgets.excess(drop=2.0, latency_ms=5.0, size_mb=1.0) == {"max_drop": 1.0}
    with pytest.raises(ConfigError, match="--max-size-mb must be >= 0"):
        Budgets(max_size_mb=-1)


@pytest.fixture
def fake_cells(monkeypatch, tmp_path):
    """Candidates from a formula (more pruning: faster, lossier; int8: faster), and a build that writes a folder."""
    measured = []

    def measure(model, target, recipe, *, calib, eval, train, out, bench, load):  # noqa: A002
        fraction = recipe.prune.fraction if recipe.prune else 0.0
        speed = {"fp32": 1.0, "fp16": 1.2, "int8-dynamic": 0.7, "int8": 0.5}[recipe.quant.precision]
        drop, latency = (
            4 * fraction + (0.3 if recipe.quant.precision.startswith("int8") else 0),
            20 * speed * (1 - fraction),
        )
        measured.append((fraction, recipe.quant.precision))
        return {"drop": drop, "latency_ms": latency, "size_mb": 10.0, "error": ""}

    def build(model, target, *, recipe, out, **kwargs):
        out.mkdir(parents=True)
        return recipe

    monkeypatch.setattr(search_module, "measure_cell", measure)
    monkeypatch.setattr(search_module, "build", build)
    return measured


def _search(tiny_models, tmp_path, budgets):
    (tmp_path / "d.txt").write_text("a text\nanother text\n")
    data = edgec.read_dataset(tmp_path / "d.txt")
    return search(
        tiny_models("bert"),
        "ort-x86",
        budgets=budgets,
        recipe=Recipe(),
        calib=data,
        eval=data,
        out=tmp_path / "o",
        bench=BenchConfig(),
        fractions=(0.0, 0.2, 0.4, 0.6),
    )


def test_the_fastest_candidate_within_every_budget_is_built(fake_cells, tiny_models, tmp_path):
    final_recipe, chosen, tried = _search(tiny_models, tmp_path, Budgets(max_drop=1.0, max_latency_ms=15.0))
    feasible = [c for c in tried if not c.over]
    assert chosen.latency_ms == min(c.latency_ms for c in feasible) and (chosen.fraction, chosen.precision) == (
        0.0,
        "int8",
    )
    assert final_recipe.prune is None and final_recipe.quant.precision == "int8"
    assert final_recipe.parity.max_drop is None, "within budget, the final build keeps the user's own thresholds"
    # A precision's scan stops at its first candidate over the drop budget: more pruning only loses more.
    assert (0.6, "fp32") not in fake_cells and (0.4, "fp32") in fake_cells


def test_impossible_budgets_save_the_closest_candidate(fake_cells, tiny_models, tmp_path):
    final_recipe, chosen, tried = _search(tiny_models, tmp_path, Budgets(max_drop=1.0, max_latency_ms=1.0))
    assert all(c.over for c in tried) and "max_latency_ms" in chosen.over
    assert sum(chosen.over.values()) == min(sum(c.over.values()) for c in tried), (
        "the closest: least total relative excess"
    )
    assert (tmp_path / "o").is_dir() and final_recipe.parity.max_drop == 1000.0  # saved as measured, not gated
    message = search_module.unmet_message(chosen, tried, tmp_path / "o")
    assert "no candidate met --max-latency-ms" in message and str(tmp_path / "o") in message


def test_build_with_a_budget_runs_edgec_search_with_the_same_options(tiny_models, data_files, tmp_path, monkeypatch):
    """The `edgec build --max-latency-ms` alias hands its options to `edgec search` (whose runs
    tests/cli/test_search_cli.py checks end to end) instead of building once."""
    from edgec.cli import build as build_command

    calls = []
    monkeypatch.setattr(build_command, "run_search", lambda *args: calls.append(args))
    monkeypatch.setattr(build_command, "build_artifact", lambda *a, **k: pytest.fail("a budgeted build must search"))
    args = ["build", str(tiny_models("bert")), "--precision", "int8", "--search-prune", "0,0.5"]
    out = tmp_path / "a"
    result = CliRunner().invoke(app, [*args, "--max-latency-ms", "1000", "--max-drop", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [(model, given_out, options, limits)] = calls
    assert (model, given_out) == (str(tiny_models("bert")), out)
    assert options.recipe().quant.precision == "int8"
    assert (limits.search_prune, limits.max_latency_ms, options.thresholds.max_drop) == ("0,0.5", 1000.0, 100.0)


def test_search_refuses_targets_it_cannot_time(tiny_models, tmp_path):
    (tmp_path / "d.txt").write_text("a text\n")
    data = edgec.read_dataset(tmp_path / "d.txt")
    with pytest.raises(ConfigError, match="not an ONNX Runtime target"):
        search(
            tiny_models("bert"),
            "trt-fp16",
            budgets=Budgets(max_latency_ms=1),
            recipe=Recipe(),
            calib=data,
            eval=data,
            out=tmp_path / "o",
            bench=BenchConfig(),
        )
