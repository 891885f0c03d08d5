"""Training on two CPU processes (torchrun, gloo): both ranks train, the result matches one process with
accumulation, only rank 0 writes, and a failing rank fails the run with one line."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SENTENCES, make_tiny_model
from safetensors.torch import load_file

import edgec
from edgec.compression.finetune import finetune
from edgec.recipe import TrainConfig

# Two torchrun runs (a fine-tune and a distillation, each asserting both ranks trained) are in `make test`, ~25 s;
# the rest start two processes each and run in `make test-deep`, keeping `make test` within its 15 minutes.
pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
# 16 examples, micro-batches of 4: two optimizer steps of 8 examples are one epoch, so neither run wraps around
# (accelerate pads a short last batch across processes, one process does not).
EXAMPLES, BATCH, STEPS = 16, 4, 2
# gloo's all-reduce sums the two halves in another order than accumulation does, so the updates differ by float
# rounding only: measured 1.9e-7 of the update's norm. A run that saw half the data per step differs by 1.17.
UPDATE_TOLERANCE = 1e-4
SCORE_TOLERANCE = 1e-6


def torchrun(*args, cwd: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 [extra] -m edgec ARGS`, as a user would start it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *extra]
    command += [*(["-m", "edgec"] if not extra else []), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A classifier without dropout (dropout draws differ per process) and 16 labelled examples."""
    root = tmp_path_factory.mktemp("multiprocess")
    model = make_tiny_model(root / "model", "bert", "sequence-classification")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    )
    data = root / "labels.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 3}) + "\n" for i, t in enumerate(SENTENCES[:EXAMPLES])))
    return {"root": root, "model": model, "data": data}


def _finetune_args(setup: dict[str, Path], out: Path) -> list:
    return [
        "finetune",
        setup["model"],
        "--data",
        setup["data"],
        "--eval",
        setup["data"],
        "--steps",
        STEPS,
        "--eval-every",
        1,
        "--batch-size",
        BATCH,
        "--lr",
        "1e-3",
        "--warmup",
        "0",
        "--precision",
        "fp32",
        "--out",
        out,
    ]


@pytest.fixture(scope="module")
def two_processes(setup) -> tuple[subprocess.CompletedProcess, Path]:
    out = setup["root"] / "two"
    return torchrun(*_finetune_args(setup, out), cwd=setup["root"]), out


def test_two_processes_each_train_and_rank_0_alone_writes(two_processes):
    done, out = two_processes
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "edgec_finetune.json").read_text())
    assert record["processes"] == 2
    assert record["ranks"] == [{"rank": 0, "micro_batches": STEPS}, {"rank": 1, "micro_batches": STEPS}]
    assert done.stdout.count("edgec finetune:") == 1, "one summary, from rank 0"
    assert not list(out.parent.glob(".two.*")), "no staging folder left behind"


def test_two_processes_score_as_one_process_with_accumulation(setup, two_processes, tmp_path):
    done, two = two_processes
    assert done.returncode == 0, done.stderr[-3000:]
    config = TrainConfig(
        steps=STEPS, batch_size=BATCH, accumulation=2, learning_rate=1e-3, warmup=0.0, eval_every=1, precision="fp32"
    )
    data = edgec.read_dataset(setup["data"])
    one = finetune(
        setup["model"],
        task="sequence-classification",
        train_data=data,
        eval_data=data,
        config=config,
        out=tmp_path / "one",
    )
    record = json.loads((two / "edgec_finetune.json").read_text())
    assert one["processes"] == 1 and one["ranks"][0]["micro_batches"] == 2 * STEPS
    assert [h[0] for h in one["history"]] == [h[0] for h in record["history"]] == [0, 1, 2]
    for (_, a), (_, b) in zip(one["history"], record["history"]):
        assert abs(a - b) <= SCORE_TOLERANCE


