"""The manifest (edgec.json): everything needed to trust, reproduce and run an artifact, as a typed record.

`Manifest.read` and `Manifest.write` are the only code that touches the JSON; everything else reads attributes.
`format` is the schema version: this edgec refuses a manifest from a newer one (it cannot know what changed), and
one from an older schema (rebuild it). The stage notes are typed in `stage_notes`, which reads and writes their part
of the JSON. Sub-records whose shape depends on the back end or the tool that wrote them (the engine record, the
golden sample, bench figures) stay JSON values.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec.artifacts.stage_notes import StageNotes
from edgec.errors import ConfigError, InputError
from edgec.parity.ledger import ParityRow
from edgec.precision import Precision
from edgec.recipe import ParityThresholds, Recipe, config_from_dict
from edgec.targets import SessionSettings, TargetProfile

MANIFEST = "edgec.json"
SCHEMA_VERSION = 1
"""Raise it when a reader of an older edgec would misread the manifest: a key removed, renamed or retyped."""


@dataclass(frozen=True, kw_only=True)
class SourceRecord:
    """The model the artifact was built from."""

    path: str
    model_type: str
    weights_sha256: dict[str, str]
    """sha256 of each weight file by name: `edgec parity --data` checks the model is still the one built from."""


@dataclass(frozen=True, kw_only=True)
class SessionRecord:
    """The ONNX Runtime session settings the artifact runs with, and what chose them (the profile, or bench --tune)."""

    settings: SessionSettings
    chosen_by: str


@dataclass(frozen=True, kw_only=True)
class Sizes:
    model_bytes: int
    source_weights_bytes: int


@dataclass(frozen=True, kw_only=True)
class ParityRecord:
    """The gate's verdict and the ledger it came from."""

    passed: bool
    thresholds: ParityThresholds
    reference_metric: dict[str, float]
    """The uncompressed model's task metric on the gate's data (empty without labels or scores)."""
    eval_data: str
    eval_examples: int
    selection_examples: int
    golden: dict[str, Any] | None
    """What parity.golden wrote: the sample's file and the runtime its artifact outputs came from."""
    ledger: tuple[ParityRow, ...]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """edgec.json, typed; `to_dict` is the JSON written, field for field."""

    format: int = SCHEMA_VERSION
    """The manifest's schema version."""
    versions: dict[str, str]
    host: dict[str, Any]
    source: SourceRecord
    task: str
    pooling: dict[str, Any] | None
    labels: dict[str, str] | None
    target: TargetProfile
    instruction_set: str | None
    session: SessionRecord | None = None
    """None in manifests written before edgec recorded it: the target's session settings apply."""
    precision: Precision
    recipe: Recipe
    model_file: str
    io: dict[str, list[dict[str, Any]]]
    """The model's inputs and outputs: name, dtype and shape of each."""
    sizes: Sizes
    stages: StageNotes
    """Each stage's note (what the report says about it)."""
    engine: dict[str, Any] | None
    """The TensorRT engine's record (built, deferred, rejected); None for other back ends."""
    build_seconds: float
    parity: ParityRecord
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """sha256 and size of every other file, by relative path (filled by the package step)."""
    bench: dict[str, Any] | None = None
    """`edgec bench`'s figures, where it recorded them."""

    @property
    def backend(self) -> str:
        return self.target.backend

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["stages"] = self.stages.to_json()
        if values["bench"] is None:  # written only once bench records figures, as before the type existed
            del values["bench"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> Manifest:
        """The typed manifest from edgec.json's values; InputError naming what is wrong."""
        values = dict(values)
        try:
            parity = dict(values.pop("parity"))
            ledger = tuple(ParityRow(**{**row, "failures": tuple(row["failures"])}) for row in parity.pop("ledger"))
            thresholds = config_from_dict(ParityThresholds, parity.pop("thresholds"), f"{where}: parity.thresholds")
            session = values.pop("session", None)
            typed: dict[str, Any] = {
                "source": SourceRecord(**values.pop("source")),
                "target": TargetProfile.from_dict(values.pop("target"), f"{where}: target"),
                "session": SessionRecord(
                    settings=config_from_dict(SessionSettings, session["settings"], f"{where}: session"),
                    chosen_by=session["chosen_by"],
                )
                if session
                else None,
                "precision": Precision.parse(values.pop("precision")),
                "recipe": Recipe.from_dict(values.pop("recipe")),
                "sizes": Sizes(**values.pop("sizes")),
                "stages": StageNotes.from_json(values.pop("stages")),
                "parity": ParityRecord(**parity, thresholds=thresholds, ledger=ledger),
            }
            return cls(**values, **typed)
        except (KeyError, TypeError, AttributeError, ConfigError) as exc:  # AttributeError: a note that is no object
            raise InputError(
                f"{where} is not a manifest this edgec can read ({type(exc).__name__}: {exc}); rebuild the artifact"
            ) from None

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The folder's edgec.json, checked: present, valid JSON, of this schema version."""
        path = folder / MANIFEST
        if not path.is_file():
            raise InputError(
                f"{folder} is not an edgec artifact (no {MANIFEST}); pass the --out folder of `edgec build`"
            )
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is corrupt ({exc.msg}); rebuild the artifact") from None
        schema = values.get("format")
        if isinstance(schema, int) and schema > SCHEMA_VERSION:
            raise InputError(
                f"{folder} was written by a newer edgec (manifest schema {schema}; this edgec reads "
                f"{SCHEMA_VERSION}); upgrade edgec to use it"
            )
        if schema != SCHEMA_VERSION:
            raise InputError(f"{folder} was written by an incompatible edgec (format {schema}); rebuild it")
        return cls.from_dict(values, str(path))

    def write(self, folder: Path) -> None:
        """Write edgec.json whole or not at all (a rewrite, as `edgec engine` does, never leaves half a manifest)."""
        partial = folder / f".{MANIFEST}.partial"
        partial.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(partial, folder / MANIFEST)
