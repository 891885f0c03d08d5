"""predict.py and requirements.txt in an ONNX Runtime artifact: what a device needs to run it without torch,
transformers or edgec (the runner is edgec/running/device_predict.py, copied as is)."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import edgec.running.device_predict

RUNNER_FILE = "predict.py"
REQUIREMENTS_FILE = "requirements.txt"
# The runner's only dependencies, pinned to the versions the artifact was verified with here.
RUNNER_PACKAGES = ("onnxruntime", "tokenizers", "numpy")


def write_device_runner(staging: Path) -> tuple[Path, ...]:
    """Copy the runner and pin its requirements into the staging folder; nothing where the tokenizer has no
    tokenizer.json (a slow, Python-only tokenizer, which the tokenizers package cannot read)."""
    if not (staging / "tokenizer.json").is_file():
        return ()
    runner, requirements = staging / RUNNER_FILE, staging / REQUIREMENTS_FILE
    shutil.copyfile(edgec.running.device_predict.__file__, runner)
    requirements.write_text("".join(f"{name}=={metadata.version(name)}\n" for name in RUNNER_PACKAGES))
    return runner, requirements
