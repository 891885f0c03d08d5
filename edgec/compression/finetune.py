"""edgec finetune: train a pretrained model on labelled data ("train large") through edgec's one training loop.

Two tasks: sequence classification (cross-entropy on class labels) and sentence-pair similarity for an
embedding model (the cosine of the two pooled embeddings regressed onto the pair's score, as
sentence-transformers' CosineSimilarityLoss does). The result is a Hugging Face folder that edgec build,
prune and transformers all load as is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from edgec.artifacts.artifact import check_output_path
from edgec.compression.training import TrainResult, shuffled_loader, train
from edgec.data import Dataset
from edgec.errors import ConfigError, InputError
from edgec.parity.evalset import classifier_labels, eval_texts, task_metric
from edgec.processes import main_process_output
from edgec.recipe import TrainConfig
from edgec.running.inference import collect_outputs, encode_batches, torch_forward
from edgec.source import LoadOptions, Pooling, Source, TaskModule, load_source, save_model, task_outputs

FINETUNE_TASKS = ("sequence-classification", "feature-extraction")
RECORD_FILE = "edgec_finetune.json"


def finetune(
    model: str | Path,
    *,
    task: str,
    train_data: Dataset,
    eval_data: Dataset,
    config: TrainConfig,
    out: str | Path,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    seed: int = 0,
) -> dict:
    """Fine-tune `model` for `task` on `train_data`, keep the weights that score best on `eval_data`, save them to `out`.

    Returns what the run did (also written to OUT/edgec_finetune.json).
    """
    out = Path(out)
    check_output_path(out, force=force)
    for data, role in ((train_data, "training"), (eval_data, "eval")):
        _check_data(task, data, role)
    labels = class_labels(train_data) if task == "sequence-classification" else None
    source = load_source(model, task=task, options=load, labels=labels)
    config = dataclasses.replace(config, max_length=min(config.max_length, source.max_length))
    evaluate, metric = _evaluator(source, eval_data)
    loss, loader = _objective(source, train_data, config, seed)
    result = train(source.model, loss, loader, config, evaluate, seed=seed, dropout=True, description="fine-tuning")
    record = _record(task, metric, train_data, eval_data, config, result)
    with main_process_output(out, force=force) as staging:  # under torchrun every process trains; one writes
        save_model(dataclasses.replace(source, model=result.model), staging)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def class_labels(data: Dataset) -> tuple[str, ...]:
    """Class names in id order: integer labels must already be the ids 0..N-1; names are sorted."""
    values = {e.label for e in data.examples}
    if all(isinstance(v, int) for v in values):
        if values != set(range(len(values))):
            raise InputError(
                f"{data.source}: integer labels must be the class ids 0..{len(values) - 1}, got {sorted(values)[:10]}"
            )
        return tuple(str(i) for i in range(len(values)))
    return tuple(sorted(str(v) for v in values))


def _check_data(task: str, data: Dataset, role: str) -> None:
    if task not in FINETUNE_TASKS:
        raise ConfigError(f"edgec finetune trains {' or '.join(FINETUNE_TASKS)}, not {task}; pass --task")
    if task == "sequence-classification" and not data.has_labels:
        raise InputError(f"{data.source}: classification {role} data needs a label on every example")
    if task == "feature-extraction" and not (data.has_pairs and data.has_scores):
        raise InputError(f"{data.source}: similarity {role} data needs text, text_pair and score on every example")


def _evaluator(source: Source, data: Dataset) -> tuple[Callable[[torch.nn.Module], float], str]:
    """The task metric on the eval data (accuracy % or Spearman x100): what the best checkpoint is chosen by."""
    batches = encode_batches(source.tokenizer, eval_texts(source.task, data), max_length=source.max_length)
    labels = classifier_labels(source, data)

    def evaluate(model: torch.nn.Module) -> float:
        forward = torch_forward(TaskModule(model, source.task, source.pooling), source.input_names, source.output_names)
        outputs = collect_outputs(forward, batches, token_level=False, description="evaluation")
        return next(iter(task_metric(source.task, outputs, data, labels).values()))

    return evaluate, "accuracy" if source.task == "sequence-classification" else "spearman"


def _label2id(source: Source) -> dict[str, int]:
    """Class name -> id of the classifier's head (empty for an embedding model)."""
    if source.task == "feature-extraction":
        return {}
    return {str(name): i for i, name in source.model.config.id2label.items()}


def _objective(source: Source, data: Dataset, config: TrainConfig, seed: int):
    """The loss and the shuffled loader of training batches for the source's task."""
    tokenizer, names = source.tokenizer, source.input_names

    def encode(texts: list[str], pairs: list[str] | None = None) -> dict[str, torch.Tensor]:
        encoded = tokenizer(
            texts, pairs, padding=True, truncation=True, max_length=config.max_length, return_tensors="pt"
        )
        return {name: encoded[name] for name in names}

    if source.task == "sequence-classification":
        label2id = _label2id(source)

        def collate(batch):
            pairs = [e.text_pair for e in batch] if batch[0].text_pair is not None else None
            return {
                **encode([e.text for e in batch], pairs),
                "labels": torch.tensor([label2id[str(e.label)] for e in batch]),
            }

        def loss(model, batch):
            logits = model(**{name: batch[name] for name in names}).logits
            return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
    else:
        low, high = min(e.score for e in data.examples), max(e.score for e in data.examples)
        pooling = source.pooling or Pooling()

        def collate(batch):
            scores = torch.tensor([(e.score - low) / max(high - low, 1e-12) for e in batch], dtype=torch.float32)
            return {"a": encode([e.text for e in batch]), "b": encode([e.text_pair for e in batch]), "score": scores}

        def loss(model, batch):
            # Cosine of the two pooled embeddings regressed onto the pair's score scaled to [0, 1].
            a, b = (
                task_outputs(model(**batch[side]), "feature-extraction", pooling, batch[side]["attention_mask"])[0]
                for side in "ab"
            )
            cosine = torch.nn.functional.cosine_similarity(a.float(), b.float())
            return torch.nn.functional.mse_loss(cosine, batch["score"])

    lengths = [len(e.text) + len(e.text_pair or "") for e in data.examples]
    return loss, shuffled_loader(list(data.examples), collate, config.batch_size, seed, lengths)


def _record(
    task: str, metric: str, train_data: Dataset, eval_data: Dataset, config: TrainConfig, result: TrainResult
) -> dict:
    return {
        "task": task,
        "metric": metric,
        "train_data": train_data.source,
        "train_examples": len(train_data),
        "eval_data": eval_data.source,
        "eval_examples": len(eval_data),
        "config": dataclasses.asdict(config),
        "start_score": result.history[0][1],
        "best_score": result.best_score,
        "best_step": result.best_step,
        "steps": result.steps,
        "stopped": result.stopped,
        "seconds": round(result.seconds, 1),
        "precision": result.precision,
        "precision_reason": result.precision_reason,
        "processes": len(result.ranks),
        "ranks": list(result.ranks),
        "history": [list(h) for h in result.history],
        "losses": [list(loss) for loss in result.losses],
    }
