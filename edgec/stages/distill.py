"""Distill stage: train the pruned student against the uncompressed teacher on unlabelled text.

The optimizer loop is edgec.training.train, shared with fine-tuning; this file holds what is
distillation's own: the teacher's targets and the loss against them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgec.errors import ConfigError, InputError
from edgec.ops import distillation
from edgec.parity.ledger import parity_score
from edgec.parity.runtime import measure_module
from edgec.pipeline import Context, selection_data
from edgec.recipe import DistillConfig
from edgec.source import Pooling, task_outputs
from edgec.training import TrainResult, shuffled_loader, train


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

    selection = selection_data(ctx)  # the early stop and best checkpoint choose on it, never on the gate's data

    def evaluate(model: torch.nn.Module) -> float:
        row = measure_module(dataclasses.replace(ctx.source, model=model), "distill", selection, ctx.thresholds)
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
        "precision": result.precision_reason,
        "ranks": list(result.ranks),
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
) -> TrainResult:
    """Train a copy of `student` to reproduce `teacher` on `texts`; return the copy with its best weights.

    `evaluate` scores a CPU fp32 model in eval mode (higher is better); see edgec.training.train for when
    it runs and when training stops.
    """
    if not texts:
        raise InputError("distillation needs at least one training text; the training file is empty")
    spec = _Task(task, pooling or Pooling(), input_names)
    home = next(teacher.parameters()).device
    teacher.eval()

    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        teacher.to(batch["attention_mask"].device)  # where the loop put the batch (a no-op after the first)
        with torch.no_grad():
            teacher_out, teacher_hidden = _forward(teacher, batch, spec)
        student_out, student_hidden = _forward(model, batch, spec)
        mask = batch["attention_mask"]
        value = distillation.output_loss(task, student_out, teacher_out, mask, config.temperature)
        if config.hidden_weight > 0:
            value = value + config.hidden_weight * distillation.hidden_state_loss(student_hidden, teacher_hidden, mask)
        return value

    training = config.training()

    def collate(batch: list[str]) -> dict[str, torch.Tensor]:  # padded per batch to its longest text
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=training.max_length, return_tensors="pt")
        return {name: encoded[name] for name in input_names}

    loader = shuffled_loader(texts, collate, training.batch_size, seed, [len(t) for t in texts])
    try:
        return train(student, loss, loader, training, evaluate, seed=seed, dropout=False, description="distillation")
    finally:
        teacher.to(home)  # the teacher is the build's reference; later stages expect it where it was


def _forward(model, batch, spec: _Task) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(task outputs as TaskModule returns them, hidden states (layers + 1) x (batch, seq, hidden))."""
    out = model(**{name: batch[name] for name in spec.input_names}, output_hidden_states=True)
    return task_outputs(out, spec.task, spec.pooling, batch["attention_mask"]), out.hidden_states
