"""Distill stage: train the pruned student against the uncompressed teacher, within a CPU time budget.

The optimizer loop is edgec.compression.training.train, shared with fine-tuning; this file holds what is distillation's own:
the teacher's targets (computed once, stages.teacher_cache), the losses against them (ops.distillation), the
labels where the data has them, and the pairing of the student's kept layers with the teacher's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgec.artifacts.stage_notes import DistillNote
from edgec.compression import surgery
from edgec.compression.training import TrainResult, resolve_precision, shuffled_loader, train
from edgec.data import Dataset
from edgec.errors import ConfigError, InputError
from edgec.ops import distillation
from edgec.parity.ledger import parity_score
from edgec.parity.runtime import measure_module
from edgec.pipeline import Context, selection_data
from edgec.recipe import DistillConfig
from edgec.source import Pooling
from edgec.stages.teacher_cache import Encoded, TaskSpec, TeacherCache, build_cache, cache_note, encode

# A budget spent before training starts (by the cache or earlier pruning steps) still leaves one step.
_LEAST_MINUTES = 1e-6


@dataclass(frozen=True)
class Distillation:
    """What every distillation run of one build shares: the teacher, the tokenized data and the teacher's targets."""

    teacher: torch.nn.Module
    spec: TaskSpec
    encoded: Encoded
    cache: TeacherCache | None
    """None: the teacher runs at every step (config.teacher_cache off)."""
    layers: tuple[int, ...]
    """Teacher hidden-state indices the student's layers are fitted to."""
    config: DistillConfig


def distill(ctx: Context) -> Context:
    """Stage: train ctx.source.model against ctx.teacher on ctx.train until the budget's deadline; keep the best
    weights. The teacher's targets are computed once per build and kept in the context for later runs."""
    return distill_share(ctx, 1.0)


def distill_share(ctx: Context, share: float) -> Context:
    """The distill stage using `share` of the time left before the build's deadline (an iterative schedule leaves
    the rest to later steps). The deadline starts here, config.minutes ahead, unless an earlier stage set it."""
    if ctx.train is None:
        raise ConfigError("distillation needs training text; pass --distill FILE")
    if ctx.teacher is None:
        raise ConfigError("distillation needs a pruned model and its teacher; pass --prune FRACTION with --distill")
    config = ctx.recipe.distill or DistillConfig()
    # Never tokenize past what the model's position table (and the build's recipe) allows.
    config = dataclasses.replace(config, max_length=min(config.max_length, ctx.recipe.max_length))
    if ctx.deadline is None and config.minutes is not None:
        ctx = dataclasses.replace(ctx, deadline=time.perf_counter() + 60 * config.minutes)
    # The cache serves every later distillation of the build, so its bound is a share of all the time left.
    seconds = None if ctx.deadline is None else config.cache_share * (ctx.deadline - time.perf_counter())
    prepared = ctx.distillation or prepare(ctx.teacher, ctx.source, ctx.train, config, ctx.recipe.seed, seconds)

    selection = selection_data(ctx)  # the early stop and best checkpoint choose on it, never on the gate's data

    def evaluate(model: torch.nn.Module) -> float:
        row = measure_module(dataclasses.replace(ctx.source, model=model), "distill", selection, ctx.thresholds)
        return parity_score(row.metrics)

    remaining = None if ctx.deadline is None else share * (ctx.deadline - time.perf_counter()) / 60
    result = run(prepared, ctx.source.model, evaluate, seed=ctx.recipe.seed, minutes=remaining)
    previous = ctx.notes.distill
    runs = [*((previous.runs or [previous]) if previous else []), result_note(prepared, result)]
    note = dataclasses.replace(runs[-1], runs=runs) if len(runs) > 1 else runs[-1]
    return ctx.with_note(
        "distill", note, source=dataclasses.replace(ctx.source, model=result.model), distillation=prepared
    )


def prepare(
    teacher: torch.nn.Module, source, data: Dataset, config: DistillConfig, seed: int, seconds: float | None = None
) -> Distillation:
    """Tokenize `data` once and, unless config.teacher_cache is off, run the teacher once over it (within
    config.cache_mb, and within `seconds` when given). `source` gives the tokenizer, task, pooling and input names."""
    if not len(data):
        raise InputError("distillation needs at least one training text; the training file is empty")
    spec = TaskSpec(source.task, source.pooling or Pooling(), source.input_names)
    label2id = {str(name): i for i, name in (teacher.config.id2label or {}).items()}
    encoded = encode(source.tokenizer, data, source.task, source.input_names, config.max_length, label2id)
    layers = (
        distillation.teacher_layers(len(surgery.encoder_layers(teacher)), config.hidden_layers)
        if config.hidden_weight > 0 and config.hidden_layers > 0
        else ()
    )
    cache = None
    if config.teacher_cache:
        precision, _ = resolve_precision(config.precision)
        teacher.eval()
        cache = build_cache(
            teacher,
            encoded,
            spec,
            layers,
            budget_mb=config.cache_mb,
            seconds=seconds,
            precision=precision,
            seed=seed,
        )
    return Distillation(teacher, spec, encoded, cache, layers, config)


