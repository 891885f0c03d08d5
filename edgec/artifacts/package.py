"""The package step: the human-readable files (reports, model card), then the file table and the manifest, written
last because it lists the sha256 of every other file. A build runs it once; `edgec bench` again when it records
latency into the artifact."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from edgec.artifacts.artifact import Artifact, file_table
from edgec.artifacts.manifest import Manifest
from edgec.artifacts.model_card import write_model_card
from edgec.artifacts.report import write_reports
from edgec.errors import InputError
from edgec.hardware import host
from edgec.running.profiling import Profile


def package(folder: Path, manifest: Manifest, profile: tuple[Profile, dict[str, Any]] | None = None) -> Manifest:
    """Write report.md, report.html, the charts and README.md, then edgec.json with the file table; returns the
    manifest as written. `profile` (the build's, with its bench config) adds where the time goes to the report."""
    write_reports(folder, manifest, profile)
    write_model_card(folder, manifest)
    manifest = dataclasses.replace(manifest, files=file_table(folder))
    manifest.write(folder)
    return manifest


def record_bench(
    artifact: Artifact, bench: dict[str, Any], profile: tuple[Profile, dict[str, Any]] | None = None
) -> Manifest:
    """Keep `edgec bench`'s figures in the artifact (manifest "bench"), so the report and model card show them;
    `profile` (bench --profile's, with its config) is where the time goes in the rewritten report."""
    if not os.access(artifact.path, os.W_OK):
        raise InputError(f"{artifact.path} is not writable, so the figures cannot be recorded in it; pass --no-record")
    cpu = host()
    measured = {**bench, "host": f"{cpu.model} ({cpu.instruction_set})"}
    return package(artifact.path, dataclasses.replace(artifact.manifest, bench=measured), profile)
