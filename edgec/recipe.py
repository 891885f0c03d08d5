"""Frozen configuration dataclasses: what a build does. Validated at the edge, round-trip to JSON."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgec.errors import ConfigError
from edgec.precision import Precision

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
TASKS = ("feature-extraction", "sequence-classification", "token-classification", "question-answering")
PRUNE_UNITS = ("heads", "ffn", "layers", "hidden")
PRUNE_SCHEDULES = ("one-shot", "iterative")
TUNING_TARGETS = ("schedule", "unpruned")
TUNING_RIDGES = ("to-one", "relative")
TUNING_SPACES = ("pre-norm", "post-norm")
TUNING_FITS = ("scales", "weights")
SCHEDULES = ("linear", "cosine")
TRAIN_PRECISIONS = ("auto", "bf16", "fp16", "fp32")

T = TypeVar("T")


def config_from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build a config dataclass from a mapping; unknown keys are errors, nested configs recurse."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in values.items():
        nested = _nested_config_type(cls, key)
        kwargs[key] = config_from_dict(nested, value, f"{where}.{key}") if nested and isinstance(value, dict) else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _nested_config_type(cls: type, key: str) -> type | None:
    hint = typing.get_type_hints(cls)[key]
    candidates = typing.get_args(hint) or (hint,)  # `PruneConfig | None` -> (PruneConfig, NoneType)
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How weights and activations are reduced in precision."""

    precision: Precision | None = None
    """One of fp32, fp16, int8-dynamic, int8 (static, calibrated Q/DQ); None takes the target's default."""
    calibration: str = "percentile"
    """Activation range estimator for static int8: minmax, percentile or entropy."""
    percentile: float = 99.999
    """Share of |activation| values kept inside the range by the percentile method."""
    calib_samples: int = 256
    """Calibration texts drawn (deterministically) from the calibration set."""
    fallback: bool = True
    """When int8 breaks parity, keep the fewest most sensitive nodes in float until it holds."""

    def __post_init__(self) -> None:
        if self.precision is not None:  # config files and the command line give the word
            object.__setattr__(self, "precision", Precision.parse(self.precision))
        _require(
            self.calibration in CALIBRATION_METHODS,
            f"unknown calibration method {self.calibration!r}; use one of {', '.join(CALIBRATION_METHODS)}",
        )
        _require(90.0 < self.percentile <= 100.0, f"percentile must be in (90, 100], got {self.percentile}")
        _require(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}")


