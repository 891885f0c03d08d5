"""What is done with a built artifact outside a build: re-check its parity (alone, on its golden sample, or against
its source model), verify it on emulated aarch64, and predict with it. Whatever depends on the back end is asked of it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgec.artifacts.artifact import Artifact
from edgec.backends import get_backend
from edgec.data import Dataset
from edgec.errors import ConfigError
from edgec.parity import golden
from edgec.parity.ledger import ParityRow, parity_row
from edgec.parity.runtime import measure_model, model_forward
from edgec.parity.source_reference import reference_for
from edgec.recipe import ParityThresholds
from edgec.running.emulation import EmulatedRun, run_emulated
from edgec.running.inference import collect_outputs, replay_forward
from edgec.source import OUTPUT_NAMES, TOKEN_LEVEL_TASKS


def check_parity(
    artifact: Artifact,
    data: Dataset | None,
    *,
    reference: str | Path | None = None,
    overrides: ParityThresholds = ParityThresholds(),
) -> list[ParityRow]:
    """Re-run the artifact: on `data` against its uncompressed source model (or `reference`), or, without data, on
    its golden sample (no source model needed): one row against the fp32 reference, one against its own build."""
    manifest = artifact.manifest
    backend = get_backend(manifest.backend)
    thresholds = manifest.parity.thresholds.overridden_by(overrides)
    with tempfile.TemporaryDirectory(prefix="edgec-") as work:
        model, simulated = backend.parity_runtime(artifact, Path(work))
        if data is None:
            sample = golden.read(artifact.path)
            built_on = (manifest.parity.golden or {}).get("artifact_runtime")
            same_runtime = built_on == golden.runtime_name(model, simulated)
            return golden.check(
                sample,
                model_forward(model, artifact.session, manifest.task),
                artifact.tokenizer(),
                manifest.recipe.max_length,
                manifest.task,
                model.name,
                thresholds,
                simulated,
                reproduce=same_runtime,
                hidden_pruned=manifest.recipe.prunes_hidden,
            )
        task, evaluation = reference_for(artifact, data, reference)
        return [
            measure_model(
                model, "artifact", task, evaluation, thresholds, artifact.session, simulated, backend.statistics
            )
        ]


def verify_emulated(
    artifact: Artifact,
    data: Dataset,
    *,
    samples: int,
    threads: int = 1,
    reference: str | Path | None = None,
    overrides: ParityThresholds = ParityThresholds(),
) -> tuple[ParityRow, EmulatedRun]:
    """Run the artifact on aarch64 ONNX Runtime under emulation on a sample of `data`; parity against the source model.

    The sample is `samples` examples drawn deterministically (emulation runs 100-500x slower than a device).
    """
    if not get_backend(artifact.manifest.backend).emulates:
        raise ConfigError(
            f"{artifact.path} is a {artifact.manifest.backend} artifact; only ONNX Runtime artifacts run on emulated aarch64"
        )
    sample = data.sample(samples, seed=0)
    task, evaluation = reference_for(artifact, sample, reference)
    thresholds = artifact.manifest.parity.thresholds.overridden_by(overrides)
    inputs = {i["name"] for i in artifact.manifest.io["inputs"]}
    run = run_emulated(
        artifact.model_path,
        [{k: v for k, v in b.feeds.items() if k in inputs} for b in evaluation.batches],
        threads=threads,
    )
    compared = {name: run.outputs[name] for name in OUTPUT_NAMES[task]}
    outputs = collect_outputs(
        replay_forward(evaluation.batches, compared), evaluation.batches, token_level=task in TOKEN_LEVEL_TASKS
    )
    return parity_row(
        "aarch64 (emulated)", artifact.model_path.name, task, evaluation, outputs, thresholds, statistics=True
    ), run


def predict(artifact: Artifact, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """The artifact's named outputs for the texts, run as its back end runs it (an ONNX Runtime artifact through the
    device runner it ships: onnxruntime, tokenizers and numpy only)."""
    return get_backend(artifact.manifest.backend).predict(artifact, texts, pairs)
