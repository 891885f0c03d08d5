"""--target executorch: a .pte lowered to XNNPACK (fp32, PT2E int8, pruned), run by ExecuTorch's own runtime for parity."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from conftest import invoke

import edgec
from edgec.artifacts.artifact_ops import check_parity, predict
from edgec.recipe import PruneConfig, QuantConfig, Recipe

pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_pte(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("executorch") / "int8"
    return edgec.build(
        tiny_models("bert"),
        "executorch",
        calib=edgec.read_dataset(data_files["calib"]),
        eval=edgec.read_dataset(data_files["pairs"]),
        out=out,
    )


def test_int8_pte_is_delegated_to_xnnpack_and_its_own_runtime_passes_parity(int8_pte):
    manifest = int8_pte.manifest
    assert manifest.model_file == "model.pte" and manifest.precision == "int8"
    emit = manifest.stages.emit
    assert emit.delegate == "XnnpackBackend" and emit.delegated_partitions >= 1 and "PT2E" in emit.quantization
    rows = manifest.parity.ledger
    assert [r.stage for r in rows] == ["artifact"] and rows[0].model == "model.pte" and not rows[0].simulated
    assert manifest.parity.passed and rows[0].metrics["cosine_mean"] > 0.9
    assert manifest.io["inputs"][0]["name"] == "input_ids" and manifest.io["outputs"][0]["name"] == "sentence_embedding"


def test_int8_pte_runs_no_fallback_so_its_gate_keeps_every_eval_pair(int8_pte, data_files):
    # The ONNX int8 path splits --eval for its float fallback (tests/test_build.py); the .pte has no fallback stage.
    parity = int8_pte.manifest.parity
    assert int8_pte.manifest.stages.fallback is None
    assert (parity.selection_examples, parity.eval_examples) == (0, len(edgec.read_dataset(data_files["pairs"])))


def test_the_tokenizer_and_the_io_names_travel_with_the_program(int8_pte):
    files = set(int8_pte.manifest.files)
    assert {"model.pte", "model_io.json", "tokenizer.json", "tokenizer_config.json"} <= files
    io = json.loads((int8_pte.path / "model_io.json").read_text())
    assert [i["name"] for i in io["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]


def test_edgec_run_and_parity_take_the_pte(int8_pte, data_files):
    outputs = predict(int8_pte, ["the movie was really good", "we love this phone"])
    vectors = outputs["sentence_embedding"]
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    (row,) = check_parity(int8_pte, edgec.read_dataset(data_files["pairs"]))
    assert row.model == "model.pte" and row.passed
    result = invoke("run", int8_pte.path, "the food was cold")
    assert result.exit_code == 0, result.output
    shown = invoke("inspect", int8_pte.path)
    assert shown.exit_code == 0 and "executorch_call_delegate (XnnpackBackend)" in shown.stdout, shown.output
    timed = invoke("bench", int8_pte.path, "--runs", 3, "--warmup", 1, "--seq-len", 8, "--json")
    assert timed.exit_code == 0, timed.output
    assert json.loads(timed.stdout)["results"][0]["runtime"] == "executorch (xnnpack)"
    profiled = invoke("bench", int8_pte.path, "--profile")
    assert profiled.exit_code == 2 and "ExecuTorch program takes neither" in profiled.output, profiled.output


@pytest.mark.deep  # another lowering (~30 s); `make test` lowers int8 alone
def test_pruned_models_lower_too(tiny_models, data_files, tmp_path):
    calib, pairs = edgec.read_dataset(data_files["calib"]), edgec.read_dataset(data_files["pairs"])
    pruned = edgec.build(
        tiny_models("bert"),
        "executorch",
        recipe=Recipe(prune=PruneConfig(fraction=0.5)),
        calib=calib,
        eval=pairs,
        out=tmp_path / "pruned",
    )
    stages = [r.stage for r in pruned.manifest.parity.ledger]
    assert (
        stages == ["prune", "artifact"]
        and pruned.manifest.stages.prune.macs_after < pruned.manifest.stages.prune.macs_before
    )
    assert pruned.manifest.stages.emit.delegated_partitions >= 1 and pruned.manifest.parity.passed


@pytest.mark.deep  # another lowering (~45 s); `make test` lowers int8 alone
def test_fp32_lowers_too(tiny_models, data_files, tmp_path):
    calib, pairs = edgec.read_dataset(data_files["calib"]), edgec.read_dataset(data_files["pairs"])
    fp32 = edgec.build(
        tiny_models("bert"),
        "executorch",
        recipe=Recipe(quant=QuantConfig(precision="fp32")),
        calib=calib,
        eval=pairs,
        out=tmp_path / "fp32",
    )
    assert (
        fp32.manifest.parity.ledger[-1].metrics["cosine_mean"] > 0.9999
        and fp32.manifest.stages.emit.quantization == "none (fp32)"
    )


def test_without_executorch_the_build_says_how_to_install_it(tiny_models, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.startswith("executorch"):
            raise ImportError(name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    with pytest.raises(edgec.BackendUnavailable, match=r"pip install 'edgec\[executorch\]'"):
        edgec.build(tiny_models("bert"), "executorch", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
