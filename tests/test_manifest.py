"""The typed manifest: edgec.json read and written field for field, and refused from a newer edgec."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import invoke

import edgec
from edgec.artifacts.manifest import MANIFEST, SCHEMA_VERSION, Manifest
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