@pytest.mark.deep
def test_two_processes_train_the_same_weights_as_one_process_with_accumulation(setup, tmp_path, monkeypatch):
    """The weights after the last step (tests/helpers/keep_last_weights.py keeps them, not the best checkpoint)."""
    done = torchrun(
        *_finetune_args(setup, tmp_path / "two"), cwd=tmp_path, extra=[str(HERE / "helpers" / "keep_last_weights.py")]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.syspath_prepend(str(HERE / "helpers"))
    from keep_last_weights import rising_evaluator

    monkeypatch.setattr("edgec.compression.finetune._evaluator", rising_evaluator)
    config = TrainConfig(
        steps=STEPS, batch_size=BATCH, accumulation=2, learning_rate=1e-3, warmup=0.0, eval_every=1, precision="fp32"
    )
    data = edgec.read_dataset(setup["data"])
    one = finetune(
        setup["model"],
        task="sequence-classification",
        train_data=data,
        eval_data=data,
        config=config,
        out=tmp_path / "one",
    )
    assert one["best_step"] == json.loads((tmp_path / "two" / "edgec_finetune.json").read_text())["best_step"] == STEPS
    weights_one, weights_two = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    start = load_file(setup["model"] / "model.safetensors")
    moved = max((weights_two[k] - start[k]).abs().max().item() for k in start if k in weights_two)
    assert moved > 1e-3, f"training moved the weights by only {moved:.2e}"
    difference = _relative_difference(weights_one, weights_two, start)
    assert difference <= UPDATE_TOLERANCE, f"the two runs' weight updates differ by {difference:.2e} of their size"
    # The check can tell: one process without accumulation (half the examples per step) is far outside the bound.
    finetune(
        setup["model"],
        task="sequence-classification",
        train_data=data,
        eval_data=data,
        config=dataclasses.replace(config, accumulation=1),
        out=tmp_path / "half",
    )
    assert (
        _relative_difference(load_file(tmp_path / "half" / "model.safetensors"), weights_two, start)
        > 100 * UPDATE_TOLERANCE
    )


def _relative_difference(a: dict, b: dict, start: dict) -> float:
    """‖Δa − Δb‖ / ‖Δa‖ over every weight, Δ being the move from `start`."""
    import torch

    da = torch.cat([(a[k] - start[k]).flatten() for k in start if k in a])
    db = torch.cat([(b[k] - start[k]).flatten() for k in start if k in b])
    return float((da - db).norm() / da.norm())


def test_two_process_distillation_runs_on_both_ranks(tiny_models, data_files, tmp_path):
    out = tmp_path / "pruned"
    done = torchrun(
        "prune",
        tiny_models("bert"),
        "--prune",
        "0.5",
        "--distill",
        data_files["calib"],
        "--distill-steps",
        2,
        "--distill-batch-size",
        4,
        "--out",
        out,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes (rank 0: 2 micro-batches, rank 1: 2 micro-batches)" in done.stdout
    assert done.stdout.count("edgec prune:") == 1
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".pruned.*"))


@pytest.mark.deep
def test_a_failing_rank_fails_the_run_with_one_line(setup, tmp_path):
    out = tmp_path / "crashed"
    done = torchrun(*_finetune_args(setup, out), cwd=tmp_path, extra=[str(HERE / "helpers" / "fail_on_rank_1.py")])
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "edgec: error:" in line]
    assert errors == ["edgec: error: rank 1 of 2: rank 1 failed on purpose (tests/helpers/fail_on_rank_1.py)"], (
        done.stderr[-3000:]
    )
    assert "Traceback" not in "\n".join(line for line in done.stderr.splitlines() if line.startswith("[rank")), (
        done.stderr[-3000:]
    )
    assert not out.exists() and not list(tmp_path.glob(".crashed.*"))


def test_edgec_build_refuses_to_run_under_torchrun(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(edgec.ConfigError, match="edgec prune --distill"):
        edgec.build(tiny_models("bert"), "ort-x86", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
