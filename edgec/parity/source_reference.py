"""The reference a built artifact is checked against outside a build: its uncompressed source model's outputs on
new data, with the check that the model on disk is still the one it was built from."""

from __future__ import annotations

from pathlib import Path

from edgec.artifacts.artifact import Artifact, sha256_file
from edgec.data import Dataset
from edgec.errors import InputError
from edgec.parity.evalset import EvalSet, reference_outputs
from edgec.source import load_source


def reference_for(artifact: Artifact, data: Dataset, reference: str | Path | None) -> tuple[str, EvalSet]:
    """The artifact's task and the uncompressed source model's outputs on `data` (or `reference`'s, a model folder
    that need not match the recorded weights)."""
    manifest = artifact.manifest
    source_path = Path(reference or manifest.source.path)
    if not source_path.is_dir():
        raise InputError(
            f"the reference model {source_path} is not on this machine; pass --reference MODEL_DIR, "
            "or leave out --data to check the artifact against its own golden sample"
        )
    source = load_source(source_path, task=manifest.task)
    if reference is None and {p.name: sha256_file(p) for p in source.weight_files} != manifest.source.weights_sha256:
        raise InputError(
            f"{source_path} changed since the build (weights sha256 differ); pass --reference with the original model"
        )
    evaluation = reference_outputs(
        source, data, manifest.recipe.max_length, hidden_pruned=manifest.recipe.prunes_hidden
    )
    return source.task, evaluation
