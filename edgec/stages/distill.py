"""Distill stage: train the pruned student against the uncompressed teacher on unlabelled text.

The loop is written against accelerate.Accelerator, so the same code runs on one CPU, one GPU, or
many GPUs under `accelerate launch`; evaluation and checkpoint choice happen on the main process
and every decision to stop is broadcast, so all processes leave the loop at the same step.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list
from torch.optim.lr_scheduler import LambdaLR

from edgec.errors import ConfigError, InputError
from edgec.ops import distillation
from edgec.pipeline import Context
from edgec.recipe import DistillConfig
from edgec.source import Pooling, task_outputs
from edgec.stages.verify import measure_module, parity_score

log = logging.getLogger("edgec")


@dataclass(frozen=True)
class DistillResult:
    """What training left: the best-scoring weights and how the run went."""

    model: torch.nn.Module
    """A new fp32 module in eval mode holding the best weights (the input student is not touched)."""
    steps: int
    """Optimizer steps run."""
    best_step: int
    """Step whose weights were kept (0: training never beat the pruned start)."""
    best_score: float
    stopped: str
    """Why training ended: "steps", "minutes" or "early-stop"."""
    seconds: float
    history: tuple[tuple[int, float], ...]
    """(step, score) of every evaluation, step 0 first."""


@dataclass(frozen=True)
class _Task:
    """How to turn a model's forward pass into the task's outputs."""

    task: str
    pooling: Pooling | None
    input_names: tuple[str, ...]


def distill(ctx: Context) -> Context:
    """Stage: train ctx.source.model against ctx.teacher on ctx.train; keep the best-scoring weights."""
    if ctx.train is None:
        raise ConfigError("distillation needs training text; pass --distill FILE")
    if ctx.teacher is None:
        raise ConfigError("distillation needs a pruned model and its teacher; pass --prune FRACTION with --distill")
    config = ctx.recipe.distill or DistillConfig()
    # Never tokenize past what the model's position table (and the build's recipe) allows.
    config = dataclasses.replace(config, max_length=min(config.max_length, ctx.recipe.max_length))

    def evaluate(model: torch.nn.Module) -> float:
        row = measure_module(dataclasses.replace(ctx.source, model=model), "distill", ctx.evaluation, ctx.thresholds)
        return parity_score(row.metrics)

    texts = ctx.train.single_texts().texts
    result = distill_student(
        ctx.source.model, ctx.teacher, task=ctx.source.task, pooling=ctx.source.pooling, tokenizer=ctx.source.tokenizer,
        input_names=ctx.source.input_names, texts=texts, config=config, evaluate=evaluate, seed=ctx.recipe.seed,
    )
    note = {
        "texts": len(texts),
        "steps": result.steps,
        "best_step": result.best_step,
        "best_score": result.best_score,
        "stopped": result.stopped,
        "seconds": round(result.seconds, 2),
        "history": [list(entry) for entry in result.history],
    }
    return ctx.with_note("distill", note, source=dataclasses.replace(ctx.source, model=result.model))


def distill_student(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    *,
    task: str,
    pooling: Pooling | None,
    tokenizer,
    input_names: tuple[str, ...],
    texts: list[str],
    config: DistillConfig,
    evaluate: Callable[[torch.nn.Module], float],
    seed: int,
) -> DistillResult:
    """Train a copy of `student` to reproduce `teacher` on `texts`; return the copy with its best weights.

    `evaluate` scores a CPU fp32 model in eval mode (higher is better); it runs before training, every
    `config.eval_every` steps and at the end. Training stops at `config.steps`, after `config.minutes`,
    or after `config.patience` evaluations without improvement, whichever comes first.
    """
    if not texts:
        raise InputError("distillation needs at least one training text; the training file is empty")
    started = time.perf_counter()
    torch.manual_seed(seed)
    accelerator = _accelerator(config.bf16)
    keeper = _Keeper(copy.deepcopy(student).float().eval(), evaluate, accelerator)
    model = copy.deepcopy(student).float()
    # Dropout off: the target is a fixed, deterministic teacher function and the budget is small, so
    # the noise would only slow the fit. Autograd does not need train mode.
    model.eval()
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.learning_rate)
    scheduler = _schedule(optimizer, config, accelerator.num_processes, started)
    loader = _loader(tokenizer, texts, input_names, config.max_length, config.batch_size, seed)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    home = next(teacher.parameters()).device
    teacher.eval().to(accelerator.device)
    spec = _Task(task, pooling or Pooling(), input_names)
    run = _Run(accelerator, model, teacher, optimizer, scheduler, spec, config)
    try:
        deadline = started + config.minutes * 60 if config.minutes is not None else math.inf
        steps, stopped = _train(run, loader, keeper, deadline)
    finally:
        teacher.to(home)  # the teacher is the build's reference; later stages expect it where it was
        accelerator.free_memory()
    return DistillResult(
        model=keeper.best_model(), steps=steps, best_step=keeper.best_step, best_score=keeper.best_score,
        stopped=stopped, seconds=time.perf_counter() - started, history=tuple(keeper.history),
    )


@dataclass(frozen=True)
class _Run:
    """The prepared training objects of one distillation."""

    accelerator: Accelerator
    model: torch.nn.Module
    teacher: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    spec: _Task
    config: DistillConfig

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        self.accelerator.backward(self.loss(batch))
        self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # The teacher runs under the same autocast as the student: its targets cost half as much in
        # bf16, and their rounding is no larger than the student's own.
        with torch.no_grad(), self.accelerator.autocast():
            teacher_out, teacher_hidden = _forward(self.teacher, batch, self.spec)
        student_out, student_hidden = _forward(self.model, batch, self.spec)
        mask, config = batch["attention_mask"], self.config
        loss = distillation.output_loss(self.spec.task, student_out, teacher_out, mask, config.temperature)
        if config.hidden_weight > 0:
            loss = loss + config.hidden_weight * distillation.hidden_state_loss(student_hidden, teacher_hidden, mask)
        return loss


def _train(run: _Run, loader, keeper: _Keeper, deadline: float) -> tuple[int, str]:
    """The optimizer loop; returns (steps run, why it stopped)."""
    config = run.config
    keeper.check(0, run.model)  # the pruned start: the kept model can never be worse than it
    step, stopped = 0, None
    for batch in _cycle(loader):
        run.step(batch)
        step += 1
        if step % config.eval_every == 0 or step == config.steps:
            keeper.check(step, run.model)
        stopped = _agreed(run.accelerator, _stop_reason(step, keeper.stale, config, deadline))
        if stopped:
            break
    if keeper.last_step != step:  # stopped by the clock between evaluations
        keeper.check(step, run.model)
    return step, stopped


def _stop_reason(step: int, stale: int, config: DistillConfig, deadline: float) -> str | None:
    if step >= config.steps:
        return "steps"
    if stale >= config.patience:
        return "early-stop"
    if time.perf_counter() >= deadline:
        return "minutes"
    return None


def _forward(model, batch, spec: _Task) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(task outputs as TaskModule returns them, hidden states (layers + 1) x (batch, seq, hidden))."""
    out = model(**{name: batch[name] for name in spec.input_names}, output_hidden_states=True)
    return task_outputs(out, spec.task, spec.pooling, batch["attention_mask"]), out.hidden_states


