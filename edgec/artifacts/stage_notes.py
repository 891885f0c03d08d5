"""What each stage tells the report, the model card and the manifest: its note, typed.

A stage returns `ctx.with_note(stage, note)`; `StageNotes` holds one note per stage, `Manifest.write` writes
`StageNotes.to_json()` as edgec.json's "stages" and `Manifest.read` turns them back into these types. The JSON is what
the notes were before they were typed (a dict per stage), key for key, so artifacts of either edgec read in the other.

Keys a note type does not know (a newer edgec's, or what a back end outside edgec records in its emit note) are kept
in the note's `extra` and written back as they came: a rewrite of the manifest (`edgec bench`, `edgec engine`) loses
nothing. A key a type needs and an old note lacks makes the manifest unreadable, as any other missing field does;
fields added after the first artifacts were written have defaults, so those artifacts still read.

The emit note's types name edgec's back ends: the manifest reads them without importing the back ends (which sit
above it), and a back end outside edgec writes the plain `EmitNote`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

# Field metadata: the key is left out of the JSON while the field is None, as the untyped note left it out.
_WRITTEN_WHEN_SET = "written_when_set"
_WHEN_SET = {_WRITTEN_WHEN_SET: True}


def _json(value: Any) -> Any:
    if isinstance(value, Note):
        return value.to_json()
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Note:
    """A stage note: its fields are the JSON keys; `extra` keeps the keys its type does not know."""

    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not (value is None and f.metadata.get(_WRITTEN_WHEN_SET)):
                values[f.name] = _json(value)
        return {**values, **self.extra}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        return cls(**known, extra={k: v for k, v in values.items() if k not in names})


_N = TypeVar("_N", bound="Note")


def _with_nested(note: _N, values: dict[str, Any], key: str, kind: type[Note]) -> _N:
    """`note` with its list field `key` read as notes of `kind` (Note.from_json leaves nested notes as JSON)."""
    items = values.get(key)
    if items is None:
        return note
    nested: dict[str, Any] = {key: [kind.from_json(item) for item in items]}
    return dataclasses.replace(note, **nested)


@dataclass(frozen=True, kw_only=True)
class PruneStep(Note):
    """One step of the iterative schedule."""

    step: int
    fraction: float
    """The share of the then current model's MACs this step removed."""
    macs_after: int
    seconds: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class PruneNote(Note):
    """What pruning removed, in the unpruned model's terms (MACs per text at the calibration texts' mean length)."""

    fraction: float
    units: list[str]
    calibration_texts: int
    mean_tokens: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    heads_before: list[int]
    heads_after: list[int]
    """Per kept layer, in layers_kept's order."""
    ffn_before: list[int]
    ffn_after: list[int]
    hidden_before: int | None = None
    """None in artifacts of edgec before hidden-size pruning."""
    hidden_after: int | None = None
    layers_kept: list[int] | None = None
    """In the unpruned model's numbering; None in artifacts of edgec before layer pruning (every layer kept)."""
    layers_removed: list[int] = field(default_factory=list)
    tuning: dict[str, Any] | None = None
    """The mask tuning's settings (recipe.TuningConfig as a dict); None without rescaling."""
    estimated_loss: dict[str, float] = field(default_factory=dict)
    importance_capped: int | None = field(default=None, metadata=_WHEN_SET)
    """Calibration texts whose share of the Fisher information was capped (recipe.PruneConfig.importance_clip)."""
    least_squares: list[dict[str, Any]] = field(default_factory=list)
    """The mask tuning's fit per layer, as prune_tuning reports it."""
    seconds: dict[str, float] = field(default_factory=dict)
    schedule: str | None = field(default=None, metadata=_WHEN_SET)
    """"iterative" for the iterative schedule; absent for one shot."""
    steps: list[PruneStep] | None = field(default=None, metadata=_WHEN_SET)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Self:
        return _with_nested(super().from_json(values), values, "steps", PruneStep)


@dataclass(frozen=True, kw_only=True)
class DistillNote(Note):
    """How a distillation run went; after several runs (the iterative schedule), the last with every run in `runs`."""

    texts: int
    steps: int
    examples_per_second: float
    best_step: int
    best_score: float
    stopped: str
    seconds: float
    precision: str
    ranks: list[dict[str, int]] = field(default_factory=list)
    teacher_cache: dict[str, Any] | None = None
    """stages.teacher_cache.cache_note; None where the teacher ran at every step (or before edgec cached it)."""
    layers: list[list[int]] = field(default_factory=list)
    """(student layer, teacher layer) pairs of the hidden-state loss."""
    history: list[list[float]] = field(default_factory=list)
    """(step, score) of every evaluation."""
    runs: list[DistillNote] | None = field(default=None, metadata=_WHEN_SET)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Self:
        return _with_nested(super().from_json(values), values, "runs", DistillNote)


