"""An artifact's device runner (predict.py) on an emulated aarch64 Python against the same runner on this host.

The emulated side has only the standard library, numpy, onnxruntime and tokenizers (scripts/setup_arm64.sh):
the check shows that a device needs nothing else, and that it computes what this host computes, within the
artifact's own parity thresholds (cosine for embeddings, top-1 agreement for classifiers).
"""

from __future__ import annotations

import json

import numpy as np

from edgec.artifacts.artifact import Artifact
from edgec.backends.device_runner import RUNNER_FILE
from edgec.data import Dataset
from edgec.errors import InputError
from edgec.parity import metrics as parity_metrics
from edgec.parity.evalset import eval_texts
from edgec.parity.gate import failures
from edgec.parity.ledger import ParityRow, compare
from edgec.running.device_predict import Predictor
from edgec.running.emulation import run_script_emulated
from edgec.running.inference import Outputs


def runner_inputs(task: str, data: Dataset) -> tuple[list[str], list[str] | None]:
    """The texts (and second texts) the runner gets: one line each on its stdin, so no tabs or line breaks inside."""
    texts = eval_texts(task, data)
    clean = lambda text: " ".join(text.split())  # noqa: E731
    pairs = [clean(e.text_pair) for e in texts.examples] if texts.has_pairs else None
    return [clean(t) for t in texts.texts], pairs


def check_runner_emulated(artifact: Artifact, data: Dataset, *, samples: int) -> ParityRow:
    """Run predict.py on `samples` examples of `data` on emulated aarch64 and here; one row comparing the two."""
    runner = artifact.path / RUNNER_FILE
    if not runner.is_file():
        raise InputError(
            f"{artifact.path} has no {RUNNER_FILE}; rebuild it with this edgec (ONNX Runtime targets ship one)"
        )
    task = artifact.manifest.task
    texts, pairs = runner_inputs(task, data.sample(samples, seed=0))
    host = Predictor(artifact.path).run(texts, pairs)
    lines = [f"{t}\t{p}" for t, p in zip(texts, pairs)] if pairs else texts
    printed = run_script_emulated(runner, ["--json"], stdin="\n".join(lines) + "\n")
    device = {name: np.asarray(value, dtype=np.float32) for name, value in json.loads(printed)["outputs"].items()}
    rows = len(texts)
    mask = np.ones((rows, max((v.shape[1] for v in host.values() if v.ndim >= 3), default=1)), dtype=np.int64)
    metrics = compare(task, Outputs(host, mask), Outputs(device, mask))
    thresholds = artifact.manifest.parity.thresholds
    non_finite = {name: parity_metrics.non_finite_count(values) for name, values in device.items()}
    return ParityRow(
        "predict.py: aarch64 (emulated) vs this host",
        RUNNER_FILE,
        metrics,
        failures(metrics, thresholds, {}, non_finite),
    )
