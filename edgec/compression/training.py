"""edgec's one training loop: fine-tuning and distillation both run through `train`.

The loop is written against accelerate.Accelerator, so the same code runs on one CPU, one GPU, or
several processes started by torchrun (data parallel; gloo between CPU processes, see edgec.processes):
evaluation and checkpoint choice happen on the main process and every decision to stop is broadcast, so
all processes leave the loop at the same step.

Two CPU processes on one machine (what `make test` runs):
    torchrun --nproc_per_node 2 -m edgec finetune MODEL --data TRAIN --eval DEV --out DIR
`accelerate launch --cpu --num_processes 2` starts a single process unless MPI is set up.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object
from torch.optim.lr_scheduler import LambdaLR

from edgec.errors import ConfigError, PeerProcessFailed
from edgec.hardware import HostCPU, host, torch_bf16_cap
from edgec.processes import state as process_state
from edgec.progress import bar
from edgec.recipe import TrainConfig

log = logging.getLogger("edgec")

Loss = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
"""(the prepared model, a batch on its device) -> scalar loss, computed under the loop's autocast."""


@dataclass(frozen=True)
class TrainResult:
    """What training left: the best-scoring weights and how the run went."""

    model: torch.nn.Module
    """A new fp32 module in eval mode holding the best weights (the input model is not touched)."""
    steps: int
    """Optimizer steps run."""
    best_step: int
    """Step whose weights were kept (0: training never beat the start)."""
    best_score: float
    stopped: str
    """Why training ended: "steps", "minutes" or "early-stop"."""
    seconds: float
    history: tuple[tuple[int, float], ...]
    """(step, score) of every evaluation, step 0 first."""
    losses: tuple[tuple[int, float], ...]
    """(step, mean training loss since the previous evaluation) at every evaluation after the first."""
    precision: str
    """The autocast precision the run used (config.precision with auto resolved)."""
    precision_reason: str
    """Why that precision: what was asked for and what the hardware computes natively."""
    ranks: tuple[dict[str, int], ...]
    """Every training process and the micro-batches it ran ({"rank", "micro_batches"}), rank 0 first."""


