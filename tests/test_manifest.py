"""The typed manifest: edgec.json read and written field for field, and refused from a newer edgec."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import invoke

import edgec
from edgec.artifacts.manifest import MANIFEST, SCHEMA_VERSION, Manifest
from edgec.artifacts.report import summary_rows
from edgec.artifacts.stage_notes import DistillNote, ExportNote, FallbackNote, OrtEmitNote, PruneNote, QuantizeNote
from edgec.errors import InputError
from edgec.parity.ledger import ParityRow
from edgec.precision import Precision
from edgec.recipe import QuantConfig, Recipe


@pytest.fixture(scope="module")
def artifact(tiny_models, data_files, tmp_path_factory):
    data = edgec.read_dataset(data_files["pairs"])
    out = tmp_path_factory.mktemp("manifest") / "art"
    return edgec.build(
        tiny_models("bert"),
        "ort-x86",
        recipe=Recipe(quant=QuantConfig(precision="int8")),
        calib=data,
        eval=data,
        out=out,
    )


def test_reading_and_writing_keeps_every_field(artifact, tmp_path):
    written = json.loads((artifact.path / MANIFEST).read_text())
    manifest = Manifest.read(artifact.path)
    assert manifest.precision is Precision.INT8 and isinstance(manifest.parity.ledger[-1], ParityRow)
    assert manifest.recipe.max_length == written["recipe"]["max_length"] and manifest.target.backend == "ort"
    manifest.write(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text()) == written


def test_a_manifest_from_a_newer_edgec_is_refused_in_one_line(artifact, tmp_path):
    newer = shutil.copytree(artifact.path, tmp_path / "newer")
    values = json.loads((newer / MANIFEST).read_text())
    (newer / MANIFEST).write_text(json.dumps({**values, "format": SCHEMA_VERSION + 1}))
    with pytest.raises(
        InputError,
        match=rf"newer edgec \(manifest schema {SCHEMA_VERSION + 1}; this edgec reads {SCHEMA_VERSION}\); upgrade edgec",
    ):
        edgec.load_artifact(newer)
    result = invoke("inspect", newer)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "newer edgec" in result.stderr


def test_a_manifest_missing_a_field_says_so(artifact, tmp_path):
    broken = shutil.copytree(artifact.path, tmp_path / "broken")
    values = json.loads((broken / MANIFEST).read_text())
    del values["sizes"]
    (broken / MANIFEST).write_text(json.dumps(values))
    with pytest.raises(InputError, match="not a manifest this edgec can read"):
        edgec.load_artifact(broken)


@pytest.mark.parametrize("note", ["not an object", ["a", "list"], 3])
def test_a_stage_note_that_is_no_object_is_one_line(artifact, tmp_path, note):
    broken = shutil.copytree(artifact.path, tmp_path / "broken")
    values = json.loads((broken / MANIFEST).read_text())
    values["stages"]["emit"] = note
    (broken / MANIFEST).write_text(json.dumps(values))
    result = invoke("inspect", broken)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "not a manifest this edgec can read" in result.stderr


def test_stage_notes_come_back_as_the_typed_notes_the_build_wrote(artifact, tmp_path):
    manifest = Manifest.read(artifact.path)
    assert manifest.stages == artifact.manifest.stages, "the build's notes, read back from edgec.json"
    notes = manifest.stages
    assert isinstance(notes.quantize, QuantizeNote) and notes.quantize.method == "static int8 Q/DQ"
    assert isinstance(notes.emit, OrtEmitNote) and notes.emit.runner == "predict.py"
    assert isinstance(notes.export, ExportNote) and isinstance(notes.fallback, FallbackNote) and notes.prune is None
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path).stages == notes


def test_an_edgec_json_with_older_dict_notes_still_reads(artifact, tmp_path):
    """Notes as an older edgec wrote them: a prune note from before hidden-size and layer pruning, a distillation
    from before the teacher's cache, a key this edgec does not know. They read typed, and the report renders."""
    old = shutil.copytree(artifact.path, tmp_path / "old")
    values = json.loads((old / MANIFEST).read_text())
    values["stages"]["prune"] = {
        "fraction": 0.5,
        "units": ["heads", "ffn"],
        "calibration_texts": 8,
        "mean_tokens": 9.5,
        "macs_before": 1000,
        "macs_after": 500,
        "params_before": 200,
        "params_after": 150,
        "heads_before": [4, 4],
        "heads_after": [2, 3],
        "ffn_before": [64, 64],
        "ffn_after": [32, 16],
        "layers_removed": [],
        "tuning": None,
        "estimated_loss": {},
        "least_squares": [],
        "seconds": {"importance": 0.5},
    }
    values["stages"]["distill"] = {
        "texts": 40,
        "steps": 6,
        "examples_per_second": 12.5,
        "best_step": 4,
        "best_score": 0.93,
        "stopped": "steps",
        "seconds": 2.0,
        "precision": "fp32",
        "layers": [],
        "history": [[0, 0.5]],
    }
    values["stages"]["quantize"]["from_a_newer_edgec"] = 1
    (old / MANIFEST).write_text(json.dumps(values))
    manifest = edgec.load_artifact(old).manifest
    assert isinstance(manifest.stages.prune, PruneNote) and manifest.stages.prune.layers_kept is None
    assert isinstance(manifest.stages.distill, DistillNote) and manifest.stages.distill.teacher_cache is None
    assert manifest.stages.quantize.extra == {"from_a_newer_edgec": 1}
    rows = dict(summary_rows(manifest))
    assert rows["heads kept per layer"] == "2/4 3/4" and rows["distillation"].startswith("6 steps")
    assert "from_a_newer_edgec=1" in rows["quantization"]
    manifest.write(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text())["stages"]["quantize"]["from_a_newer_edgec"] == 1
