"""The iterative schedule: pruning steps toward the target, distillation between them, one time budget."""

import time

import pytest
from conftest import SENTENCES

from edgec.api import compress
from edgec.data import Dataset, Example
from edgec.errors import ConfigError
from edgec.recipe import DistillConfig, PruneConfig, Recipe
from edgec.stages import distill as distill_module
from edgec.stages import iterative, prune

DATA = Dataset(tuple(Example(t) for t in SENTENCES), "sentences")
STEP_SECONDS, PRUNE_SECONDS = 1.0, 5.0


class WorkClock:
    """A perf_counter that moves only with work: STEP_SECONDS per training batch, PRUNE_SECONDS per pruning step.

    The budget logic is then checked exactly, whatever the machine's speed or load."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = WorkClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    real_loss, real_prune = distill_module.student_loss, iterative.prune_source

    def student_loss(prepared, student):
        loss = real_loss(prepared, student)

        def timed(model, batch):
            clock.now += STEP_SECONDS
            return loss(model, batch)

        return timed

    def prune_source(*args, **kwargs):
        clock.now += PRUNE_SECONDS
        return real_prune(*args, **kwargs)

    monkeypatch.setattr(distill_module, "student_loss", student_loss)
    monkeypatch.setattr(iterative, "prune_source", prune_source)
    return clock


def compressed(model, schedule: str, tmp_path, minutes: float = 1.0) -> dict:
    recipe = Recipe(
        prune=PruneConfig(fraction=0.6, schedule=schedule, iterations=3),
        distill=DistillConfig(
            steps=100_000, minutes=minutes, batch_size=8, eval_every=5, patience=1000, precision="fp32"
        ),
    )
    return compress(model, recipe, calib=DATA, eval=DATA, train=DATA, out=tmp_path / schedule)


def test_kept_shares_fall_geometrically_to_the_target():
    assert prune.kept_shares(0.875, 3) == pytest.approx([0.5, 0.25, 0.125])
    assert prune.kept_shares(0.5, 1) == pytest.approx([0.5])


def test_iterative_schedule_respects_its_time_budget(tiny_models, tmp_path, clock):
    """60 s of work-clock budget, 3 steps: distillations of 20, 17.5 and 12.5 s around two 5 s pruning steps, the
    last ending at the deadline; the one-shot schedule spends the same 60 s in one distillation."""
    started = clock.now
    result = compressed(tiny_models("bert"), "iterative", tmp_path)
    summary, runs = result.prune, result.distill.runs
    assert [run.steps for run in runs] == [20, 18, 12]
    assert all(run.stopped == "minutes" for run in runs)
    spent = clock.now - started - PRUNE_SECONDS  # the budget starts with the first distillation, after one prune
    assert 60.0 <= spent <= 60.0 + STEP_SECONDS
    assert [step.step for step in summary.steps] == [1, 2, 3] and summary.schedule == "iterative"
    assert summary.macs_after <= (1 - 0.6 + 0.05) * summary.macs_before
    assert summary.macs_after < summary.steps[0].macs_after

    started = clock.now
    one_shot = compressed(tiny_models("bert"), "one-shot", tmp_path)
    assert one_shot.distill.steps == 60 and one_shot.distill.stopped == "minutes" and one_shot.distill.runs is None
    assert clock.now - started == pytest.approx(60.0)  # (its one pruning step is not on the work clock)


def test_iterative_schedule_needs_a_time_budget():
    with pytest.raises(ConfigError, match="--distill-minutes"):
        Recipe(prune=PruneConfig(fraction=0.5, schedule="iterative"), distill=DistillConfig())
    with pytest.raises(ConfigError, match="prune schedule"):
        PruneConfig(fraction=0.5, schedule="gradual")


def test_iterative_schedule_with_layers_and_hidden_keeps_the_original_numbering(tiny_models, tmp_path, clock):
    """Steps prune models that earlier steps already narrowed or shortened: the summary names layers as in the
    unpruned model and keeps its figures, and the distillations pair the kept layers by their origins. (A classifier:
    an embedding model's output narrows with its hidden size, which the parity ledger cannot compare.)"""
    recipe = Recipe(
        task="sequence-classification",
        prune=PruneConfig(fraction=0.7, units=("heads", "ffn", "layers", "hidden"), schedule="iterative", iterations=2),
        distill=DistillConfig(steps=100_000, minutes=0.2, batch_size=8, eval_every=5, patience=1000, precision="fp32"),
    )
    result = compress(tiny_models("mpnet"), recipe, calib=DATA, eval=DATA, train=DATA, out=tmp_path / "out")
    summary = result.prune
    assert summary.hidden_before == 32 and summary.hidden_after < 32 and len(summary.heads_before) == 2
    assert sorted(summary.layers_kept + summary.layers_removed) == [0, 1]
    assert summary.macs_after <= (1 - 0.7 + 0.05) * summary.macs_before
    assert [len(run.layers) <= len(summary.layers_kept) for run in result.distill.runs] == [True, True]
