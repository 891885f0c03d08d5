"""The files that let other libraries load an ONNX Runtime artifact folder as it is.

- Optimum's `ORTModelFor*.from_pretrained(FOLDER)` and transformers pipelines read `config.json` (the model
  type, and a classifier's id2label) next to `model.onnx`.
- sentence-transformers' `SentenceTransformer(FOLDER, backend="onnx")` reads `modules.json`, then runs the ONNX
  through `ORTModelForFeatureExtraction` (the graph's `last_hidden_state` output) and its own Pooling and
  Normalize modules, configured by `1_Pooling/config.json` and `sentence_bert_config.json` (truncation).
  Those files are written from the pooling edgec compiled into `sentence_embedding`, so both paths compute
  the same vectors; without them sentence-transformers would fall back to mean pooling, unnormalized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from edgec.compression.surgery import hidden_size
from edgec.pipeline import Context
from edgec.source import Pooling

_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
# Kept from the source where it has one: prompts and the similarity function sentence-transformers applies.
_SENTENCE_TRANSFORMERS_CONFIG = "config_sentence_transformers.json"


def write_library_files(ctx: Context, folder: Path) -> tuple[Path, ...]:
    """config.json for every task; the sentence-transformers module files for an embedding model."""
    ctx.source.model.config.save_pretrained(folder)
    written = [folder / "config.json"]
    if ctx.source.task == "feature-extraction":
        written += _sentence_transformers_files(ctx, folder)
    return tuple(written)


def _sentence_transformers_files(ctx: Context, folder: Path) -> list[Path]:
    pooling = cast(Pooling, ctx.source.pooling)  # feature extraction always has one
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    dimension = hidden_size(ctx.source.model)
    modes = {key: mode == pooling.mode for mode, key in _POOLING_KEYS.items()}
    pooling_config = {"word_embedding_dimension": dimension} | modes
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling_config,
        # edgec run truncates at the recipe's max_length; sentence-transformers then truncates at the same length.
        "sentence_bert_config.json": {"max_seq_length": ctx.recipe.max_length, "do_lower_case": False},
    }
    source_config = ctx.source.path / _SENTENCE_TRANSFORMERS_CONFIG
    if source_config.is_file():
        files[_SENTENCE_TRANSFORMERS_CONFIG] = json.loads(source_config.read_text())
    for name, content in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return [folder / name for name in files]
