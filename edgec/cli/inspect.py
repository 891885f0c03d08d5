"""edgec inspect ARTIFACT: manifest, operators, sizes and the parity ledger."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import typer

from edgec.artifacts.artifact import load_artifact, verify_hashes
from edgec.artifacts.report import ledger_table, summary_rows
from edgec.artifacts.stage_notes import ExecuTorchEmitNote, MobileEmitNote
from edgec.cli.common import command, stdout, table
from edgec.cli.options import ArtifactPath, AsJson


def register(app: typer.Typer) -> None:
    command(app, "inspect", inspect)


def operator_counts(model_path: Path) -> dict[str, int]:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return dict(sorted(Counter(n.op_type for n in graph.node).items(), key=lambda kv: (-kv[1], kv[0])))


def inspect(
    artifact: ArtifactPath,
    as_json: AsJson = False,
) -> None:
    """Show what an artifact holds and how it was verified."""
    loaded = load_artifact(artifact)
    manifest, changed = loaded.manifest, verify_hashes(loaded)
    emit = manifest.stages.emit
    # An ORT-format model is not ONNX: its operators were counted from the ONNX it was converted from. An ExecuTorch
    # program's graph is its delegate calls (issue 18).
    if isinstance(emit, MobileEmitNote):
        ops = emit.operator_counts
    elif isinstance(emit, ExecuTorchEmitNote):
        ops = {f"executorch_call_delegate ({emit.delegate})": emit.delegated_partitions}
    else:
        ops = operator_counts(loaded.model_path)
    if as_json:
        print(json.dumps({"manifest": manifest.to_dict(), "operators": ops, "changed_files": changed}, indent=2))
        return
    stdout.print(table(f"artifact {artifact}", ["", ""], [list(r) for r in summary_rows(manifest)]))
    files = [[name, f"{info['bytes'] / 1e6:.2f} MB", info["sha256"][:16]] for name, info in manifest.files.items()]
    stdout.print(table("files", ["file", "size", "sha256"], files))
    stdout.print(table("operators", ["op", "count"], [[k, str(v)] for k, v in ops.items()]))
    io_rows = [[d, v["name"], v["dtype"], str(v["shape"])] for d in ("inputs", "outputs") for v in manifest.io[d]]
    stdout.print(table("signature", ["", "name", "dtype", "shape"], io_rows))
    stdout.print(table("parity ledger", *ledger_table(manifest)))
    stdout.print(
        "integrity: " + (f"CHANGED since build: {', '.join(changed)}" if changed else "every file matches its sha256")
    )
