"""Fault injection: every kind of damage to an artifact makes `edgec parity ARTIFACT` (no source model, no --data) fail.

Each kind is injected twice: as is, where the file hashes in the manifest already catch it, and with the manifest's
file table rewritten to match the damaged files (what a tool that re-saves the folder would leave), where only the
artifact's golden sample, run through its own tokenizer and model, can catch it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import invoke, make_tiny_model
from onnx import numpy_helper

import edgec
from edgec.artifacts.artifact import MANIFEST, file_table
from edgec.recipe import ParityThresholds, QuantConfig, Recipe


@pytest.fixture(scope="module")
def artifacts(data_files, tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT embedding model built as fp32 and as int8, with scored pairs as eval data. Its weights are drawn as
    wide as a trained model's (conftest.make_tiny_model), so that damage to one layer shows as it would in a real one."""
    root = tmp_path_factory.mktemp("faults")
    model = make_tiny_model(root / "bert", "bert", initializer_range=0.3)
    built = {}
    for precision in ("fp32", "int8"):
        # Loose gates: a random model is not what quantization is tuned for; the build-time outputs are what is checked.
        recipe = Recipe(
            quant=QuantConfig(precision=precision), max_length=64, parity=ParityThresholds(min_cosine=0.5, max_drop=100)
        )
        built[precision] = edgec.build(
            model,
            "ort-x86",
            recipe=recipe,
            calib=edgec.read_dataset(data_files["calib"]),
            eval=edgec.read_dataset(data_files["pairs"]),
            out=root / precision,
        ).path
    return built


def _edit_model(folder: Path, change: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(folder / "model.onnx"))
    change(model)
    onnx.save(model, str(folder / "model.onnx"))


def _initializer(
    model: onnx.ModelProto, pick: Callable[[onnx.TensorProto, np.ndarray], bool]
) -> tuple[onnx.TensorProto, np.ndarray]:
    return next(
        (t, numpy_helper.to_array(t))
        for t in sorted(model.graph.initializer, key=lambda t: -np.prod(t.dims))
        if pick(t, numpy_helper.to_array(t))
    )


def _replace(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def scale_float_weights(folder: Path) -> None:
    def change(model):
        tensor, values = _initializer(model, lambda t, v: v.dtype == np.float32 and v.ndim == 2)
        _replace(tensor, values * 1.5)

    _edit_model(folder, change)


def _weight_scales(model: onnx.ModelProto) -> onnx.TensorProto:
    """The scale input of the DequantizeLinear of the largest int8 weight."""
    constants = {t.name: t for t in model.graph.initializer}
    weights = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in constants
        and constants[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    node = max(weights, key=lambda n: np.prod(constants[n.input[0]].dims))
    return constants[node.input[1]]


def permute_int8_weights(folder: Path) -> None:
    def change(model):
        tensor, values = _initializer(model, lambda t, v: v.dtype == np.int8 and v.ndim == 2)
        _replace(tensor, values[np.random.default_rng(0).permutation(len(values))])

    _edit_model(folder, change)


def zero_a_scale(folder: Path) -> None:
    _edit_model(folder, lambda model: _replace(scale := _weight_scales(model), numpy_helper.to_array(scale) * 0))


def inflate_a_scale(folder: Path) -> None:
    _edit_model(folder, lambda model: _replace(scale := _weight_scales(model), numpy_helper.to_array(scale) * 50))


def nan_constant(folder: Path) -> None:
    def change(model):
        tensor, values = _initializer(model, lambda t, v: v.dtype == np.float32 and v.ndim == 1 and v.size > 4)
        values = values.copy()
        values[0] = np.nan
        _replace(tensor, values)

    _edit_model(folder, change)


def remove_a_node(folder: Path) -> None:
    def change(model):  # drop the last LayerNormalization and let its consumers read its input
        node = [n for n in model.graph.node if n.op_type == "LayerNormalization"][-1]
        for other in model.graph.node:
            for i, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[i] = node.input[0]
        model.graph.node.remove(node)

    _edit_model(folder, change)


def rename_the_output(folder: Path) -> None:
    def change(model):
        old = model.graph.output[0].name
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = "embedding"
        model.graph.output[0].name = "embedding"

    _edit_model(folder, change)


def _edit_vocab(folder: Path, change: Callable[[dict[str, int]], dict[str, int]]) -> None:
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"] = change(tokenizer["model"]["vocab"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def swap_vocabulary(folder: Path) -> None:
    def change(vocab):
        words = [w for w in vocab if not w.startswith(("[", "##"))]
        rotated = dict(zip(words, words[1:] + words[:1]))  # every word gets the next word's id
        return {rotated.get(w, w): i for w, i in vocab.items()}

    _edit_vocab(folder, change)


def truncate_vocabulary(folder: Path) -> None:
    _edit_vocab(folder, lambda vocab: {w: i for w, i in vocab.items() if i < len(vocab) // 3})


def edit_golden_text(folder: Path) -> None:
    path = folder / "golden" / "texts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [{**row, "text": row["text"] + " the lazy dog"} for row in rows]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def edit_golden_outputs(folder: Path) -> None:
    path = folder / "golden" / "outputs.npz"
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays = {k: (v[::-1].copy() if k.startswith("artifact.") else v) for k, v in arrays.items()}
    np.savez(path, **arrays)


DAMAGES = {  # kind -> (which artifact, how)
    "scaled float weights": ("fp32", scale_float_weights),
    "permuted int8 weights": ("int8", permute_int8_weights),
    "zeroed quantization scale": ("int8", zero_a_scale),
    "inflated quantization scale": ("int8", inflate_a_scale),
    "NaN constant": ("int8", nan_constant),
    "removed node": ("fp32", remove_a_node),
    "changed output name": ("fp32", rename_the_output),
    "swapped tokenizer vocabulary": ("int8", swap_vocabulary),
    "truncated tokenizer vocabulary": ("int8", truncate_vocabulary),
    "golden texts edited after the build": ("int8", edit_golden_text),
    "golden outputs edited after the build": ("int8", edit_golden_outputs),
}


def _rehash(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_table(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_intact_artifact_passes_alone(artifacts, precision):
    result = invoke("parity", artifacts[precision], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["data"] == "golden sample" and len(report["rows"]) == 2


@pytest.mark.parametrize("rehashed", [False, True], ids=["hashes-as-built", "hashes-rewritten"])
@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damage_fails_parity(artifacts, tmp_path, kind, rehashed):
    precision, damage = DAMAGES[kind]
    folder = tmp_path / "damaged"
    shutil.copytree(artifacts[precision], folder)
    damage(folder)
    if rehashed:
        _rehash(folder)
    result = invoke("parity", folder)
    assert result.exit_code in (1, 2), f"{kind} passed:\n{result.output}"
    assert ("FAIL" in result.output) if result.exit_code == 1 else ("error:" in result.output)


def test_the_suite_covers_at_least_eight_kinds_of_damage():
    assert len(DAMAGES) >= 8, sorted(DAMAGES)
    print(
        f"{len(DAMAGES)} kinds of damage, each caught with the hashes as built and rewritten: {', '.join(sorted(DAMAGES))}"
    )