@dataclass(frozen=True, kw_only=True)
class ExportNote(Note):
    exporter: str
    opset: int
    inputs: list[str]
    accelerator: str | None = field(default=None, metadata=_WHEN_SET)
    """The mobile accelerator a fixed-shape export is for."""
    fixed_shape: list[int] | None = field(default=None, metadata=_WHEN_SET)
    """(batch, sequence) of a fixed-shape export."""


@dataclass(frozen=True, kw_only=True)
class OptimizeNote(Note):
    fused_ops: dict[str, int]
    residual_sums: int
    biased_attention: int
    rotary_attention: int = 0
    """ModernBERT attention cores fused by ops.rotary_attention (also counted in fused_ops' MultiHeadAttention)."""
    disentangled_attention: int = 0
    """DeBERTa-v2/v3 attention cores fused by ops.disentangled_attention (also counted in fused_ops' MultiHeadAttention)."""


@dataclass(frozen=True, kw_only=True)
class QuantizeNote(Note):
    """The quantize stage's method and, per method, its settings (a key is written only by the methods that set it)."""

    method: str
    per_channel: bool | None = field(default=None, metadata=_WHEN_SET)
    """Dynamic int8."""
    quantized_nodes: int | None = field(default=None, metadata=_WHEN_SET)
    """Static int8 from here on."""
    int8_embedding_tables: int | None = field(default=None, metadata=_WHEN_SET)
    activations: str | None = field(default=None, metadata=_WHEN_SET)
    weights: str | None = field(default=None, metadata=_WHEN_SET)
    calibration: str | None = field(default=None, metadata=_WHEN_SET)
    calib_samples: int | None = field(default=None, metadata=_WHEN_SET)
    smoothing_alpha: float | None = field(default=None, metadata=_WHEN_SET)
    outlier_channels_in_float: int | None = field(default=None, metadata=_WHEN_SET)
    inputs_with_outliers: int | None = field(default=None, metadata=_WHEN_SET)
    folded_nodes: int | None = field(default=None, metadata=_WHEN_SET)
    """Static int8: nodes computed once from constants before calibration (ops.constant_folding), not on every run."""
    folded_bytes: int | None = field(default=None, metadata=_WHEN_SET)
    """The bytes of the values folding stored, less the initializers it made unused."""


@dataclass(frozen=True, kw_only=True)
class FallbackNote(Note):
    """Which weight MatMuls the fallback moved back to float, and how many it left in int8."""

    kept_in_float: list[str]
    """Most sensitive first."""
    quantized_nodes: int | None = field(default=None, metadata=_WHEN_SET)
    """Weight MatMuls still in int8 in the model the stage left (of QuantizeNote.quantized_nodes); None in artifacts
    of edgec before it recorded this."""
    against: str | None = field(default=None, metadata=_WHEN_SET)
    """What int8 and the tries were judged against: the fp32 reference, or (where the float model quantized already
    missed the gate, as after heavy pruning) the fp32 model it was quantized from; None in artifacts of edgec before
    it recorded this."""
    reason: str | None = field(default=None, metadata=_WHEN_SET)
    """Why nothing was tried (int8 passed as quantized, or no MatMul was quantized)."""
    tries: list[int] | None = field(default=None, metadata=_WHEN_SET)
    """The k tried, ascending."""
    sensitivity: dict[str, float] | None = field(default=None, metadata=_WHEN_SET)
    """Every quantized MatMul's own int8 error, most sensitive first."""


@dataclass(frozen=True, kw_only=True)
class EmitNote(Note):
    """What a back end's emit wrote: the typed core every back end has; a back end outside edgec records anything
    else in `extra`, and edgec's own back ends have the subclasses below."""

    backend: str
    model: str
    """The model file's name in the artifact."""
    io: dict[str, list[dict[str, Any]]] | None = field(default=None, metadata=_WHEN_SET)
    """The model's inputs and outputs where it was made without ONNX, which otherwise gives them."""


@dataclass(frozen=True, kw_only=True)
class OrtEmitNote(EmitNote):
    backend: str = "ort"
    runner: str | None = None
    """predict.py, where the device runner was written."""


