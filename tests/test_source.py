import json
import shutil

import pytest

from edgec.errors import InputError, UnsupportedModelError
from edgec.source import LoadOptions, Pooling, detect_task, load_source, read_pooling


@pytest.mark.parametrize(
    "architectures, task",
    [
        (["BertModel"], "feature-extraction"),
        (["RobertaForSequenceClassification"], "sequence-classification"),
        (["ElectraForTokenClassification"], "token-classification"),
        (["DistilBertForQuestionAnswering"], "question-answering"),
        (None, "feature-extraction"),
    ],
)
def test_task_from_config(architectures, task):
    assert detect_task({"architectures": architectures}) == task


def test_sentence_transformers_pooling_is_read(tiny_models):
    assert read_pooling(tiny_models("bert")) == Pooling("mean", normalize=True)


def test_plain_folder_defaults_to_mean_pooling(tmp_path):
    assert read_pooling(tmp_path) == Pooling("mean", normalize=False)


def test_task_override(tiny_models):
    source = load_source(tiny_models("bert", "sequence-classification"), task="feature-extraction")
    assert source.task == "feature-extraction" and source.output_names == ("sentence_embedding",)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "model")


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_source(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_source(tmp_path / "empty")


def test_corrupt_config(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert"), tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_source(folder)


def test_truncated_weights(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert"), tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match="weights do not load"):
        load_source(folder)


def test_unsupported_architecture(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        load_source(folder)


def test_remote_code_is_refused(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.MyModel"}}))
    with pytest.raises(InputError, match="--trust-remote-code"):
        load_source(folder)


def test_pickle_weights_need_allow_pickle(tiny_models, tmp_path):
    import torch
    from transformers import AutoModel

    folder = _copy(tiny_models("bert"), tmp_path)
    model = AutoModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="--allow-pickle"):
        load_source(folder)
    assert load_source(folder, options=LoadOptions(allow_pickle=True)).task == "feature-extraction"


def test_missing_tokenizer(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert"), tmp_path)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(InputError, match="tokenizer"):
        load_source(folder)


def test_distilbert_takes_no_token_types(tiny_models):
    assert load_source(tiny_models("distilbert")).input_names == ("input_ids", "attention_mask")
    assert load_source(tiny_models("bert")).input_names == ("input_ids", "attention_mask", "token_type_ids")


def test_a_repo_id_resolves_from_the_local_hf_cache_only(tiny_models, tmp_path, monkeypatch):
    """`org/name` loads from the HF cache layout (refs/main -> snapshots/<hash>); a miss never downloads."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_models("bert"), snapshot)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert load_source("acme/tiny").path == snapshot
    with pytest.raises(InputError, match="not in the local HF cache"):
        load_source("acme/absent")
