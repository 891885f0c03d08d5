"""Adding a back end is one module and its profile: a toy back end, registered here, builds a real artifact through
api.build, and parity and predict find it through the interface alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SENTENCES

import edgec
from edgec.artifacts.artifact_ops import check_parity, predict
from edgec.artifacts.stage_notes import EmitNote
from edgec.backends import Backend, registry
from edgec.pipeline import Context, Stage

PROFILE = """
name = "toy"
description = "a toy back end: the ONNX under another name"
backend = "toy"
default_precision = "int8"
precisions = ["fp32", "int8"]
fuse = false
[parity.int8]
min_cosine = 0.98
"""


def emit(ctx: Context, staging: Path) -> Context:
    model = staging / "toy.onnx"
    shutil.copyfile(ctx.onnx_path, model)
    tokenizer = [Path(f) for f in ctx.source.tokenizer.save_pretrained(str(staging)) if Path(f).exists()]
    return ctx.with_note(
        "emit", EmitNote(backend="toy", model=model.name), onnx_path=model, files=(model, *sorted(tokenizer))
    )


@pytest.fixture
def toy(monkeypatch, tmp_path):
    checked = []
    backend = Backend(
        name="toy",
        emit=emit,
        needs="nothing",
        needs_module="numpy",
        preflight=lambda profile, out: checked.append((profile.name, out.name)),
        extra_stages=lambda staging: (Stage("stamp", lambda ctx: ctx.with_note("stamp", "stamped")),),
    )
    monkeypatch.setitem(registry._BACKENDS, "toy", backend)  # what the module's register_backend call does
    profile = tmp_path / "toy.toml"
    profile.write_text(PROFILE)
    return profile, checked


def test_a_toy_back_end_builds_a_checked_artifact_through_api_build(toy, tiny_models, data_files, tmp_path):
    profile, checked = toy
    data = edgec.read_dataset(data_files["pairs"])
    artifact = edgec.build(tiny_models("bert"), str(profile), calib=data, eval=data, out=tmp_path / "art")
    manifest = artifact.manifest
    assert checked == [("toy", "art")], "the preflight ran before any work"
    assert manifest.target.backend == "toy" and manifest.precision == "int8" and manifest.model_file == "toy.onnx"
    stages = [r.stage for r in manifest.parity.ledger]
    assert stages[:2] == ["export", "quantize"] and stages[-1] == "artifact", (
        "the precision's stages, then the toy's emit"
    )
    assert manifest.stages.other["stamp"] == "stamped" and manifest.parity.passed
    assert manifest.stages.emit == EmitNote(backend="toy", model="toy.onnx"), "a back end outside edgec: the core type"
    assert all(row.passed for row in check_parity(edgec.load_artifact(artifact.path), None))
    (embedding,) = predict(artifact, SENTENCES[:2]).values()
    assert embedding.shape[0] == 2 and np.isfinite(embedding).all()
