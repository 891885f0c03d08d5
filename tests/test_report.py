"""report.html parsed as a browser would: every chart inline and a valid PNG, every table there, nothing fetched."""

from __future__ import annotations

import base64
import shutil
from html.parser import HTMLParser

import pytest
import torch
from conftest import gelu_outputs_unsmoothed, invoke

import edgec
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe, TuningConfig


class _Page(HTMLParser):
    """Images, tables (as lists of rows of cell texts, with whether the row is a header row) and external references."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.external, self.headings = [], [], [], []
        self._cell, self._row, self._heading = None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag in ("script", "link", "iframe") or any(
            v and v.startswith(("http:", "https:", "//")) for k, v in attrs.items() if k in ("src", "href")
        ):
            self.external.append((tag, attrs))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag in ("h1", "h2"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag in ("h1", "h2"):
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading is not None:
            self._heading += data


@pytest.fixture(scope="module")
def full_artifact(tiny_models, data_files, tmp_path_factory):
    """A pruned int8 build whose fallback ran (one outlier FFN neuron), then benchmarked against its source."""
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("report")
    folder = shutil.copytree(tiny_models("bert"), root / "outlier")
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        model.encoder.layer[1].intermediate.dense.weight[5] *= 40
        model.encoder.layer[1].intermediate.dense.bias[5] = 40.0
    model.save_pretrained(folder)
    data = edgec.read_dataset(data_files["pairs"])
    recipe = Recipe(
        # One step and unit scales: after the default two steps, or with weight refits, this model's int8 passes the
        # quantize row, and the scenario (a fallback that ran, a report with a FAIL) is gone.
        prune=PruneConfig(fraction=0.3, steps=1, tuning=TuningConfig(fit="scales")),
        quant=QuantConfig(precision="int8"),
        # int8 embedding tables alone leave ~1e-5 of cosine: 0.99998 is reachable once the fallback keeps MatMuls in float.
        parity=ParityThresholds(min_cosine=0.99998, max_drop=5),
    )
    with gelu_outputs_unsmoothed():
        artifact = edgec.build(folder, "ort-x86", recipe=recipe, calib=data, eval=data, out=root / "art")
    # Pruning alone stays within the budget, so the fallback spends what it left (judged against the reference).
    assert artifact.manifest.stages.fallback.kept_in_float
    assert artifact.manifest.stages.fallback.against == "the fp32 reference"
    result = invoke("bench", artifact.path, "--baseline", "pytorch", "--seq-len", "16", "--runs", "3", "--warmup", "1")
    assert result.exit_code == 0, result.output
    return artifact.path


def test_report_html_has_every_chart_and_table_inline(full_artifact):
    page = _Page()
    page.feed((full_artifact / "report.html").read_text())
    assert not page.external  # renders with no network: no scripts, stylesheets or remote images
    alts = [image["alt"] for image in page.images]
    assert alts == [
        "parity per stage",
        "latency and size against the source",
        "int8 sensitivity per node",
        "kept per layer",
    ]
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(image["src"].split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == (full_artifact / _chart_file(image["alt"])).read_bytes()
    summary, gate, ledger, speed, sensitivity = (
        page.tables
    )  # (per-output error statistics: TensorRT and mobile rows only)
    assert all(all(cell for cell in row) for row in summary)  # the header table has no empty row (or cell)
    assert summary[0][0] == "source"
    assert gate[0] == ["gate", "final artifact", "threshold", "verdict"]
    assert [row[0] for row in gate[1:]] == ["mean cosine to the reference", "spearman drop (points)"]
    assert gate[1][2] == ">= 0.99998" and gate[2][2] in ("<= 5", "<= 5.0") and all(row[3] == "pass" for row in gate[1:])
    assert [row[0] for row in ledger[1:]] == [
        "reference (PyTorch fp32)",
        "prune",
        "export",
        "optimize",
        "quantize",
        "fallback",
        "artifact",
    ]
    assert ledger[5][-1].startswith("FAIL") and ledger[-1][-1] == "pass"
    assert [row[0] for row in speed[1:]] == ["artifact (int8, ONNX Runtime)", "source (bert, PyTorch fp32)"]
    assert "not measured" not in " ".join(speed[1] + speed[2]) and speed[2][5].endswith("x")
    kept = [row[0] for row in sensitivity[1:] if row[2] == "yes"]
    assert set(kept) <= set(edgec.load_artifact(full_artifact).manifest.stages.fallback.kept_in_float) and kept
    assert page.headings[1:] == [
        "Parity gate",
        "Parity ledger",
        "Speed and size against the source",
        "int8 fallback: per-node sensitivity",
        "Pruning",
    ]


def test_bench_records_into_the_artifact_and_keeps_the_hashes(full_artifact):
    manifest = edgec.load_artifact(full_artifact).manifest
    assert [r["runtime"] for r in manifest.bench["results"]] == ["onnxruntime", "pytorch fp32"]
    assert manifest.bench["config"]["seq_len"] == 16 and "speed.png" in manifest.files
    assert "| source (bert, PyTorch fp32) |" in (full_artifact / "README.md").read_text()
    # what else ran while it timed travels with the figures (Linux reads it from /proc/stat)
    assert all(0.0 <= r["other_load"] <= 1.0 for r in manifest.bench["results"])
    assert "Other processes took" in (full_artifact / "report.md").read_text()
    assert edgec.artifacts.artifact.verify_hashes(edgec.load_artifact(full_artifact)) == []


def _chart_file(alt: str) -> str:
    return {
        "parity per stage": "parity.png",
        "latency and size against the source": "speed.png",
        "int8 sensitivity per node": "sensitivity.png",
        "kept per layer": "pruning.png",
    }[alt]


def test_pruning_section_says_how_many_calibration_texts_were_capped(full_artifact):
    """The importance pass's cap (recipe.PruneConfig.importance_clip) is visible where pruning is reported."""
    note = edgec.load_artifact(full_artifact).manifest.stages.prune
    assert note.importance_capped is not None and 0 < note.importance_capped < note.calibration_texts
    line = f"{note.calibration_texts} calibration texts, {note.importance_capped} with their share capped"
    assert line in (full_artifact / "report.md").read_text()
