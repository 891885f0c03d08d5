"""Target profiles: where an artifact must run, read from declarative TOML files in targets/."""

from __future__ import annotations

import dataclasses
import platform
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgec.errors import ConfigError
from edgec.precision import Precision
from edgec.recipe import ParityThresholds, config_from_dict

GRAPH_OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")
EXECUTION_ORDERS = ("default", "priority_based", "memory_efficient")
QUANT_TYPES = ("int8", "uint8")


@dataclass(frozen=True, kw_only=True)
class QuantSettings:
    """How int8 is laid out for this target's kernels."""

    activation_type: str = "uint8"
    """uint8 suits x86 VNNI (u8 x s8 dot products); int8 suits ARM and TensorRT."""
    weight_type: str = "int8"
    per_channel: bool = True
    """One scale per output channel of each weight matrix (symmetric)."""
    activation_symmetric: bool = False
    """Zero point fixed at 0 for activations (TensorRT requires it)."""
    reduce_range: bool = False
    """7-bit weights: u8 x s8 products then fit AVX2's 16-bit VPMADDUBSW sums without saturating."""
    split_outliers: bool = False
    """Compute the few input channels of a MatMul that dwarf the rest in float, the rest in int8 (ops.outliers)."""
    int8_embeddings: bool = True
    """Store embedding tables as int8 rows with per-row scales (a Gather + Cast + Mul pattern that ONNX
    Runtime runs well; TensorRT keeps embeddings in float)."""

    def __post_init__(self) -> None:
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in QUANT_TYPES:
                raise ConfigError(
                    f"quantization.{name} must be one of {', '.join(QUANT_TYPES)}, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """ONNX Runtime session options the artifact is verified and benchmarked with."""

    intra_op_threads: int = 0
    """0 lets ONNX Runtime use every physical core."""
    inter_op_threads: int = 1
    graph_optimization_level: str = "all"
    allow_spinning: bool = True
    """Idle intra-op threads spin for new work (ONNX Runtime's default) instead of sleeping at once."""
    execution_order: str = "default"
    """The order nodes run in: ONNX Runtime's default (topological), priority_based or memory_efficient."""
    cpu_mem_arena: bool = True
    """Reuse activations' memory from ONNX Runtime's arena instead of the system allocator."""
    mem_pattern: bool = True
    """Plan activation memory once per input shape and reuse the plan."""

    def __post_init__(self) -> None:
        for name, allowed in (
            ("graph_optimization_level", GRAPH_OPTIMIZATION_LEVELS),
            ("execution_order", EXECUTION_ORDERS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"session.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("session thread counts must be >= 0 (0 means ONNX Runtime's default)")


@dataclass(frozen=True, kw_only=True)
class TensorRTSettings:
    """How a TensorRT engine is built from the artifact (written into trt_build.json). Precision is not a setting here:
    the ONNX is typed (fp16 where the calibration data allows, int8 Q/DQ for int8) and the network strongly typed."""

    max_batch: int = 32
    """Largest batch the engine's optimization profile accepts."""
    opt_batch: int = 1
    """Batch the engine's kernels are tuned for (edge serving: one request at a time)."""
    max_seq_len: int | None = None
    """Longest sequence the engine accepts; None takes the build's max_length. Setting it also truncates
    the artifact's inputs to it, so the engine never sees a longer one."""
    workspace_mib: int = 4096
    """Scratch memory the builder may give a layer's tactics."""
    builder_optimization_level: int = 3
    """TensorRT's tactic search effort, 0-5 (3 is TensorRT's default)."""
    require_engine: bool = False
    """Fail the build when no engine can be built here (no tensorrt or no CUDA device) instead of deferring it."""

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"tensorrt batch sizes must satisfy 1 <= opt_batch <= max_batch, got {self.opt_batch} and {self.max_batch}"
            )
        if self.max_seq_len is not None and self.max_seq_len < 8:
            raise ConfigError(f"tensorrt max_seq_len must be at least 8 tokens, got {self.max_seq_len}")
        if self.workspace_mib < 1:
            raise ConfigError(f"tensorrt workspace_mib must be at least 1, got {self.workspace_mib}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(
                f"tensorrt builder_optimization_level must be within 0..5, got {self.builder_optimization_level}"
            )


ACCELERATORS = ("coreml", "nnapi", "xnnpack")


@dataclass(frozen=True, kw_only=True)
class MobileSettings:
    """An accelerator-shaped mobile graph (`--accelerator`, `--fixed-shape`); see edgec/stages/export_fixed.py."""

    accelerator: str | None = None
    """coreml, nnapi or xnnpack: the ONNX Runtime execution provider the graph is shaped for; None for the general graph."""
    fixed_batch: int = 1
    """Batch size the graph takes (accelerators want fixed shapes); a device runs more texts in batches of it."""
    fixed_seq: int = 128
    """Tokens per input the graph takes; texts are truncated to it and padded up to it."""

    def __post_init__(self) -> None:
        if self.accelerator is not None and self.accelerator not in ACCELERATORS:
            raise ConfigError(f"--accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
        if self.fixed_batch < 1 or self.fixed_seq < 8:
            raise ConfigError(
                f"--fixed-shape needs a batch >= 1 and a sequence >= 8 tokens, got {self.fixed_batch}x{self.fixed_seq}"
            )


@dataclass(frozen=True, kw_only=True)
class TargetProfile:
    """Where an artifact runs: back end, precisions it supports, session settings, parity thresholds."""

    name: str
    description: str
    backend: str
    default_precision: Precision
    precisions: tuple[Precision, ...]
    fuse: bool = True
    """Apply ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, Gelu ...)."""
    quantization: QuantSettings = field(default_factory=QuantSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    parity: dict[Precision, ParityThresholds] = field(default_factory=dict)
    """Default thresholds per precision."""
    tensorrt: TensorRTSettings | None = None
    """Engine build settings; set for the tensorrt back end (and only there)."""
    mobile: MobileSettings | None = None
    """Accelerator shaping of a mobile graph; only for the mobile back end."""
    pruned: ParityThresholds = field(default_factory=ParityThresholds)
    """Thresholds that replace the precision's where a build prunes: pruning changes the function by
    design, so closeness to the reference is loose and the task metric's drop is the gate."""
    fuse_biased_attention: bool = True
    """With `fuse`: also fuse attention that adds a position bias (MPNet's, DeBERTa's c2p + p2c) into MultiHeadAttention."""
    fuse_rotary_attention: bool = True
    """With `fuse`: also fuse rotary attention (ModernBERT) into RotaryEmbedding and MultiHeadAttention."""
    instruction_sets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Changes to [quantization] and [session] for one host instruction set (edgec.hardware: avx2, avx512-vnni,
    amx ...), each measured there; a build applies the set it compiles for (for_instruction_set)."""
    instruction_set: str | None = None
    """The instruction set those changes were applied for (set by for_instruction_set; None: not yet resolved)."""

    def __post_init__(self) -> None:
        bad = [p for p in (*self.precisions, *self.parity) if p not in set(Precision)]
        if bad:
            raise ConfigError(f"target {self.name}: unknown precision(s) {', '.join(bad)}; use {', '.join(Precision)}")
        if self.default_precision not in self.precisions:
            raise ConfigError(f"target {self.name}: default_precision {self.default_precision!r} is not in precisions")
        # the profile's words become members here, so nothing past the edge compares strings
        object.__setattr__(self, "precisions", tuple(Precision(p) for p in self.precisions))
        object.__setattr__(self, "default_precision", Precision(self.default_precision))
        object.__setattr__(self, "parity", {Precision(p): t for p, t in self.parity.items()})
        if (self.backend == "tensorrt") != (self.tensorrt is not None):
            raise ConfigError(
                f'target {self.name}: a [tensorrt] section belongs to (and is required by) backend = "tensorrt"'
            )
        if self.mobile is not None and self.backend != "mobile":
            raise ConfigError(
                f'target {self.name}: a [mobile] section (--accelerator, --fixed-shape) belongs to backend = "mobile"'
            )
        for isa in self.instruction_sets:
            self._sections_for(isa)  # unknown sets and keys are errors when the profile loads, not when a build uses it

    def for_instruction_set(self, isa: str) -> TargetProfile:
        """This profile with the changes measured for instruction set `isa` applied (none listed: unchanged)."""
        quantization, session = self._sections_for(isa)
        return dataclasses.replace(self, quantization=quantization, session=session, instruction_set=isa)

    def _sections_for(self, isa: str) -> tuple[QuantSettings, SessionSettings]:
        from edgec.hardware import INSTRUCTION_SETS

        if isa not in INSTRUCTION_SETS:
            raise ConfigError(
                f"target {self.name}: unknown instruction set {isa!r}; use one of {', '.join(INSTRUCTION_SETS)}"
            )
        changes = self.instruction_sets.get(isa, {})
        unknown = sorted(set(changes) - {"quantization", "session"})
        if unknown:
            raise ConfigError(
                f"target {self.name}: instruction_sets.{isa} may change quantization and session, not {', '.join(unknown)}"
            )
        where = f"target {self.name}: instruction_sets.{isa}"
        merged = lambda cls, base, key: config_from_dict(  # noqa: E731
            cls, {**dataclasses.asdict(base), **changes.get(key, {})}, f"{where}.{key}"
        )
        return merged(QuantSettings, self.quantization, "quantization"), merged(
            SessionSettings, self.session, "session"
        )

    def thresholds(
        self, precision: Precision, overrides: ParityThresholds, *, pruned: bool = False
    ) -> ParityThresholds:
        """The profile's thresholds for a precision (and pruning) with the user's overrides applied."""
        base = self.parity.get(precision, ParityThresholds())
        return (base.overridden_by(self.pruned) if pruned else base).overridden_by(overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "target") -> TargetProfile:
        values = dict(values)
        parity = values.pop("parity", {})
        profile = config_from_dict(cls, values, where)
        thresholds = {p: config_from_dict(ParityThresholds, t, f"{where}.parity.{p}") for p, t in parity.items()}
        return dataclasses.replace(profile, parity=thresholds)


def package_data(package: str, checkout_folder: str) -> Path:
    """A data folder installed as a package (targets/ as edgec.profiles, calibration/ as edgec.corpus).

    `python -m edgec` run from a source checkout imports the checkout's edgec/, which lacks those mapped
    packages; the folder beside it is the same data.
    """
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / checkout_folder


def _profiles_dir() -> Path:
    return package_data("edgec.profiles", "targets")


def available_targets() -> list[str]:
    """Names of the profiles shipped with edgec."""
    return sorted(p.stem for p in _profiles_dir().glob("*.toml"))


def host_target() -> str:
    """The shipped CPU profile for the machine edgec runs on."""
    return "ort-arm64" if platform.machine().lower() in ("aarch64", "arm64") else "ort-x86"


def choose_target(name_or_path: str, *, has_calibration: bool) -> tuple[str, str | None]:
    """Resolve the product's short names: `ort` is the host CPU's profile; `trt` is trt-int8 when the user
    gave calibration data (int8 needs representative text) and trt-fp16 otherwise. Returns the profile
    name and, for an alias, the sentence that says what was chosen and why."""
    if name_or_path == "ort":
        return host_target(), None
    if name_or_path == "trt":
        if has_calibration:
            return "trt-int8", "--target trt: chose trt-int8 because calibration data was given"
        return "trt-fp16", "--target trt: chose trt-fp16 because no calibration data was given (pass --calib for int8)"
    return name_or_path, None


def load_target(name_or_path: str, *, has_calibration: bool = False) -> TargetProfile:
    """A shipped profile by name (`ort`, `trt` resolved by choose_target), or a user's profile by path."""
    name_or_path, _ = choose_target(name_or_path, has_calibration=has_calibration)
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = _profiles_dir() / f"{name_or_path}.toml"
        if not path.exists():
            raise ConfigError(
                f"unknown target {name_or_path!r}; use one of {', '.join(['ort', 'trt', *available_targets()])} "
                "or the path of a .toml profile"
            )
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"target profile {path} is not valid TOML ({exc}); fix the file") from None
    return TargetProfile.from_dict(values, where=f"target {path.name}")
