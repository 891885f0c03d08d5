"""The options commands share, each defined once: single options as `Annotated` types (typer's idiom for a reusable
option) and option groups as frozen dataclasses whose fields are such options.

A command takes a group as one parameter (`columns: DataColumns`); `common.command` registers it with the group's
fields spread into options, so `--text-column` is one option with one help text on every command that reads data,
and a group turns its options into the library's config in one place (`DataColumns.read`, `SourceLoading.options`).
Build-specific groups (recipe, budgets, TensorRT, mobile) are in `build_options.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, overload

import typer

from edgec.data import Dataset, columns_from_options, read_dataset
from edgec.errors import ConfigError
from edgec.recipe import ParityThresholds
from edgec.source import LoadOptions

if TYPE_CHECKING:
    from edgec.ray_sweep import RayCluster

ModelFolder = Annotated[
    str, typer.Argument(help="Hugging Face model folder (or a repo id already in the local HF cache).")
]
ArtifactPath = Annotated[Path, typer.Argument(help="Artifact folder (or .zip bundle) written by `edgec build`.")]
Target = Annotated[
    str,
    typer.Option(
        help="Profile name (see `edgec targets`), `ort` for this CPU, `trt` (int8 with --calib, else fp16), "
        "or a .toml path.",
    ),
]
Calib = Annotated[
    Path | None,
    typer.Option(
        help="Calibration data (.txt/.jsonl/.csv/.tsv) for pruning importance and int8 ranges; "
        "default: edgec's corpus.",
    ),
]
Eval = Annotated[
    Path | None,
    typer.Option(
        "--eval",
        help="Eval data for the parity ledger, the task metric and early stops (default: the calibration set).",
    ),
]
Task = Annotated[str | None, typer.Option(help="Override the task detected from config.json.")]
MaxLength = Annotated[int, typer.Option(help="Longest tokenized input; longer texts are truncated.")]
Reference = Annotated[Path | None, typer.Option(help="The uncompressed model, if not at the path the build recorded.")]
Force = Annotated[bool, typer.Option(help="Replace --out if it exists.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TimingBatch = Annotated[int, typer.Option(help="Batch size when timing.")]
TimingSeqLen = Annotated[int, typer.Option(help="Tokens per input when timing.")]


@dataclass(frozen=True, kw_only=True)
class DataColumns:
    """Which CSV/TSV columns hold what; every command that reads a data file takes these."""

    text_column: Annotated[str | None, typer.Option(help="CSV/TSV column holding the text (default: text).")] = None
    text_pair_column: Annotated[str | None, typer.Option(help="CSV/TSV column holding the second text.")] = None
    label_column: Annotated[str | None, typer.Option(help="CSV/TSV column holding the class label.")] = None
    score_column: Annotated[str | None, typer.Option(help="CSV/TSV column holding a similarity score.")] = None

    @overload
    def read(self, path: Path, *, sample: int | None = None) -> Dataset: ...
    @overload
    def read(self, path: Path | None, *, sample: int | None = None) -> Dataset | None: ...
    def read(self, path: Path | None, *, sample: int | None = None) -> Dataset | None:
        """The data file an option names (or a deterministic sample of it, read in one streaming pass), or None."""
        if path is None:
            return None
        columns = columns_from_options(self.text_column, self.text_pair_column, self.label_column, self.score_column)
        return read_dataset(path, columns, sample=sample)


@dataclass(frozen=True, kw_only=True)
class SourceLoading:
    """What loading a source model may execute; every command that loads one takes these."""

    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model folder's own Python code.")] = False
    allow_pickle: Annotated[bool, typer.Option(help="Allow pickle (.bin) weights, which can run code.")] = False

    @property
    def options(self) -> LoadOptions:
        return LoadOptions(trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle)


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Many builds as Ray tasks (`edgec sweep`, `edgec search`)."""

    # The backslash keeps typer's rich help from reading [ray] as markup and dropping it.
    use_ray: Annotated[
        bool, typer.Option("--ray", help="Build every candidate as a Ray task (pip install 'edgec\\[ray]').")
    ] = False
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --ray: a running cluster (ray://HEAD:10001, or auto); "
            "default: a local Ray on this machine's cores.",
        ),
    ] = None

    def cluster(self) -> RayCluster | None:
        """The RayCluster to build on, or None to build in this process."""
        if self.ray_address and not self.use_ray:
            raise ConfigError("--ray-address needs --ray")
        if not self.use_ray:
            return None
        from edgec.ray_sweep import RayCluster  # ray itself is imported there, only when a cluster starts

        return RayCluster(address=self.ray_address)


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """The parity gate's limits, replacing the target's for this run (`build`, `search`, `parity`, `verify`)."""

    max_drop: Annotated[
        float | None,
        typer.Option(help="Max task-metric points lost (Spearman x100 / accuracy %); default: the target's."),
    ] = None
    min_cosine: Annotated[
        float | None, typer.Option(help="Min mean cosine to the reference embeddings; default: the target's.")
    ] = None
    min_agreement: Annotated[
        float | None, typer.Option(help="Min share of top-1 predictions equal to the reference; default: the target's.")
    ] = None

    @property
    def overrides(self) -> ParityThresholds:
        return ParityThresholds(min_cosine=self.min_cosine, max_drop=self.max_drop, min_agreement=self.min_agreement)
