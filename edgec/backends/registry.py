"""The back-end interface and its registry: everything target-specific, found by the name profiles use.

A back end is a `Backend`: what it emits, how its graph is made (`export`; None: from the PyTorch model itself),
the quantizers it does itself, any stages after the artifact, what it checks before any work, what parity runs for
its artifacts, how `edgec run` predicts with one, and what it needs installed. api and the stages ask this record;
they never name a back end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.artifacts.artifact import Artifact
from edgec.errors import ConfigError
from edgec.pipeline import Context, Stage
from edgec.stages.export import export
from edgec.targets import TargetProfile

Emit = Callable[[Context, Path], Context]
"""Writes what the device runs into the staging folder; returns the context pointing at it."""


def _no_checks(profile: TargetProfile, out: Path) -> None:
    return None


def _no_stages(staging: Path) -> tuple[Stage, ...]:
    return ()


def _its_model_file(artifact: Artifact, workdir: Path) -> tuple[Path, bool]:
    return artifact.model_path, False


def _device_runner(artifact: Artifact, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
    from edgec.running.device_predict import Predictor  # issue 18: `edgec run` is the device's own logic

    return Predictor(artifact.path).run(texts, pairs)


@dataclass(frozen=True, kw_only=True)
class Backend:
    """One back end: a name a profile's `backend` gives, and the functions and facts the pipeline asks of it."""

    name: str
    emit: Emit
    """The `artifact` stage: the files the device runs, written into the staging folder."""
    needs: str
    """What it needs on the building machine (`edgec targets` shows it), e.g. "'edgec[executorch]'"."""
    needs_module: str
    """The module whose presence means `needs` is met."""
    export: Callable[[Context], Context] | None = export
    """The `export` stage; None: the artifact is made from the PyTorch model itself (no ONNX stages run)."""
    own_quantizers: frozenset[str] = frozenset()
    """Quantize-stage methods (precision.Needs.quantizer) the back end does itself in `emit`, so the stage is skipped."""
    extra_stages: Callable[[Path], tuple[Stage, ...]] = _no_stages
    """Stages after the artifact, given the staging folder (TensorRT's engine)."""
    preflight: Callable[[TargetProfile, Path], None] = _no_checks
    """Checks before any work, given the profile and --out: a missing package, a device, the output's form."""
    parity_runtime: Callable[[Artifact, Path], tuple[Path, bool]] = _its_model_file
    """What `edgec parity` runs for an artifact (given a work folder), and whether it is a simulation."""
    statistics: bool = False
    """Parity rows on its artifacts add per-output error statistics."""
    emulates: bool = False
    """Its artifacts run on ONNX Runtime, so `edgec verify --emulate aarch64` can run them."""
    profiles_here: bool = False
    """Its artifacts run on this machine's ONNX Runtime as built, so the report profiles where the time goes."""
    predict: Callable[[Artifact, list[str], list[str] | None], dict[str, np.ndarray]] = _device_runner
    """`edgec run`: the artifact's named outputs for texts (and pairs)."""


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise ConfigError(f"unknown back end {name!r} in the target profile; use one of {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[name]
