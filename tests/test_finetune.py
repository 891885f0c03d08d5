"""edgec finetune on tiny models: the loss falls, the best checkpoint is saved as a folder that loads as is."""

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification
from typer.testing import CliRunner

import edgec
from edgec.cli.main import app
from edgec.compression.finetune import class_labels, finetune
from edgec.errors import ConfigError, InputError
from edgec.recipe import TrainConfig
from edgec.source import load_source

FAST = TrainConfig(
    steps=30, batch_size=8, learning_rate=1e-3, warmup=0.1, eval_every=10, patience=100, precision="fp32"
)
# A fresh 3-way head on a 20-sentence set barely moves in 30 steps at 1e-3 (the loss wanders around ln 3); this learns.
CLASSIFY = TrainConfig(
    steps=40, batch_size=8, learning_rate=1e-2, warmup=0.1, eval_every=10, patience=100, precision="fp32"
)


def test_classifier_fine_tuning_lowers_the_loss_and_saves_a_loadable_folder(tiny_models, data_files, tmp_path):
    data = edgec.read_dataset(data_files["labels"])
    record = finetune(
        tiny_models("bert"),
        task="sequence-classification",
        train_data=data,
        eval_data=data,
        config=CLASSIFY,
        out=tmp_path / "ft",
    )
    assert record["losses"][-1][1] < record["losses"][0][1] and record["best_score"] >= record["start_score"]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft")
    assert loaded.config.num_labels == 3 and loaded.config.id2label == {0: "0", 1: "1", 2: "2"}
    assert not (tmp_path / "ft" / "modules.json").exists(), "a classifier keeps no sentence-transformers pooling files"
    assert json.loads((tmp_path / "ft" / "edgec_finetune.json").read_text())["best_step"] == record["best_step"]
    assert load_source(tmp_path / "ft").task == "sequence-classification"  # edgec build takes it as is


def test_similarity_fine_tuning_raises_spearman_and_keeps_pooling(tiny_models, data_files, tmp_path):
    data = edgec.read_dataset(data_files["pairs"])
    record = finetune(
        tiny_models("bert"),
        task="feature-extraction",
        train_data=data,
        eval_data=data,
        config=FAST,
        out=tmp_path / "ft",
    )
    assert record["metric"] == "spearman" and record["best_score"] > record["start_score"]
    assert (tmp_path / "ft" / "modules.json").exists() and (tmp_path / "ft" / "1_Pooling" / "config.json").exists()
    best = AutoModel.from_pretrained(tmp_path / "ft")
    start = AutoModel.from_pretrained(tiny_models("bert"))
    assert not torch.equal(best.embeddings.word_embeddings.weight, start.embeddings.word_embeddings.weight)


def test_bad_training_data_is_refused_before_any_work(tiny_models, data_files, tmp_path):
    texts, pairs = edgec.read_dataset(data_files["calib"]), edgec.read_dataset(data_files["pairs"])
    with pytest.raises(InputError, match="needs a label"):
        finetune(
            tiny_models("bert"),
            task="sequence-classification",
            train_data=texts,
            eval_data=texts,
            config=FAST,
            out=tmp_path / "a",
        )
    with pytest.raises(InputError, match="text_pair and score"):
        finetune(
            tiny_models("bert"),
            task="feature-extraction",
            train_data=texts,
            eval_data=pairs,
            config=FAST,
            out=tmp_path / "b",
        )
    with pytest.raises(ConfigError, match="not token-classification"):
        finetune(
            tiny_models("bert"),
            task="token-classification",
            train_data=pairs,
            eval_data=pairs,
            config=FAST,
            out=tmp_path / "c",
        )
    assert list(tmp_path.iterdir()) == []


def test_class_labels_are_ids_or_sorted_names():
    names = edgec.Dataset((edgec.Example("a", label="pos"), edgec.Example("b", label="neg")), "x")
    assert class_labels(names) == ("neg", "pos")
    gaps = edgec.Dataset((edgec.Example("a", label=1), edgec.Example("b", label=3)), "x")
    with pytest.raises(InputError, match="class ids 0..1"):
        class_labels(gaps)


def test_finetune_command(tiny_models, data_files, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tiny_models("bert")),
            "--data",
            str(data_files["labels"]),
            "--eval",
            str(data_files["labels"]),
            "--steps",
            "10",
            "--eval-every",
            "5",
            "--batch-size",
            "8",
            "--precision",
            "fp32",
            "--out",
            str(tmp_path / "ft"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best" in result.stdout and (tmp_path / "ft" / "model.safetensors").exists()
    bad = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tiny_models("bert")),
            "--data",
            str(data_files["labels"]),
            "--eval",
            str(data_files["labels"]),
            "--schedule",
            "step",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "unknown schedule" in bad.stderr
