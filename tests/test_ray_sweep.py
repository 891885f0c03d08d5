"""edgec sweep --ray on a local Ray instance: the same rows and artifacts as the serial sweep, a failed cell retried once
and then reported while the others finish, and the budgeted search keeping the same candidates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import invoke

import edgec
from edgec.budget_search import Budgets, search
from edgec.ray_sweep import RayCluster, run_on_ray
from edgec.running.bench import BenchConfig
from edgec.sweep import CellJob, build_cell, sweep

ray = pytest.importorskip("ray", reason="pip install 'edgec[ray]'")
# Every check here starts a local Ray instance and sweeps twice (~1 min or more on 2 cores), so all run in
# `make test-deep`; `make test` keeps the serial sweep (tests/test_sweep.py), which Ray's rows are compared with here.
pytestmark = pytest.mark.deep
BENCH = BenchConfig(seq_len=16, threads=1, warmup=1, runs=5)
GRID = {"fractions": [0.0, 0.5], "precisions": ["fp32", "int8"]}


@pytest.fixture(scope="module")
def both(tiny_models, data_files, tmp_path_factory):
    """The same 4-cell sweep serially and on a local Ray instance."""
    pairs = edgec.read_dataset(data_files["pairs"])
    root = tmp_path_factory.mktemp("ray")
    serial = sweep(tiny_models("bert"), "ort-x86", **GRID, calib=pairs, eval=pairs, out=root / "serial", bench=BENCH)
    on_ray = sweep(
        tiny_models("bert"), "ort-x86", **GRID, calib=pairs, eval=pairs, out=root / "ray", bench=BENCH, ray=RayCluster()
    )
    return root, serial, on_ray


def test_a_ray_sweep_gives_the_serial_rows_and_artifacts(both):
    root, serial, on_ray = both
    assert (
        [r["name"] for r in on_ray]
        == [r["name"] for r in serial]
        == ["prune0-fp32", "prune0-int8", "prune0.5-fp32", "prune0.5-int8"]
    )
    for a, b in zip(serial, on_ray):
        assert not b["error"] and b["latency_ms"] > 0
        assert (b["metric"], b["size_mb"]) == (a["metric"], a["size_mb"])
        # The same model file, run by ONNX Runtime with another thread count in the Ray worker (one CPU) than in the
        # serial process: float sums in another order moved the mean cosine by 4e-12 once; the test allows 1e-6.
        assert [b[k] for k in ("value", "drop", "cosine_mean")] == pytest.approx(
            [a[k] for k in ("value", "drop", "cosine_mean")], rel=1e-6, abs=1e-9
        )
        serial_manifest, ray_manifest = (
            json.loads((root / side / "artifacts" / a["name"] / "edgec.json").read_text()) for side in ("serial", "ray")
        )
        # The same files, the tokenizer and runner byte for byte (the reports name the build's own time).
        assert set(ray_manifest["files"]) == set(serial_manifest["files"])
        for name in ("tokenizer.json", "predict.py"):
            assert ray_manifest["files"][name] == serial_manifest["files"][name], (
                f"{a['name']}: the Ray task wrote another {name}"
            )
        if a["prune"] == 0:
            assert ray_manifest["files"]["model.onnx"] == serial_manifest["files"]["model.onnx"], (
                f"{a['name']}: another model.onnx"
            )
        else:  # the same plan; mask tuning's sums run on the worker's one thread, so its scales may differ in the last bits
            assert _plan(ray_manifest) == _plan(serial_manifest)
            assert (
                _largest_relative_difference(
                    root / "serial" / "artifacts" / a["name"], root / "ray" / "artifacts" / b["name"]
                )
                <= 1e-5
            )
    with open(root / "ray" / "sweep.csv") as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == [r["name"] for r in serial]
    assert "Latency measured on Ray node" in (root / "ray" / "sweep.md").read_text()
    assert "Latency measured on this machine" in (root / "serial" / "sweep.md").read_text()


def _plan(manifest: dict) -> dict:
    """The prune note without what depends on the process: timings (each step's too) and the least-squares fits."""
    note = manifest["stages"]["prune"]
    steps = [{k: v for k, v in step.items() if k != "seconds"} for step in note.get("steps") or []]
    return {k: v for k, v in note.items() if k not in ("least_squares", "seconds", "steps")} | {"steps": steps}


def _largest_relative_difference(one: Path, other: Path) -> float:
    """The largest difference between two model.onnx files' weights of the same names and shapes, relative to each
    weight's largest magnitude."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    weights = [
        {
            t.name: numpy_helper.to_array(t).astype(np.float64)
            for t in onnx.load(str(f / "model.onnx")).graph.initializer
        }
        for f in (one, other)
    ]
    assert weights[0].keys() == weights[1].keys() and all(
        weights[0][k].shape == weights[1][k].shape for k in weights[0]
    )
    return max(
        float(np.abs(weights[0][k] - weights[1][k]).max() / max(np.abs(weights[0][k]).max(), 1e-12))
        for k in weights[0]
        if weights[0][k].size
    )


def _flaky(job: CellJob, out: Path) -> dict:
    """Fails the first attempt of every cell (a marker file remembers it) and always fails the int8 cells."""
    marker = Path(job.model).parent / f".tried-{job.recipe.quant.precision}"
    first = not marker.exists()
    marker.touch()
    if first or job.recipe.quant.precision == "int8":
        raise RuntimeError(f"simulated failure ({'first attempt' if first else 'again'})")
    return build_cell(job, out)


def test_a_failed_task_is_retried_once_then_reported_and_the_rest_finish(tiny_models, data_files, tmp_path):
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))  # the workers cannot import this test module
    model = tmp_path / "model"
    model.symlink_to(tiny_models("bert"), target_is_directory=True)
    pairs = edgec.read_dataset(data_files["pairs"])
    jobs = [
        CellJob(
            model,
            "ort-x86",
            edgec.Recipe(quant=edgec.QuantConfig(precision=p)),
            pairs,
            pairs,
            None,
            edgec.LoadOptions(),
        )
        for p in ("fp32", "int8")
    ]
    results, timed_on = run_on_ray(jobs, [tmp_path / "fp32", tmp_path / "int8"], BENCH, RayCluster(), build=_flaky)
    assert not results[0]["error"] and results[0]["latency_ms"] > 0, "the retry of the fp32 cell succeeded"
    assert results[1]["error"] == "RuntimeError: simulated failure (again)", results[1]
    assert (tmp_path / "fp32" / "edgec.json").is_file() and not (tmp_path / "int8").exists()
    assert timed_on.startswith("Ray node")


def test_the_budgeted_search_on_ray_keeps_the_serial_candidates(tiny_models, data_files, tmp_path):
    pairs = edgec.read_dataset(data_files["pairs"])
    common = dict(
        budgets=Budgets(max_drop=30.0, max_size_mb=100.0),
        recipe=edgec.Recipe(),
        calib=pairs,
        eval=pairs,
        bench=BENCH,
        fractions=(0.0, 0.5),
    )
    _, serial_choice, serial = search(tiny_models("bert"), "ort-x86", out=tmp_path / "serial", **common)  # noqa: RUF059
    _, ray_choice, on_ray = search(tiny_models("bert"), "ort-x86", out=tmp_path / "ray", ray=RayCluster(), **common)  # noqa: RUF059
    assert [(c.fraction, c.precision, round(c.drop, 6), c.size_mb) for c in on_ray] == [
        (c.fraction, c.precision, round(c.drop, 6), c.size_mb) for c in serial
    ]
    assert (tmp_path / "ray" / "edgec.json").is_file()


def test_sweep_command_takes_ray(tiny_models, data_files, tmp_path):
    result = invoke(
        "sweep",
        tiny_models("bert"),
        "--prune",
        "0",
        "--precision",
        "fp32",
        "--calib",
        data_files["calib"],
        "--runs",
        3,
        "--seq-len",
        8,
        "--out",
        tmp_path / "sw",
        "--ray",
    )
    assert result.exit_code == 0, result.output
    assert "prune0-fp32" in result.stdout and "Ray node" in (tmp_path / "sw" / "sweep.md").read_text()
    alone = invoke("sweep", tiny_models("bert"), "--ray-address", "auto", "--out", tmp_path / "x")
    assert alone.exit_code == 2 and "--ray-address needs --ray" in alone.stderr
