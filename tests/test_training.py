"""edgec's one training loop: schedules, budgets, accumulation, and its use of accelerate."""

import time

import pytest
import torch

from edgec.compression import training
from edgec.errors import ConfigError
from edgec.hardware import HostCPU
from edgec.recipe import TrainConfig


def _rates(config: TrainConfig, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler = training.schedule(optimizer, config, 1, time.perf_counter())
    rates = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    return rates


def test_linear_and_cosine_schedules_warm_up_then_decay_to_zero():
    linear = _rates(TrainConfig(steps=100, warmup=0.1), 100)
    assert linear[0] == 0.0 and linear[5] == pytest.approx(0.5) and linear[10] == pytest.approx(1.0)
    assert linear[55] == pytest.approx(0.5) and linear[100] == pytest.approx(0.0)
    cosine = _rates(TrainConfig(steps=100, warmup=0.1, schedule="cosine"), 100)
    assert cosine[10] == pytest.approx(1.0) and cosine[55] == pytest.approx(0.5) and cosine[100] == pytest.approx(0.0)
    assert cosine[30] > linear[30]  # cosine stays high longer


def test_schedule_follows_the_clock_when_minutes_end_the_run_first():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    # Half of a one-minute budget gone, a step cap that would never be reached: past warmup, halfway down.
    config = TrainConfig(steps=100_000, minutes=1.0, warmup=0.1)
    scheduler = training.schedule(optimizer, config, 1, time.perf_counter() - 30)
    assert 0.5 < scheduler.get_last_lr()[0] < 0.6


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.linear(x)


def _problem(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    items = list(zip(x, y))
    loader = training.shuffled_loader(
        items, lambda batch: {"x": torch.stack([a for a, _ in batch]), "y": torch.stack([b for _, b in batch])}, 8, 0
    )

    def loss(model, batch):
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    def evaluate(model):
        with torch.no_grad():
            return -float(torch.nn.functional.mse_loss(model(x), y))

    return loader, loss, evaluate


FAST = TrainConfig(steps=60, learning_rate=0.05, warmup=0.0, eval_every=20, patience=100, precision="fp32")


def test_training_lowers_the_loss_and_keeps_the_best_weights():
    loader, loss, evaluate = _problem()
    start = _Regression()
    result = training.train(start, loss, loader, FAST, evaluate, seed=0, dropout=True)
    assert result.stopped == "steps" and result.steps == 60
    assert result.history[0][0] == 0 and result.best_score > result.history[0][1]
    assert result.losses[-1][1] < result.losses[0][1]
    assert evaluate(result.model) == pytest.approx(result.best_score)
    assert not torch.equal(start.linear.weight, result.model.linear.weight), "the input model is left as it was"


def test_accumulation_counts_optimizer_steps_not_micro_batches():
    loader, loss, evaluate = _problem()
    calls = []
    counted = lambda model, batch: calls.append(1) or loss(model, batch)  # noqa: E731
    config = TrainConfig(
        steps=5, accumulation=4, learning_rate=0.05, warmup=0.0, eval_every=5, patience=100, precision="fp32"
    )
    result = training.train(_Regression(), counted, loader, config, evaluate, seed=0, dropout=True)
    assert result.steps == 5 and len(calls) == 20


def test_the_minutes_budget_stops_training():
    loader, loss, evaluate = _problem()

    def slow(model, batch):
        time.sleep(0.05)
        return loss(model, batch)

    config = TrainConfig(steps=100_000, minutes=0.01, warmup=0.0, eval_every=1000, patience=100, precision="fp32")
    result = training.train(_Regression(), slow, loader, config, evaluate, seed=0, dropout=True)
    assert result.stopped == "minutes" and 0 < result.steps <= 13  # 0.6 s of 0.05 s steps: the clock ended it


def test_the_loop_runs_through_accelerate(monkeypatch):
    """Single process here; the same calls are what `accelerate launch` / torchrun distribute."""
    used = []
    real = training._accelerator

    def spy(precision, accumulation):
        accelerator = real(precision, accumulation)
        for name in ("prepare", "backward", "accumulate", "clip_grad_norm_", "get_state_dict"):
            method = getattr(accelerator, name)
            setattr(accelerator, name, lambda *a, _m=method, _n=name, **k: used.append(_n) or _m(*a, **k))
        return accelerator

    monkeypatch.setattr(training, "_accelerator", spy)
    loader, loss, evaluate = _problem()
    training.train(
        _Regression(),
        loss,
        loader,
        TrainConfig(steps=3, eval_every=3, precision="fp32"),
        evaluate,
        seed=0,
        dropout=True,
    )
    assert {"prepare", "backward", "accumulate", "clip_grad_norm_", "get_state_dict"} <= set(used)
    assert used.count("backward") == 3


def test_one_process_trains_in_two_precisions_and_keeps_its_process_state():
    """forget_mixed_precision is edgec's one use of accelerate's private AcceleratorState._reset_state: a bf16 run after
    an fp32 one must neither fail (the singleton refuses a new precision) nor lose the process group (PartialState)."""
    from accelerate.state import AcceleratorState, PartialState

    loader, loss, evaluate = _problem()
    first = training.train(
        _Regression(),
        loss,
        loader,
        TrainConfig(steps=2, eval_every=2, precision="fp32"),
        evaluate,
        seed=0,
        dropout=True,
    )
    process_group = dict(PartialState._shared_state)
    second = training.train(
        _Regression(),
        loss,
        loader,
        TrainConfig(steps=2, eval_every=2, precision="bf16"),
        evaluate,
        seed=0,
        dropout=True,
    )
    assert (first.precision, second.precision) == ("fp32", "bf16")
    assert AcceleratorState._shared_state["_mixed_precision"] == "bf16"
    assert PartialState._shared_state == process_group and PartialState().num_processes == 1
    assert second.ranks == ({"rank": 0, "micro_batches": 2},)


def test_fp16_training_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    loader, loss, evaluate = _problem()
    with pytest.raises(ConfigError, match="fp16 training"):
        training.train(_Regression(), loss, loader, TrainConfig(precision="fp16"), evaluate, seed=0, dropout=True)


ZEN3 = HostCPU("x86_64", "AMD EPYC", ("avx2",), 2)
ZEN4 = HostCPU("x86_64", "AMD EPYC", ("avx2", "avx512_bf16", "avx512_vnni", "avx512f"), 2)
SAPPHIRE_RAPIDS = HostCPU("x86_64", "Intel Xeon", ("amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512f"), 2)


@pytest.mark.parametrize(("cpu", "chosen"), [(ZEN3, "fp32"), (ZEN4, "bf16"), (SAPPHIRE_RAPIDS, "bf16")])
def test_auto_precision_takes_bf16_only_where_the_cpu_computes_it_natively(cpu, chosen):
    precision, reason = training.choose_precision("auto", cpu, gpu_bf16=None)
    assert precision == chosen and reason.startswith(f"auto: {chosen}")
    assert ("emulate" in reason) == (chosen == "fp32")


@pytest.mark.parametrize(
    ("cpu", "cap", "chosen"),
    [
        (ZEN4, "AVX2", "fp32"),
        (ZEN4, "avx512_core_vnni", "fp32"),
        (ZEN4, "AVX512_CORE_BF16", "bf16"),
        (ZEN4, "ALL", "bf16"),
        (SAPPHIRE_RAPIDS, "AVX512_CORE", "fp32"),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", "bf16"),
    ],
)
def test_auto_precision_follows_a_onednn_cap_that_turns_native_bf16_into_emulated(cpu, cap, chosen):
    precision, reason = training.choose_precision("auto", cpu, gpu_bf16=None, onednn_max_isa=cap)
    assert precision == chosen
    assert ("ONEDNN_MAX_CPU_ISA" in reason) == (chosen == "fp32")


def test_resolve_precision_reads_the_processes_onednn_cap(monkeypatch):
    monkeypatch.setattr(training, "host", lambda: ZEN4)
    monkeypatch.setattr(training, "_gpu_bf16", lambda: None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert training.resolve_precision("auto")[0] == "fp32"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert training.resolve_precision("auto")[0] == "bf16"


def test_auto_precision_on_a_gpu_follows_its_bf16_support_and_requests_are_kept():
    assert training.choose_precision("auto", ZEN3, gpu_bf16=True)[0] == "bf16"
    assert training.choose_precision("auto", ZEN4, gpu_bf16=False)[0] == "fp32"
    assert training.choose_precision("bf16", ZEN3, gpu_bf16=None) == ("bf16", "bf16 (requested)")


def test_a_run_records_the_precision_it_chose(monkeypatch):
    monkeypatch.setattr(training, "host", lambda: ZEN3)
    loader, loss, evaluate = _problem()
    result = training.train(
        _Regression(),
        loss,
        loader,
        TrainConfig(steps=2, eval_every=2, precision="auto"),
        evaluate,
        seed=0,
        dropout=True,
    )
    assert result.precision == "fp32" and "avx2" in result.precision_reason


def test_length_grouped_batches_cover_every_item_once_with_little_padding():
    lengths = [int(x) for x in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0))]
    sampler = training.LengthGroupedBatches(lengths, batch_size=32, seed=3)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) and sorted(i for b in first for i in b) == list(range(1000))
    assert first != second and sorted(map(sorted, first)) != sorted(map(sorted, second))  # a new order each pass
    assert list(training.LengthGroupedBatches(lengths, batch_size=32, seed=3)) == first  # deterministic
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    random_batches = [list(range(i, min(i + 32, 1000))) for i in range(0, 1000, 32)]
    assert padded < 0.6 * sum(len(b) * max(lengths[i] for i in b) for b in random_batches)


def test_training_runs_on_length_grouped_batches():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    items = list(zip(x, y))
    loader = training.shuffled_loader(
        items,
        lambda batch: {"x": torch.stack([a for a, _ in batch]), "y": torch.stack([b for _, b in batch])},
        8,
        0,
        lengths=[i % 7 for i in range(64)],
    )
    result = training.train(
        _Regression(),
        lambda model, batch: torch.nn.functional.mse_loss(model(batch["x"]), batch["y"]),
        loader,
        FAST,
        lambda model: -float(torch.nn.functional.mse_loss(model(x), y)),
        seed=0,
        dropout=True,
    )
    assert result.best_score > result.history[0][1]