class _Keeper:
    """Scores the weights on the main process and keeps the best; every process keeps the same copy."""

    def __init__(self, model: torch.nn.Module, evaluate: Callable[[torch.nn.Module], float], accelerator: Accelerator):
        self.model, self.evaluate, self.accelerator = model, evaluate, accelerator
        self.history: list[tuple[int, float]] = []
        self.last_step = -1  # on every process (history is the main process's alone)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step, self.best_score, self.stale = 0, -math.inf, 0

    def check(self, step: int, trained: torch.nn.Module) -> None:
        state = self.accelerator.get_state_dict(trained)  # a collective where weights are sharded
        improved = False
        if self.accelerator.is_main_process:
            self.model.load_state_dict(state)
            score = float(self.evaluate(self.model))
            self.history.append((step, score))
            improved = self.best_state is None or score > self.best_score  # the start is kept even if it scores nan
            self.stale = 0 if improved else self.stale + 1
            self.best_score = score if improved else self.best_score
            log.info("distill step %d: score %.4f (best %.4f)", step, score, self.best_score)
        self.last_step = step
        if _agreed(self.accelerator, improved):
            self.best_step = step
            self.best_state = {name: value.detach().to("cpu", copy=True) for name, value in state.items()}

    def best_model(self) -> torch.nn.Module:
        self.model.load_state_dict(self.best_state)
        return self.model.eval()


def _accelerator(bf16: bool) -> Accelerator:
    precision = "bf16" if bf16 else "no"
    # AcceleratorState is a process-wide singleton that refuses a second, different mixed precision,
    # yet one process may build several models (tests, notebooks). Forget the old choice but keep
    # the distributed set-up (PartialState) that `accelerate launch` made.
    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision)


def _schedule(optimizer: torch.optim.Optimizer, config: DistillConfig, processes: int, started: float) -> LambdaLR:
    """Linear warmup then linear decay over the run's budget: the steps, or the clock where minutes end it first.

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
        return max(0.0, (1.0 - progress) / (1.0 - config.warmup))

    return LambdaLR(optimizer, factor)


def _agreed(accelerator: Accelerator, value):
    """The main process's `value`, on every process: all processes stop, or keep weights, together."""
    if accelerator.num_processes == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Biases and LayerNorm scales (the 1-D parameters) are not decayed, as in BERT's own recipe.
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _loader(tokenizer, texts: list[str], input_names: tuple[str, ...], max_length: int, batch_size: int, seed: int):
    """Shuffled batches of texts, tokenized and padded per batch to their longest."""

    def collate(batch: list[str]) -> dict[str, torch.Tensor]:
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {name: encoded[name] for name in input_names}

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        list(texts), batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator
    )


def _cycle(loader) -> Iterator[dict[str, torch.Tensor]]:
    """Batches without end, reshuffled every epoch (set_epoch: accelerate's samplers seed by epoch)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1
