"""Loading a Hugging Face model folder: checks, task detection, pooling, and the reference module."""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from edgec.artifacts.stage_notes import PruneNote
from edgec.compression.surgery import remove_dead_units, standard_layout
from edgec.errors import InputError, UnsupportedModelError, first_line
from edgec.recipe import TASKS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta-v2", "modernbert")
OUTPUT_NAMES = {
    "feature-extraction": ("sentence_embedding",),
    "sequence-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
# The encoder's per-token output, as transformers and Optimum name it; ONNX Runtime embedding artifacts return it too.
TOKEN_STATES = "last_hidden_state"
# Outputs with one row per token: compared over real tokens only, padding masked out.
TOKEN_LEVEL_TASKS = ("token-classification", "question-answering")
# Position ids of these models start after the padding index, so that many table rows are unusable.
_PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "mpnet")
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence embedding (sentence-transformers' Pooling + Normalize)."""

    mode: str = "mean"
    normalize: bool = False


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """What edgec may execute while loading a model; both are off unless the user trusts the source."""

    trust_remote_code: bool = False
    """Run the model folder's own Python code (config.json auto_map)."""
    allow_pickle: bool = False
    """Load pickle checkpoints (pytorch_model.bin), which can run code; safetensors otherwise."""


@dataclass(frozen=True)
class Source:
    """A loaded model: the module, its tokenizer and what edgec learned about it."""

    path: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    task: str
    model_type: str
    pooling: Pooling | None
    weight_files: tuple[Path, ...]

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES[self.task]

    @property
    def input_names(self) -> tuple[str, ...]:
        """The tokenizer outputs the model takes (DistilBERT, RoBERTa-style models ignore token types)."""
        accepted = inspect.signature(self.model.forward).parameters
        uses_types = "token_type_ids" in accepted and getattr(self.model.config, "type_vocab_size", 0) > 1
        return ("input_ids", "attention_mask", "token_type_ids") if uses_types else ("input_ids", "attention_mask")

    @property
    def max_length(self) -> int:
        """The longest input the model's position table and tokenizer allow."""
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", 512)
        if self.model_type in _PADDING_OFFSET_POSITIONS:
            positions -= (config.pad_token_id or 0) + 1
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", positions)
        return min(positions, tokenizer_limit if tokenizer_limit < 1_000_000 else positions)

    def reference_module(self) -> TaskModule:
        return TaskModule(self.model, self.task, self.pooling)


class TaskModule(torch.nn.Module):
    """The model with its task head and pooling, returning exactly the artifact's outputs."""

    def __init__(self, model: torch.nn.Module, task: str, pooling: Pooling | None):
        super().__init__()
        self.model, self.task, self.pooling = model, task, pooling

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return task_outputs(self.model(**kwargs), self.task, self.pooling, attention_mask)


def task_outputs(out, task: str, pooling: Pooling | None, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A transformers model output -> the artifact's outputs for the task (pooled embedding or logits)."""
    if task == "feature-extraction":
        return (pool(out.last_hidden_state, attention_mask, pooling),)
    if task == "question-answering":
        return out.start_logits, out.end_logits
    return (out.logits,)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden), as sentence-transformers computes it."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "cls":
        pooled = hidden[:, 0]
    elif pooling.mode == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).amax(dim=1)
    else:
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1, eps=1e-12) if pooling.normalize else pooled


def resolve_model_dir(model: str | Path) -> Path:
    """A local folder, or a repository id already in the local Hugging Face cache (never a download)."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"model {model} is a file; pass the folder that holds config.json and the weights")
    if str(model).count("/") == 1 and not str(model).startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(model), local_files_only=True))
        except Exception:  # noqa: BLE001, S110 - any cache miss means the same thing here
            pass
    raise InputError(
        f"model folder {model} does not exist (and it is not in the local HF cache); pass a local model folder"
    )


def read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(f"{path} has no config.json; pass a Hugging Face model folder (save_pretrained output)")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_file} is not valid JSON ({exc}); re-save the model with save_pretrained") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise InputError(f"{config_file} has no model_type; re-save the model with save_pretrained")
    return config


def detect_task(config: dict) -> str:
    """The task named by config.json's architectures; feature-extraction for a bare encoder."""
    for arch in config.get("architectures") or []:
        for suffix, task in (
            ("ForSequenceClassification", "sequence-classification"),
            ("ForTokenClassification", "token-classification"),
            ("ForQuestionAnswering", "question-answering"),
        ):
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


