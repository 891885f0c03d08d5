"""Training processes: one, or several started by torchrun, each running the same edgec command.

On a CPU-only machine accelerate makes a multi-process (gloo) group only when its state is created with cpu=True;
without it, every process started by torchrun trains alone on all of the data. `state()` is the one place that
state is created, so the training loop and the code that writes the output agree on who the main process is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import PartialState

from edgec.artifacts.artifact import staged_output
from edgec.errors import ConfigError


def state() -> PartialState:
    """accelerate's process state: gloo across CPU processes where torchrun started several, else one process."""
    return PartialState(cpu=not torch.cuda.is_available())


def launched_processes() -> int:
    """How many processes torchrun started for this command (1 without torchrun); read from its environment, so
    that asking creates no process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def describe() -> str:
    """'rank 1 of 2: ' under torchrun (the prefix of a one-line error, saying which process failed), else ''."""
    return f"rank {os.environ.get('RANK', '?')} of {launched_processes()}: " if launched_processes() > 1 else ""


def check_single_process(command: str, instead: str) -> None:
    """Refuse a command that would race on its output if torchrun started several copies of it."""
    if launched_processes() > 1:
        raise ConfigError(
            f"{command} runs in one process, not under torchrun ({launched_processes()} processes); {instead}"
        )


@contextlib.contextmanager
def main_process_output(out: Path, *, force: bool) -> Iterator[Path]:
    """staged_output on the main process; a scratch folder, thrown away, on every other one.

    Every process runs the same command to the end (the collectives need them all), but only the main one's result
    is moved into place: two processes replacing the same folder would race. All leave together.
    """
    current = state()
    if current.is_main_process:
        with staged_output(out, force=force) as staging:
            yield staging
    else:
        scratch = Path(tempfile.mkdtemp(prefix="edgec-rank-"))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    current.wait_for_everyone()
