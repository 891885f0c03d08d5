"""edgec engine ARTIFACT: build (or rebuild) a TensorRT artifact's engine from its trt_build.json, on the GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.artifact import load_artifact
from edgec.backends.tensorrt import build_artifact_engine
from edgec.cli.common import errors_to_exit_codes, stdout, table


def register(app: typer.Typer) -> None:
    app.command("engine")(errors_to_exit_codes(engine))


def engine(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `edgec build --target trt-int8|trt-fp16`.")],
) -> None:
    """Build the TensorRT engine of an artifact here (needs tensorrt and an NVIDIA GPU); updates its manifest."""
    built = build_artifact_engine(load_artifact(artifact))
    rows = [[k, str(v)] for k, v in built.items()]
    stdout.print(table(f"TensorRT engine for {artifact}", ["", ""], rows))
    stdout.print(f"check it on real data with: edgec parity {artifact} --data EVAL_FILE")
