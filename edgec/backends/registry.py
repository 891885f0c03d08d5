"""The back-end registry: each back end registers its emit function under the name profiles use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgec.errors import ConfigError
from edgec.pipeline import Context

Emit = Callable[[Context, Path], Context]
"""Writes what the device runs into the staging folder; returns the context pointing at it."""

_BACKENDS: dict[str, Emit] = {}


def register_backend(name: str) -> Callable[[Emit], Emit]:
    def register(emit: Emit) -> Emit:
        _BACKENDS[name] = emit
        return emit

    return register


def get_backend(name: str) -> Emit:
    if name not in _BACKENDS:
        raise ConfigError(f"unknown back end {name!r} in the target profile; use one of {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[name]