@dataclass(frozen=True, kw_only=True)
class TuningConfig:
    """Mask tuning: the per-layer least squares that rescales the kept units after pruning (Kwon et al. 2022, §4.3).

    The defaults are the variant that won on the validation splits of benchmarks/prune_quality.py; the other
    values exist to measure each change (the benchmark's least-squares table)."""

    target: str = "schedule"
    """What each layer reconstructs: "schedule", the model pruned to the square root of the kept share (a nearer
    target, as Kwon's schedule), or "unpruned", the model itself."""
    ridge: str = "relative"
    """"to-one": scales pulled towards 1 with an absolute damping of 1 on the normal equations (Kwon's LSMR damp);
    "relative": a damping of 1e-3 of the Gram's mean diagonal."""
    fit_bias: bool = False
    """Also fit a shift of each sub-layer's output bias (the mean of what the scaled units miss)."""
    stop_on_failure: bool = False
    """Stop at the first sub-layer whose solve is not finite, leaves [-10, 10] or does not lower its error: it and
    every later one stay untuned (Kwon's rule). Off: such a sub-layer alone is left untuned."""
    cls_only: bool = True
    """Classifiers: fit the last FFN on the [CLS] token only, the one the head reads."""
    space: str = "pre-norm"
    """Where the error is measured: "pre-norm", the residual sum a LayerNorm receives, or "post-norm", that sum
    centred, divided by each token's standard deviation and scaled by the LayerNorm's weight (its first-order
    effect on the LayerNorm's output)."""
    fit: str = "weights"
    """What is fitted: "weights", the whole output projection of each sub-layer (K-prune's weight tuning;
    `weight_damping` applies), or "scales", one multiplier per kept unit (Kwon's mask tuning; `ridge` applies).
    Weights won on validation averaged over the benchmark's four cases (CLINC150 clearly, the others within noise)
    and halved the pruned encoder's output error in every case measured."""
    weight_damping: float = 0.1
    """fit "weights": the ridge towards the current weight, as a share of the inputs' Gram's mean diagonal (0.1 won
    on validation over 0.001 and 0.01 in the benchmark's fit study)."""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("target", self.target, TUNING_TARGETS),
            ("ridge", self.ridge, TUNING_RIDGES),
            ("space", self.space, TUNING_SPACES),
            ("fit", self.fit, TUNING_FITS),
        ):
            _require(value in allowed, f"mask tuning {name} must be one of {', '.join(allowed)}, got {value!r}")
        _require(
            not (self.fit == "weights" and self.space == "post-norm"),
            "mask tuning refits weights in pre-norm space only; set space='pre-norm' or fit='scales'",
        )
        _require(
            isinstance(self.weight_damping, (int, float)) and self.weight_damping > 0,
            f"mask tuning weight_damping must be a positive number, got {self.weight_damping!r}",
        )
        # A bias shift is one vector for every token, which the post-norm map scales per token: not a free shift there.
        _require(
            not (self.fit_bias and self.space == "post-norm"),
            "mask tuning fits no bias shift in post-norm space; set fit_bias=False",
        )


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Structured pruning: which units may go and how much compute must go."""

    fraction: float
    """Share of the encoder's multiply-accumulates to remove, counted at the calibration texts' lengths."""
    units: tuple[str, ...] = ("heads", "ffn")
    """What may be removed: attention heads, FFN neurons, whole layers, hidden channels (the model's width), any of them."""
    hidden_size: int | None = None
    """With `hidden` among the units: the width to keep (a multiple of the head size); None picks it from the kept
    share of MACs (edgec.ops.width.default_width)."""
    max_layers: int | None = None
    """With `layers` among the units: keep at most this many encoder layers, the least important going first (the
    search may remove more). It sets the shape at a budget: few wide layers or many narrow ones. None: the search
    alone decides."""
    rescale: bool = True
    """Mask tuning: re-fit the kept units' scales per layer by least squares (see TuningConfig)."""
    rearrange: bool = True
    """Refine which units each layer keeps with its block of the Fisher information, not only its diagonal."""
    calib_samples: int = 1024
    """Calibration texts importance and mask tuning use, drawn deterministically from the calibration set (1,024:
    chosen on validation over 256 and 2,048 for fine-tuned MiniLM on SST-2 and CLINC150 and mpnet on STS-B;
    benchmarks/RESULTS.md)."""
    importance_clip: float | None = 0.99
    """Cap on each calibration text's share of the Fisher information: its squared gradient norm counts at most this
    quantile of all texts' (stages.prune_fisher says why); None: no cap."""
    tuning: TuningConfig = field(default_factory=TuningConfig)
    steps: int = 2
    """Pruning steps toward the fraction, each re-scoring the units on the model the step before left (importance,
    plan, removal and mask tuning each time; no retraining); kept MACs fall geometrically (stages.prune). 2: chosen
    on validation over 1 and 4 (benchmarks/RESULTS.md), at twice one step's time."""
    neuron_multiple: int = 1
    """Round each layer's kept FFN neurons to a multiple of this (int8 GEMM kernels work in blocks); 1: no rounding."""
    schedule: str = "one-shot"
    """one-shot: prune to the fraction, then distill; iterative: prune in `iterations` steps, distilling after each,
    all within the distillation's time budget."""
    iterations: int = 3
    """Pruning steps of the iterative schedule (kept MACs fall geometrically to 1 - fraction)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(self.units))
        _require(
            isinstance(self.neuron_multiple, int) and self.neuron_multiple >= 1,
            f"neuron_multiple must be an integer >= 1, got {self.neuron_multiple!r}",
        )
        _require(
            self.schedule in PRUNE_SCHEDULES,
            f"unknown prune schedule {self.schedule!r}; use one of {', '.join(PRUNE_SCHEDULES)}",
        )
        _require(self.iterations >= 1, f"prune iterations must be at least 1, got {self.iterations}")
        _require(
            isinstance(self.steps, int) and self.steps >= 1, f"prune steps must be an integer >= 1, got {self.steps!r}"
        )
        _require(
            self.hidden_size is None or "hidden" in self.units,
            "a hidden size is kept only when hidden channels may go; add hidden to --prune-units",
        )
        _require(
            self.max_layers is None or (isinstance(self.max_layers, int) and self.max_layers >= 1),
            f"the most layers to keep must be an integer >= 1, got {self.max_layers!r}",
        )
        _require(
            self.max_layers is None or "layers" in self.units,
            "a layer count is kept only when whole layers may go; add layers to --prune-units",
        )
        _require(
            isinstance(self.fraction, (int, float)) and 0.0 <= self.fraction < 1.0,
            f"prune fraction must be in [0, 1) (the share of compute removed), got {self.fraction}; e.g. --prune 0.5",
        )
        bad = [u for u in self.units if u not in PRUNE_UNITS]
        _require(
            bool(self.units) and not bad,
            f"prune units must be some of {', '.join(PRUNE_UNITS)}, got {', '.join(self.units) or 'none'}",
        )
        _require(self.calib_samples >= 1, f"prune calib_samples must be at least 1, got {self.calib_samples}")
        _require(
            self.importance_clip is None or 0.0 < self.importance_clip <= 1.0,
            f"prune importance_clip must be a quantile in (0, 1] or None, got {self.importance_clip}",
        )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How edgec's one training loop runs (fine-tuning and distillation alike)."""

    steps: int = 1000
    """Most optimizer steps."""
    minutes: float | None = None
    """Wall-time budget; training stops at whichever of steps and minutes comes first."""
    batch_size: int = 32
    """Examples per micro-batch (an optimizer step sees batch_size x accumulation of them)."""
    accumulation: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    """Share of the budget with a linearly rising learning rate, then the schedule's decay to zero."""
    schedule: str = "linear"
    """Decay after warmup: linear or cosine."""
    eval_every: int = 100
    """Optimizer steps between evaluations (early stop, best checkpoint kept)."""
    patience: int = 5
    """Evaluations without improvement before training stops."""
    max_grad_norm: float = 1.0
    precision: str = "auto"
    """Autocast: bf16, fp16 with loss scaling (GPU only), fp32, or auto: bf16 where the hardware computes it natively
    (AVX512-BF16 or AMX CPUs, bf16-capable GPUs), fp32 elsewhere (emulated bf16 is several times slower than fp32).
    Weights and optimizer state stay fp32."""
    max_length: int = 128
    """Longest tokenized training text."""

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"training steps must be at least 1, got {self.steps}")
        _require(self.minutes is None or self.minutes > 0, f"training minutes must be > 0, got {self.minutes}")
        _require(self.batch_size >= 1 and self.accumulation >= 1, "batch_size and accumulation must be at least 1")
        _require(0 < self.learning_rate < 1, f"learning_rate must be in (0, 1), got {self.learning_rate}")
        _require(0 <= self.warmup < 1, f"warmup must be a share of the budget in [0, 1), got {self.warmup}")
        _require(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        _require(
            self.precision in TRAIN_PRECISIONS,
            f"unknown training precision {self.precision!r}; use one of {', '.join(TRAIN_PRECISIONS)}",
        )
        _require(self.max_length >= 8, f"max_length must be at least 8, got {self.max_length}")
        _require(self.eval_every >= 1 and self.patience >= 1, "eval_every and patience must be at least 1")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(TrainConfig):
    """Recovering accuracy by training the pruned student against the uncompressed teacher.

    A TrainConfig (the training loop's settings, defined once there: steps, minutes, batch size, learning rate, ...)
    with distillation's own settings added; the loop takes it as it is. Its fields stay flat, so a recipe's
    `distill` table and `DistillConfig(steps=...)` read as they did when it repeated them."""

    hidden_weight: float = 1.0
    """Weight of the per-layer hidden-state loss next to the output loss."""
    temperature: float = 2.0
    """Softmax temperature of the logits KL loss (classifiers)."""
    hidden_layers: int = 4
    """Teacher layers (evenly spaced, the last among them) whose hidden states the student's layers at the same
    depth are fitted to; 0 fits the outputs alone."""
    label_weight: float = 0.5
    """On labelled classification data: the share of the loss that is cross-entropy on the labels (the rest is the
    teacher's)."""
    teacher_cache: bool = True
    """Run the teacher once over the training texts and keep its outputs (bounded by cache_mb), rather than at
    every step."""
    cache_mb: float = 2048.0
    """Most memory the teacher's cached outputs may take; past it, fewer texts (drawn deterministically) are used."""
    cache_share: float = 0.3
    """Under a time budget, the most of it the teacher's one pass may take; the texts it reached by then (a random
    sample) form the cache. Without this bound a large training set spends the whole budget in the teacher: 65k
    SST-2 texts through mpnet outlast a 25-minute budget. The student then trains for the rest, seeing each cached
    text several times (at --prune 0.85 its step costs less than a teacher forward per text): a judgement, not
    measured."""
    train_word_embeddings: bool = False
    """Train the student's word embedding table too. Off (the default), it keeps the values pruning left (the
    teacher's, or its kept channels where the hidden size was narrowed) and gets no gradient or optimizer state. The
    table is most of a pruned student (23.4 M of mpnet's 37.2 M parameters at --prune 0.85) while a batch touches a
    few hundred of its rows, yet its dense gradient (allocated and zeroed every step), clipping and AdamW update
    cost about a quarter of a step with the fused AdamW. Freezing it measured no accuracy cost: mpnet at --prune
    0.85 distilled for 200 steps on STS-B train sentences scored 84.96 and 84.93 STS-B dev Spearman frozen against
    84.96 and 84.97 trained (two seeds; 80.58 before distillation; benchmarks/distill_throughput.py --accuracy).
    On the tests' tiny random models the training loss falls slower in 20 steps with the table frozen."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the shared loop's settings
        _require(self.hidden_weight >= 0, f"distill hidden_weight must be >= 0, got {self.hidden_weight}")
        _require(self.temperature > 0, f"distill temperature must be > 0, got {self.temperature}")
        _require(self.hidden_layers >= 0, f"distill hidden_layers must be >= 0, got {self.hidden_layers}")
        _require(0.0 <= self.label_weight <= 1.0, f"distill label_weight must be in [0, 1], got {self.label_weight}")
        _require(self.cache_mb > 0, f"distill cache_mb must be > 0, got {self.cache_mb}")
        _require(0 < self.cache_share < 1, f"distill cache_share must be in (0, 1), got {self.cache_share}")


@dataclass(frozen=True, kw_only=True)
class ParityThresholds:
    """Limits the final artifact must meet against the fp32 reference. None means not checked."""

    min_cosine: float | None = None
    """Embeddings: lowest allowed mean cosine similarity to the reference; for an embedding narrowed by hidden-size
    pruning, whose cosine to the reference is undefined, lowest allowed mean similarity correlation
    (parity.metrics.similarity_agreement)."""
    max_drop: float | None = None
    """Task metric points (Spearman x100 or accuracy %) the artifact may lose, when labels or scores exist."""
    min_agreement: float | None = None
    """Classifiers: lowest allowed share of top-1 predictions equal to the reference's."""

    def __post_init__(self) -> None:
        for name in ("min_cosine", "min_agreement"):
            value = getattr(self, name)
            _require(value is None or -1.0 <= value <= 1.0, f"{name} must be within [-1, 1], got {value}")
        _require(self.max_drop is None or self.max_drop >= 0, f"max_drop must be >= 0 points, got {self.max_drop}")

    def overridden_by(self, other: ParityThresholds) -> ParityThresholds:
        """These thresholds with every field `other` sets replaced."""
        changes = {k: v for k, v in dataclasses.asdict(other).items() if v is not None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What to do to the model, independent of where it runs."""

    task: str | None = None
    """Override the task detected from config.json."""
    prune: PruneConfig | None = None
    """Structured pruning before export; None keeps the model whole."""
    distill: DistillConfig | None = None
    """Distillation after pruning (needs training text); None skips it."""
    quant: QuantConfig = field(default_factory=QuantConfig)
    parity: ParityThresholds = field(default_factory=ParityThresholds)
    """Overrides of the target profile's thresholds for the chosen precision."""
    opset: int = 17
    """ONNX opset of the export (17 keeps LayerNormalization as one op, which fusion needs)."""
    max_length: int = 512
    """Longest tokenized input (longer texts are truncated)."""
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.task is None or self.task in TASKS, f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        _require(17 <= self.opset <= 21, f"opset must be within 17..21, got {self.opset}")
        _require(self.max_length >= 8, f"max_length must be at least 8, got {self.max_length}")
        if self.prune is not None and self.prune.schedule == "iterative":
            _require(
                self.distill is not None and self.distill.minutes is not None,
                "the iterative schedule distills between pruning steps within one time budget; "
                "pass --distill FILE and --distill-minutes M",
            )

    @property
    def prunes_hidden(self) -> bool:
        """Whether hidden channels may go: then, and only then, an embedding may be narrower than the reference's."""
        return self.prune is not None and "hidden" in self.prune.units

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        return config_from_dict(cls, values, "recipe")