def distill_student(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    *,
    source,
    data: Dataset,
    config: DistillConfig,
    evaluate: Callable[[torch.nn.Module], float],
    seed: int,
) -> TrainResult:
    """Train a copy of `student` to reproduce `teacher` on `data`; return the copy with its best weights.

    config.minutes bounds the whole distillation, the teacher's cache included. `evaluate` scores a CPU fp32 model
    in eval mode (higher is better); see edgec.compression.training.train for when it runs and when training stops.
    """
    started = time.perf_counter()
    seconds = None if config.minutes is None else config.cache_share * 60 * config.minutes
    prepared = prepare(teacher, source, data, config, seed, seconds)
    minutes = None if config.minutes is None else config.minutes - (time.perf_counter() - started) / 60
    return run(prepared, student, evaluate, seed=seed, minutes=minutes)


def run(
    prepared: Distillation,
    student: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    seed: int,
    minutes: float | None,
) -> TrainResult:
    """One training run of a copy of `student` against the prepared targets, for at most `minutes`."""
    config = prepared.config  # a TrainConfig with distillation's own settings added: the loop takes it as it is
    training = config if minutes is None else dataclasses.replace(config, minutes=max(minutes, _LEAST_MINUTES))
    examples = prepared.cache.encoded if prepared.cache is not None else prepared.encoded
    collate = prepared.cache.batch if prepared.cache is not None else examples.inputs
    loader = shuffled_loader(list(range(len(examples))), collate, training.batch_size, seed, examples.lengths.tolist())
    loss = student_loss(prepared, student)
    home = next(prepared.teacher.parameters()).device
    frozen = frozenset() if config.train_word_embeddings else word_embeddings(student)
    try:
        return train(
            student,
            loss,
            loader,
            training,
            evaluate,
            seed=seed,
            dropout=False,
            description="distillation",
            frozen=frozen,
        )
    finally:
        prepared.teacher.to(home)  # the teacher is the build's reference; later stages expect it where it was


def word_embeddings(model: torch.nn.Module) -> frozenset[str]:
    """The name of `model`'s word embedding table among its parameters (none for a model without one)."""
    table = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return frozenset(name for name, p in model.named_parameters() if table is not None and p is table.weight)


def student_loss(prepared: Distillation, student: torch.nn.Module):
    """The loss of a batch: the teacher's outputs, its hidden states at the paired layers and, on labelled
    classification data, the labels. Student layers and channels are read off `student` (its origins in the
    teacher), so a student with fewer layers or a narrower hidden size pairs up with the same targets."""
    config, spec = prepared.config, prepared.spec
    pairs = distillation.layer_pairs(surgery.layer_origins(student), prepared.layers)
    stored = {t: k for k, t in enumerate(prepared.layers)}
    channels = surgery.hidden_channels(student)
    channels = None if channels is None else torch.tensor(channels)

    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        teacher_out, teacher_hidden = _targets(prepared, batch)
        student_out, student_hidden = spec.forward(model, batch)
        mask = batch["attention_mask"]
        value = distillation.output_loss(spec.task, student_out, teacher_out, mask, config.temperature, channels)
        if "labels" in batch and config.label_weight > 0:
            value = distillation.with_labels(value, student_out[0], batch["labels"], config.label_weight)
        if pairs:
            mine = [student_hidden[s] for s, _ in pairs]
            theirs = [teacher_hidden[..., stored[t], :] for _, t in pairs]
            theirs = theirs if channels is None else [h.index_select(-1, channels.to(h.device)) for h in theirs]
            value = value + config.hidden_weight * distillation.hidden_state_loss(mine, theirs, mask)
        return value

    return loss


def _targets(prepared: Distillation, batch: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The teacher's outputs and its stored-layer states (batch, seq, layers, hidden): cached, or computed now."""
    if prepared.cache is not None:
        outputs = tuple(batch[f"teacher_out_{k}"] for k in range(len(prepared.cache.outputs)))
        return outputs, batch.get("teacher_hidden")
    teacher = prepared.teacher.to(batch["attention_mask"].device)  # where the loop put the batch
    with torch.no_grad():
        outputs, states = prepared.spec.forward(teacher, batch)
    hidden = torch.stack([states[t] for t in prepared.layers], dim=2) if prepared.layers else None
    return outputs, hidden


def result_note(prepared: Distillation, result: TrainResult) -> DistillNote:
    """The report's record of one distillation run."""
    examples = len(prepared.cache.encoded if prepared.cache is not None else prepared.encoded)
    return DistillNote(
        texts=examples,
        steps=result.steps,
        examples_per_second=round(result.steps * prepared.config.batch_size / max(result.seconds, 1e-9), 2),
        best_step=result.best_step,
        best_score=result.best_score,
        stopped=result.stopped,
        seconds=round(result.seconds, 2),
        precision=result.precision_reason,
        ranks=list(result.ranks),
        teacher_cache=cache_note(prepared.cache) if prepared.cache is not None else None,
        layers=[list(p) for p in distillation.layer_pairs(surgery.layer_origins(result.model), prepared.layers)],
        history=[list(entry) for entry in result.history],
    )