def read_pooling(path: Path) -> Pooling:
    """sentence-transformers' pooling and normalize modules, if the folder has them; mean otherwise."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return Pooling()
    modules = json.loads(modules_file.read_text())
    mode, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            pooling_config = json.loads((path / module["path"] / "config.json").read_text())
            modes = [name for key, name in _POOLING_MODES.items() if pooling_config.get(key)]
            unsupported = [
                k for k, v in pooling_config.items() if k.startswith("pooling_mode") and v and k not in _POOLING_MODES
            ]
            if unsupported or len(modes) != 1:
                raise UnsupportedModelError(
                    f"{path}: pooling {', '.join(unsupported or modes) or 'none'} is not supported; "
                    "use exactly one of mean, cls or max pooling"
                )
            mode = modes[0]
        elif kind.endswith("Normalize"):
            normalize = True
    return Pooling(mode, normalize)


def find_weights(path: Path, allow_pickle: bool) -> tuple[Path, ...]:
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        return tuple(safetensors)
    pickles = sorted(path.glob("pytorch_model*.bin"))
    if pickles and not allow_pickle:
        raise InputError(
            f"{path} holds only pickle weights ({pickles[0].name}), which can run code when loaded; "
            "convert them to safetensors or pass --allow-pickle if you trust the source"
        )
    if pickles:
        return tuple(pickles)
    raise InputError(f"{path} has no model weights (*.safetensors); pass a folder written by save_pretrained")


def load_source(
    model: str | Path,
    *,
    task: str | None = None,
    options: LoadOptions = LoadOptions(),
    labels: tuple[str, ...] | None = None,
) -> Source:
    """Load and check a model folder; every problem is an InputError that names the fix.

    `labels` (class names in id order) gives a classifier a head of that many classes, newly initialized
    where the checkpoint's head differs: the start of fine-tuning.
    """
    trust_remote_code, allow_pickle = options.trust_remote_code, options.allow_pickle
    path = resolve_model_dir(model)
    config = read_config(path)
    model_type = config["model_type"]
    if config.get("auto_map") and not trust_remote_code:
        raise InputError(
            f"{path} needs remote code (auto_map in config.json); pass --trust-remote-code if you trust it"
        )
    if model_type not in SUPPORTED_MODEL_TYPES and not trust_remote_code:
        raise UnsupportedModelError(
            f"architecture {model_type!r} is not supported; use one of {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    task = task or detect_task(config)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    weight_files = find_weights(path, allow_pickle)
    tokenizer = _load_tokenizer(path, trust_remote_code)
    module = _load_module(path, task, trust_remote_code, allow_pickle, labels)
    # A pruned model saved in transformers' fixed-width layout carries zero-weight padding units
    # (surgery.standard_layout); removing them is exact and gives back the smaller matrices.
    remove_dead_units(module)
    pooling = read_pooling(path) if task == "feature-extraction" else None
    return Source(path, module, tokenizer, task, model_type, pooling, weight_files)


def _load_tokenizer(path: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for one cause
        raise InputError(f"{path}: the tokenizer does not load ({first_line(exc)}); save it beside the model") from None


def _load_module(
    path: Path, task: str, trust_remote_code: bool, allow_pickle: bool, labels: tuple[str, ...] | None
) -> torch.nn.Module:
    import transformers

    head = (
        {}
        if labels is None
        else {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "ignore_mismatched_sizes": True,
        }
    )
    auto_class = {
        "feature-extraction": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "token-classification": transformers.AutoModelForTokenClassification,
        "question-answering": transformers.AutoModelForQuestionAnswering,
    }[task]
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "weights not initialized" noise is checked below instead
    try:
        module, info = auto_class.from_pretrained(
            path,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            output_loading_info=True,
            **head,
        )
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"{path}: the weights do not load ({first_line(exc)}); the file may be truncated or corrupt, re-save the model"
        ) from None
    finally:
        transformers.logging.set_verbosity(previous)
    missing = [k for k in info.get("missing_keys", []) if task != "feature-extraction" or "pooler" not in k]
    if missing and task == "feature-extraction":
        raise InputError(f"{path}: weights lack {len(missing)} tensors (e.g. {missing[0]}); the folder is incomplete")
    if missing:
        logging.getLogger("edgec").warning(
            "%s: %d head tensors are newly initialized: %s", path, len(missing), missing[:3]
        )
    return module.float().eval()  # the reference is fp32 whatever dtype the checkpoint was saved in


# sentence-transformers files that describe pooling and normalization; a saved embedding model keeps them.
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def save_model(source: Source, folder: Path, model: torch.nn.Module | None = None) -> None:
    """A Hugging Face folder: weights (`model`, default source.model), tokenizer, and (embedding models)
    the sentence-transformers files that say how to pool and normalize."""
    (model or source.model).save_pretrained(folder, safe_serialization=True)
    source.tokenizer.save_pretrained(folder)
    if source.task != "feature-extraction":  # a classifier made from an embedding checkpoint is no longer one
        return
    for name in _SENTENCE_TRANSFORMERS_FILES:
        if (source.path / name).is_file():
            (folder / name).write_bytes((source.path / name).read_bytes())
    for module_dir in source.path.glob("*_*"):  # sentence-transformers module folders, e.g. 1_Pooling
        if module_dir.is_dir() and (module_dir / "config.json").is_file():
            (folder / module_dir.name).mkdir(exist_ok=True)
            for file in module_dir.iterdir():
                if file.is_file():
                    (folder / module_dir.name / file.name).write_bytes(file.read_bytes())


def save_pruned(pruned: Source, summary: PruneNote, folder: Path) -> None:
    """Write a pruned model (the prune stage's `summary` says what it removed) as a Hugging Face folder: weights in
    transformers' layout, tokenizer, pooling."""
    names = (
        "fraction",
        "units",
        "macs_before",
        "macs_after",
        "heads_after",
        "ffn_after",
        "layers_removed",
        "hidden_after",
        "seconds",
    )
    layout = {k: v for k, v in summary.to_json().items() if k in names}  # config.json's edgec_pruning record
    save_model(pruned, folder, model=standard_layout(pruned.model, layout))