def train(
    model: torch.nn.Module,
    loss: Loss,
    loader,
    config: TrainConfig,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    seed: int,
    dropout: bool,
    description: str = "training",
    frozen: frozenset[str] = frozenset(),
) -> TrainResult:
    """Train a copy of `model` on `loader`'s batches to minimise `loss`; return the copy with its best weights.

    `evaluate` scores a CPU fp32 model in eval mode (higher is better); it runs before training, every
    `config.eval_every` optimizer steps and at the end. Training stops at `config.steps`, after
    `config.minutes`, or after `config.patience` evaluations without improvement, whichever comes first.
    `dropout` trains in train mode (fine-tuning); without it the model stays in eval mode (distillation
    fits a fixed teacher function, where dropout noise would only slow the fit). A progress bar named
    `description` shows the steps, the loss and the latest score (in a terminal; edgec.progress). Parameters
    named in `frozen` (as `model.named_parameters()` names them) keep their values: they get no gradient and no
    optimizer state; the returned model trains them again if trained further.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    precision, reason = resolve_precision(config.precision)
    log.info("training precision: %s", reason)
    accelerator = _accelerator(precision, config.accumulation)
    keeper = _Keeper(copy.deepcopy(model).float().eval(), evaluate, accelerator)
    trained = copy.deepcopy(model).float().train(dropout)
    for name, parameter in trained.named_parameters():
        parameter.requires_grad_(name not in frozen)
    optimizer = _optimizer(trained, config)
    scheduler = schedule(optimizer, config, accelerator.num_processes, started)
    trained, optimizer, loader, scheduler = accelerator.prepare(trained, optimizer, loader, scheduler)
    run = _Run(accelerator, trained, optimizer, scheduler, loss, config)
    try:
        deadline = started + config.minutes * 60 if config.minutes is not None else math.inf
        with bar(description, config.steps, enabled=accelerator.is_main_process) as advance:
            steps, stopped, losses, micro_batches = _loop(run, loader, keeper, deadline, advance)
        ranks = _ranks(accelerator, micro_batches)
    except RuntimeError as exc:  # gloo: "Connection closed by peer ... caused by a remote worker crashing"
        if accelerator.num_processes > 1 and "closed by peer" in str(exc):
            raise PeerProcessFailed(f"another training process stopped ({str(exc).splitlines()[0][:200]})") from None
        raise
    finally:
        accelerator.free_memory()
    return TrainResult(
        model=keeper.best_model(),
        steps=steps,
        best_step=keeper.best_step,
        best_score=keeper.best_score,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        history=tuple(keeper.history),
        losses=tuple(losses),
        precision=precision,
        precision_reason=reason,
        ranks=ranks,
    )


def _ranks(accelerator: Accelerator, micro_batches: int) -> tuple[dict[str, int], ...]:
    """What each process did, gathered on every process: the proof that every rank trained."""
    mine = [{"rank": accelerator.process_index, "micro_batches": micro_batches}]
    gathered = gather_object(mine) if accelerator.num_processes > 1 else mine
    return tuple(sorted(gathered, key=lambda entry: entry["rank"]))


def choose_precision(
    requested: str, cpu: HostCPU, gpu_bf16: bool | None, onednn_max_isa: str | None = None
) -> tuple[str, str]:
    """The autocast precision to train in, and why. `gpu_bf16` is None without a GPU, else whether it has bf16;
    `onednn_max_isa` is the process's ONEDNN_MAX_CPU_ISA, if any.

    auto takes bf16 only where it is native: on a CPU without AVX512-BF16 or AMX, bf16 autocast is emulated and a
    training step ran ~7x slower than fp32 (a MiniLM step on an AVX2-only EPYC), so auto takes fp32 there.
    """
    if requested != "auto":
        return requested, f"{requested} (requested)"
    if gpu_bf16 is not None:
        return (
            ("bf16", "auto: bf16, the GPU computes it natively")
            if gpu_bf16
            else ("fp32", "auto: fp32, the GPU has no bf16")
        )
    capped = torch_bf16_cap(cpu, onednn_max_isa)
    if cpu.native_bf16 and capped is None:
        native = ", ".join(f for f in cpu.flags if "bf16" in f)
        return "bf16", f"auto: bf16, the CPU computes it natively ({native})"
    if capped:
        return "fp32", f"auto: fp32, {capped} and would emulate it several times slower"
    return (
        "fp32",
        f"auto: fp32, the CPU ({cpu.instruction_set}) has no native bf16 and would emulate it several times slower",
    )


def resolve_precision(requested: str) -> tuple[str, str]:
    """choose_precision on this host's CPU and GPU, under any oneDNN instruction-set cap of this process."""
    return choose_precision(requested, host(), _gpu_bf16(), os.environ.get("ONEDNN_MAX_CPU_ISA"))


def _gpu_bf16() -> bool | None:
    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None


