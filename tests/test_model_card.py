"""README.md of an artifact: a Hugging Face model card whose metadata huggingface_hub reads and whose code runs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from huggingface_hub import ModelCard

import edgec
from edgec.artifacts.model_card import base_model_id
from edgec.recipe import QuantConfig, Recipe


@pytest.fixture(scope="module", params=["feature-extraction", "sequence-classification"])
def built(request, tiny_models, data_files, tmp_path_factory):
    data = edgec.read_dataset(data_files["labels" if request.param == "sequence-classification" else "pairs"])
    out = tmp_path_factory.mktemp("card") / f"tiny-{request.param}"
    return edgec.build(
        tiny_models("bert", request.param),
        "ort-x86",
        recipe=Recipe(quant=QuantConfig(precision="int8")),
        calib=data,
        eval=data,
        out=out,
    )


def test_metadata_reads_as_a_model_card(built):
    card = ModelCard.load(built.path / "README.md")
    embedding = built.manifest.task == "feature-extraction"
    assert card.data.pipeline_tag == ("sentence-similarity" if embedding else "text-classification")
    assert card.data.library_name == ("sentence-transformers" if embedding else "transformers")
    assert {"edgec", "onnx", "int8", "ort-x86", "bert"} <= set(card.data.tags)
    assert card.data.base_model is None  # a local folder: no repository id to name
    text = card.text
    assert "## Parity" in text and "| artifact |" in text
    assert ("| mean cosine to the reference |" if embedding else "| top-1 agreement with the reference |") in text
    assert "Latency not measured yet" in text and "static int8 Q/DQ" in text


def test_the_cards_code_runs_on_the_artifact(built):
    """Every Python block of the card, pointed at the folder, runs: onnxruntime, sentence-transformers or the
    Optimum model with a transformers pipeline."""
    blocks = re.findall(r"```python\n(.*?)```", (built.path / "README.md").read_text(), flags=re.DOTALL)
    assert len(blocks) == 3
    namespace = {}  # one session, block after block, as a reader would run them
    for block in blocks:
        exec(block.replace("path/to/artifact", str(built.path)), namespace)  # noqa: S102 - our own generated snippet
    plain = namespace["outputs"]  # onnxruntime on "a first text"
    if built.manifest.task == "feature-extraction":
        assert namespace["model"][0].auto_model.path.resolve() == (built.path / "model.onnx").resolve()
        np.testing.assert_allclose(namespace["embeddings"][0], plain["sentence_embedding"][0], atol=1e-5)
        np.testing.assert_allclose(namespace["result"].last_hidden_state.numpy(), plain["last_hidden_state"], atol=1e-5)
    else:
        np.testing.assert_allclose(namespace["result"].logits.numpy(), plain["logits"], atol=1e-5)
        assert namespace["classifier"]("a first text")[0]["label"].startswith("LABEL_")


def test_base_model_is_named_for_a_model_from_the_hub_cache():
    cached = "/root/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/abc123"
    assert base_model_id(cached) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_id("/data/models/my-model") is None
