"""Precision: the numeric formats a build can produce, parsed once at the edge, and the one table of what each needs.

Code below the edge asks a precision what it needs (`precision.needs.stages`, `.quantizer`, ...) instead of
comparing strings, so a new precision is a member here, a row in `_NEEDS`, and its quantizer in stages/quantize.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgec.errors import ConfigError


class Precision(StrEnum):
    """A build's precision; a str, so manifests, reports and JSON keep writing the same words."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8 = "int8"
    """Static int8: Q/DQ with ranges from edgec's own calibration."""

    @classmethod
    def parse(cls, value: str, what: str = "precision") -> Precision:
        """The member for a config file's or the command line's word; ConfigError naming the allowed ones."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"unknown {what} {value!r}; use one of {', '.join(cls)}") from None

    @property
    def needs(self) -> Needs:
        return _NEEDS[self]


@dataclass(frozen=True, kw_only=True)
class Needs:
    """What making a precision takes, beyond export and optimize."""

    stages: tuple[str, ...]
    """The pipeline stages that make it, in order ("quantize", then "fallback" for calibrated int8)."""
    quantizer: str | None
    """The quantize stage's method (a key of stages.quantize.QUANTIZERS); None: the exported graph is already it."""
    integer: bool
    """Runs int8 arithmetic: optimize may approximate Gelu (FastGelu), whose error is far below int8's; ExecuTorch
    quantizes by PT2E."""
    fp16_parts: bool
    """Float parts may hold fp16 values: TensorRT types them fp16 where the calibration data allows, and its CPU
    stand-in rounds through fp16."""


_NEEDS = {
    Precision.FP32: Needs(stages=(), quantizer=None, integer=False, fp16_parts=False),
    Precision.FP16: Needs(stages=("quantize",), quantizer="fp16", integer=False, fp16_parts=True),
    Precision.INT8_DYNAMIC: Needs(stages=("quantize",), quantizer="dynamic-int8", integer=True, fp16_parts=False),
    Precision.INT8: Needs(stages=("quantize", "fallback"), quantizer="static-int8", integer=True, fp16_parts=True),
}
