"""Training on two CPU processes (torchrun, gloo): both ranks train, the result matches one process with
accumulation, only rank 0 writes, and a failing rank fails the run with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import edgec
from edgec.finetune import finetune
from edgec.recipe import TrainConfig

from conftest import SENTENCES, make_tiny_model

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
# 16 examples, micro-batches of 4: two optimizer steps of 8 examples are one epoch, so neither run wraps around
# (accelerate pads a short last batch across processes, one process does not).
EXAMPLES, BATCH, STEPS = 16, 4, 2
# gloo's all-reduce sums the two halves in another order than accumulation does, so the gradients differ by float
# rounding; AdamW divides each update by the gradient's own scale, so a gradient near zero can flip sign between the
# two runs and move that weight by up to 2 x lr x steps: the bound allows for that and no more.
WEIGHT_TOLERANCE = 2 * 1e-3 * STEPS
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
    (model / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    data = root / "labels.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 3}) + "\n" for i, t in enumerate(SENTENCES[:EXAMPLES])))
    return {"root": root, "model": model, "data": data}


def _finetune_args(setup: dict[str, Path], out: Path) -> list:
    return ["finetune", setup["model"], "--data", setup["data"], "--eval", setup["data"], "--steps", STEPS, "--eval-every", 1,
            "--batch-size", BATCH, "--lr", "1e-3", "--warmup", "0", "--precision", "fp32", "--out", out]


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


def test_two_processes_match_one_process_with_accumulation(setup, two_processes, tmp_path):
    done, two = two_processes
    assert done.returncode == 0, done.stderr[-3000:]
    config = TrainConfig(steps=STEPS, batch_size=BATCH, accumulation=2, learning_rate=1e-3, warmup=0.0, eval_every=1, precision="fp32")
    data = edgec.read_dataset(setup["data"])
    one = finetune(setup["model"], task="sequence-classification", train_data=data, eval_data=data, config=config, out=tmp_path / "one")
    record = json.loads((two / "edgec_finetune.json").read_text())
    assert one["processes"] == 1 and one["ranks"][0]["micro_batches"] == 2 * STEPS
    assert [h[0] for h in one["history"]] == [h[0] for h in record["history"]] == [0, 1, 2]
    for (_, a), (_, b) in zip(one["history"], record["history"]):
        assert abs(a - b) <= SCORE_TOLERANCE
    weights_one, weights_two = load_file(tmp_path / "one" / "model.safetensors"), load_file(two / "model.safetensors")
    start = load_file(setup["model"] / "model.safetensors")
    moved = max((weights_two[k] - start[k]).abs().max().item() for k in start if k in weights_two)
    assert moved > 10 * WEIGHT_TOLERANCE or record["best_step"] == 0, "training moved the weights"
    worst = max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one)
    assert worst <= WEIGHT_TOLERANCE, f"largest weight difference {worst:.2e}"


def test_two_process_distillation_runs_on_both_ranks(tiny_models, data_files, tmp_path):
    out = tmp_path / "pruned"
    done = torchrun("prune", tiny_models("bert"), "--prune", "0.5", "--distill", data_files["calib"], "--distill-steps", 2,
                    "--distill-batch-size", 4, "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes (rank 0: 2 micro-batches, rank 1: 2 micro-batches)" in done.stdout
    assert done.stdout.count("edgec prune:") == 1
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".pruned.*"))


def test_a_failing_rank_fails_the_run_with_one_line(setup, tmp_path):
    out = tmp_path / "crashed"
    done = torchrun(*_finetune_args(setup, out), cwd=tmp_path, extra=[str(HERE / "helpers" / "fail_on_rank_1.py")])
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "edgec: error:" in line]
    assert errors == ["edgec: error: rank 1 of 2: rank 1 failed on purpose (tests/helpers/fail_on_rank_1.py)"], done.stderr[-3000:]
    assert "Traceback" not in "\n".join(line for line in done.stderr.splitlines() if line.startswith("[rank")), done.stderr[-3000:]
    assert not out.exists() and not list(tmp_path.glob(".crashed.*"))


def test_edgec_build_refuses_to_run_under_torchrun(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(edgec.ConfigError, match="edgec prune --distill"):
        edgec.build(tiny_models("bert"), "ort-x86", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()