@dataclass(frozen=True)
class _Run:
    """The prepared training objects of one run."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss: Loss
    config: TrainConfig

    def micro_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, bool]:
        """One micro-batch; returns its loss and whether an optimizer step happened (the last of an accumulation)."""
        # Under accumulate(), backward skips the gradient all-reduce and the prepared optimizer and scheduler
        # skip their step on every micro-batch but the last of an accumulation.
        with self.accelerator.accumulate(self.model):
            with self.accelerator.autocast():  # also covers a loss that runs a model of its own (a teacher)
                value = self.loss(self.model, batch)
            self.accelerator.backward(value)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(value.detach()), self.accelerator.sync_gradients


def _loop(
    run: _Run,
    loader,
    keeper: _Keeper,
    deadline: float,
    advance: Callable[..., None],
) -> tuple[int, str, list[tuple[int, float]], int]:
    """The optimizer loop; returns (steps run, why it stopped, mean loss per evaluation interval, micro-batches)."""
    config = run.config
    keeper.check(0, run.model)  # the start: the kept model can never be worse than it
    step, stopped, running, losses, micro_batches = 0, None, [], [], 0
    for batch in _cycle(loader):
        value, stepped = run.micro_step(batch)
        running.append(value)
        micro_batches += 1
        if not stepped:
            continue
        step += 1
        if step % config.eval_every == 0 or step == config.steps:
            losses.append((step, sum(running) / len(running)))
            running = []
            keeper.check(step, run.model)
        advance(status=_status(value, keeper, deadline))
        stopped = _agreed(run.accelerator, _stop_reason(step, keeper.stale, config, deadline))
        if stopped:
            break
    if keeper.last_step != step:  # stopped by the clock between evaluations
        losses.append((step, sum(running) / max(len(running), 1)))
        keeper.check(step, run.model)
    return step, stopped, losses, micro_batches


def _status(loss: float, keeper: _Keeper, deadline: float) -> str:
    """What the progress bar shows after the estimate: the loss, the latest and best score, the time budget left."""
    parts = [f"loss {loss:.4f}"]
    if keeper.history:
        parts.append(f"score {keeper.history[-1][1]:.4f} (best {keeper.best_score:.4f})")
    if math.isfinite(deadline):
        parts.append(f"{max(deadline - time.perf_counter(), 0) / 60:.1f} min of budget left")
    return ", ".join(parts)


def _stop_reason(step: int, stale: int, config: TrainConfig, deadline: float) -> str | None:
    if step >= config.steps:
        return "steps"
    if stale >= config.patience:
        return "early-stop"
    if time.perf_counter() >= deadline:
        return "minutes"
    return None


class _Keeper:
    """Scores the weights on the main process and keeps the best; every process keeps the same copy."""

    def __init__(self, model: torch.nn.Module, evaluate: Callable[[torch.nn.Module], float], accelerator: Accelerator):
        self.model, self.evaluate, self.accelerator = model, evaluate, accelerator
        self.history: list[tuple[int, float]] = []
        self.last_step = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step, self.best_score, self.stale = 0, -math.inf, 0

    def check(self, step: int, trained: torch.nn.Module) -> None:
        state = self.accelerator.get_state_dict(trained)  # a collective where weights are sharded
        score = math.nan
        if self.accelerator.is_main_process:
            self.model.load_state_dict(state)
            score = float(self.evaluate(self.model))
        score = _agreed(self.accelerator, score)  # every process keeps the same history and best step
        self.history.append((step, score))
        improved = self.best_state is None or score > self.best_score  # the start is kept even if it scores nan
        self.stale = 0 if improved else self.stale + 1
        self.best_score = score if improved else self.best_score
        log.info("training step %d: score %.4f (best %.4f)", step, score, self.best_score)
        self.last_step = step
        if improved:
            self.best_step = step
            self.best_state = {name: value.detach().to("cpu", copy=True) for name, value in state.items()}

    def best_model(self) -> torch.nn.Module:
        self.model.load_state_dict(self.best_state)
        return self.model.eval()


def _accelerator(precision: str, accumulation: int) -> Accelerator:
    mixed = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]
    if mixed == "fp16" and not torch.cuda.is_available():
        raise ConfigError("fp16 training (with loss scaling) needs a GPU; use auto or fp32 on a CPU")
    processes = process_state()  # first: the CPU flag decides whether torchrun's processes form a gloo group
    forget_mixed_precision(mixed)
    # Across processes, parameters the loss never reaches (an embedding model's pooler under distillation) would stop
    # DistributedDataParallel at its first step unless it looks for them.
    unused = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(
        cpu=processes.device.type == "cpu",
        mixed_precision=mixed,
        gradient_accumulation_steps=accumulation,
        kwargs_handlers=[unused],
    )


def forget_mixed_precision(mixed: str) -> None:
    """Let the next Accelerator take `mixed`, keeping the process group (PartialState).

    AcceleratorState is a process-wide singleton that refuses a second, different mixed precision, yet one process
    may train several models (tests, notebooks, a build that distills after a fine-tune). accelerate offers no public
    way to change it, so this is the one call of its private `_reset_state`; tests/test_training.py checks that it
    still exists and keeps the process group.
    """
    if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


def schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, processes: int, started: float) -> LambdaLR:
    """Linear warmup, then linear or cosine decay to zero over the run's budget: the steps, or the clock
    where minutes end the run first.

    With only a step count, a minutes budget far below it would leave the rate in warmup all run long
    (a sweep with steps=100000 and 4 minutes trained at ~2% of the peak rate). Following the clock makes
    a minutes-bound run depend on the machine's speed; a steps-bound run stays reproducible.
    A prepared scheduler steps once per process per optimizer step, so steps are counted in those.
    """
    budget = config.minutes * 60 if config.minutes is not None else math.inf

    def factor(step: int) -> float:
        progress = min(1.0, max(step / (config.steps * processes), (time.perf_counter() - started) / budget))
        if progress < config.warmup:
            return progress / config.warmup
        decay = (progress - config.warmup) / (1.0 - config.warmup)  # 0 -> 1 after warmup
        return 0.5 * (1.0 + math.cos(math.pi * decay)) if config.schedule == "cosine" else max(0.0, 1.0 - decay)

    return LambdaLR(optimizer, factor)


def _agreed(accelerator: Accelerator, value):
    """The main process's `value`, on every process: all processes stop, or keep weights, together."""
    if accelerator.num_processes == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters, fused where torch has the kernel (CPU and CUDA).

    On a CPU, torch's default AdamW is its per-tensor loop: for every parameter about eight passes and two fresh
    temporaries of its size per step. The fused kernel makes one pass with the same arithmetic; on mpnet at
    --prune 0.85 (37 M parameters) the optimizer step went from 928 to 102 ms, more than a forward pass.
    """
    groups = _param_groups(model, config.weight_decay)
    fused = {p.device.type for group in groups for p in group["params"]} <= {"cpu", "cuda"}
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True if fused else None)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Biases and LayerNorm scales (the 1-D parameters) are not decayed, as in BERT's own recipe.
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _cycle(loader) -> Iterator[dict[str, torch.Tensor]]:
    """Batches without end, reshuffled every epoch (set_epoch: accelerate's samplers seed by epoch)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def shuffled_loader(
    items: list,
    collate: Callable[[list], dict[str, torch.Tensor]],
    batch_size: int,
    seed: int,
    lengths: list[int] | None = None,
):
    """Batches of `items`, reshuffled every epoch from `seed`, turned into tensors by `collate`.

    With `lengths` (e.g. characters per text), each batch holds texts of similar length (LengthGroupedBatches), so
    padding to the batch's longest wastes little: on SST-2, whose texts run from 1 to ~60 tokens, random batches
    are mostly padding.
    """
    if lengths is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            list(items), batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator
        )
    return torch.utils.data.DataLoader(
        list(items), batch_sampler=LengthGroupedBatches(lengths, batch_size, seed), collate_fn=collate
    )


class LengthGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches of similar-length items: shuffle, sort each window of `window` batches by length, cut it into
    batches, shuffle the batches. Each pass (epoch) draws a new order from (seed, pass); every process of a
    data-parallel run draws the same one, so sharding its batches stays consistent.

    A pass has at least four windows, so that small data still gets new batch memberships each pass (a single
    sorted window would give the same batches every time, which slows SGD down).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 50):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.window = max(1, min(window, len(self.lengths) // (4 * batch_size)))
        self.passes = 0

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        self.passes += 1
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        span, batches = self.batch_size * self.window, []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return iter([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])

    def __len__(self) -> int:
        span = self.batch_size * self.window
        return sum(
            math.ceil(min(span, len(self.lengths) - start) / self.batch_size)
            for start in range(0, len(self.lengths), span)
        )