@dataclass(frozen=True, kw_only=True)
class MobileEmitNote(EmitNote):
    backend: str = "mobile"
    operator_config: str
    conversion: str
    operator_counts: dict[str, int]
    """Operators of the optimized graph, most frequent first."""
    usability: dict[str, str]
    """ORT's verdict per execution provider."""
    accelerator: dict[str, Any] | None = None
    """The accelerator-shaped graph's own check, without its node list; None without --accelerator."""
    runner: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExecuTorchEmitNote(EmitNote):
    backend: str = "executorch"
    io_file: str
    delegate: str
    delegated_partitions: int
    quantization: str
    inputs: dict[str, dict[str, Any]]
    """Per input: dtype and the batch and sequence ranges the program takes."""


@dataclass(frozen=True, kw_only=True)
class TensorRTEmitNote(EmitNote):
    backend: str = "tensorrt"
    spec: str
    script: str
    typing: dict[str, Any] | None = None
    """The fp16 typing's counts (fp16_nodes, fp32_nodes by reason); None for fp32 (or before strongly typed engines)."""
    profile: dict[str, Any]
    """The optimization profile: per input, min/opt/max shapes."""
    preflight_warnings: list[str] = field(default_factory=list)


_EMIT_NOTES: dict[str, type[EmitNote]] = {
    "ort": OrtEmitNote,
    "mobile": MobileEmitNote,
    "executorch": ExecuTorchEmitNote,
    "tensorrt": TensorRTEmitNote,
}


@dataclass(frozen=True, kw_only=True)
class StageNotes:
    """Every stage's note of one build; None where the stage did not run."""

    target: str | None = None
    """Why this target was chosen, where the build chose it (api.build)."""
    prune: PruneNote | None = None
    distill: DistillNote | None = None
    export: ExportNote | None = None
    optimize: OptimizeNote | None = None
    quantize: QuantizeNote | None = None
    fallback: FallbackNote | None = None
    emit: EmitNote | None = None
    engine: dict[str, Any] | None = None
    """The TensorRT engine stage's record, as Manifest.engine carries it (a JSON value there too)."""
    other: dict[str, Any] = field(default_factory=dict)
    """Notes of stages edgec has no type for (a back end's own extra stage), as their JSON values."""

    def with_note(self, stage: str, note: Any) -> StageNotes:
        """These notes with `stage`'s replaced; a note of the wrong type for a stage edgec knows is a bug."""
        kind = _KINDS.get(stage)
        if kind is None:
            return dataclasses.replace(self, other={**self.other, stage: note})
        if not isinstance(note, kind):
            raise TypeError(f"the {stage} stage's note must be a {kind.__name__}, got {type(note).__name__}")
        changes: dict[str, Any] = {stage: note}
        return dataclasses.replace(self, **changes)

    def int8_matmuls(self) -> tuple[int, int] | None:
        """(weight MatMuls in int8, weight MatMuls in all) in the model the stages left; None where static int8 did
        not run. Counted from the names kept in float, which artifacts older than FallbackNote.quantized_nodes have."""
        if self.quantize is None or self.quantize.quantized_nodes is None:
            return None
        kept = len(self.fallback.kept_in_float) if self.fallback else 0
        return self.quantize.quantized_nodes - kept, self.quantize.quantized_nodes

    def to_json(self) -> dict[str, Any]:
        values = {name: _json(getattr(self, name)) for name in _KINDS if getattr(self, name) is not None}
        return {**values, **self.other}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> StageNotes:
        typed: dict[str, Any] = {}
        for stage, value in values.items():
            kind = _KINDS.get(stage)
            if kind is EmitNote:
                kind = _EMIT_NOTES.get(value.get("backend"), EmitNote)
            typed[stage] = kind.from_json(value) if kind is not None and issubclass(kind, Note) else value
        return cls(
            **{k: v for k, v in typed.items() if k in _KINDS}, other={k: v for k, v in typed.items() if k not in _KINDS}
        )


_KINDS: dict[str, type] = {
    "target": str,
    "prune": PruneNote,
    "distill": DistillNote,
    "export": ExportNote,
    "optimize": OptimizeNote,
    "quantize": QuantizeNote,
    "fallback": FallbackNote,
    "emit": EmitNote,
    "engine": dict,
}
"""The type of each stage's note edgec knows; the fields of StageNotes but `other`."""
