"""Running an ONNX model on aarch64 ONNX Runtime from an x86_64 host, under qemu user-mode emulation.

An artifact built for an Arm target is shown to run on Arm, with parity: the host tokenizes and computes metrics,
the emulated side only runs onnxruntime on the feeds it is given (edgec/running/emulation_runner.py, a standalone script).
scripts/setup_arm64.sh builds the aarch64 runtime once into arm64_home(); on an aarch64 host the runner runs natively.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.errors import BackendUnavailable, EdgecError, InputError
from edgec.targets import package_data

_SETUP_SCRIPT = package_data("edgec.scripts", "scripts") / "setup_arm64.sh"
_RUNNER = Path(__file__).with_name("emulation_runner.py")
_SETUP_TIMEOUT_S = 1800  # downloads of about 110 MB from Debian and PyPI; a hung mirror must not hang edgec


@dataclass(frozen=True)
class EmulatedRun:
    """What an aarch64 run returned, and the proof of where it ran."""

    outputs: dict[str, np.ndarray]  # concatenated over batches, float32, in feed order
    latency_ms: list[float]  # per batch, measured INSIDE the emulated process (wall time of session.run)
    runtime: str  # e.g. "onnxruntime 1.32.0 (aarch64, qemu-aarch64 7.2.22 -cpu neoverse-n1)"


def arm64_home() -> Path:
    """Where the aarch64 runtime lives: $EDGEC_ARM64_HOME, else ~/.cache/edgec/arm64."""
    return Path(os.environ.get("EDGEC_ARM64_HOME") or Path.home() / ".cache" / "edgec" / "arm64")


def _native() -> bool:
    return platform.machine() in ("aarch64", "arm64")


def _ready(home: Path) -> bool:
    """The stamp names the onnxruntime and tokenizers versions the root holds: a host upgrade makes the setup run again."""
    stamp = home / "ready"
    try:
        versions = {name: importlib.metadata.version(name) for name in ("onnxruntime", "tokenizers")}
    except importlib.metadata.PackageNotFoundError:
        return False
    return stamp.is_file() and stamp.read_text().strip() == " ".join(f"{name} {v}" for name, v in versions.items())


def ensure_arm64_runtime() -> Path:
    """The aarch64 runtime's folder, built by scripts/setup_arm64.sh first where it is not ready (minutes, once).

    Raises BackendUnavailable with the script's one-line reason where this host cannot build it (the script's
    exit 2: no Linux x86_64, no apt-get, no network), EdgecError where the script failed otherwise.
    """
    home = arm64_home()
    if _native() or _ready(home):
        return home
    if not _SETUP_SCRIPT.is_file():
        raise BackendUnavailable(
            f"{_SETUP_SCRIPT} is missing; reinstall edgec (the script ships with it) to emulate aarch64"
        )
    env = {**os.environ, "EDGEC_ARM64_HOME": str(home), "EDGEC_PYTHON": sys.executable}
    try:
        done = subprocess.run(
            ["bash", str(_SETUP_SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=_SETUP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(
            f"{_SETUP_SCRIPT.name} took over {_SETUP_TIMEOUT_S} s; check the network, then run it again"
        ) from None
    if done.returncode == 0:
        return home
    reason = _last_line(done.stderr) or _last_line(done.stdout) or f"exit {done.returncode}"
    if done.returncode == 2:
        raise BackendUnavailable(reason)
    raise EdgecError(f"{reason} (exit {done.returncode}); run `bash {_SETUP_SCRIPT}` to see every step")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _versions(home: Path) -> dict[str, str]:
    """versions.txt of the runtime: "name version" lines (qemu-aarch64, cpu, python, numpy, onnxruntime)."""
    lines = (home / "versions.txt").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if " " in line)


def _command(home: Path, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """How to start the runner: under qemu with the arm64 root, or with this Python on an aarch64 host."""
    if _native():
        return [sys.executable, *arguments], dict(os.environ)
    cpu = _versions(home)["cpu"]  # the model the root's fake /proc/cpuinfo describes
    root = home / "root"
    qemu = [str(home / "qemu-aarch64-static"), "-cpu", cpu, "-L", str(root)]
    # -L makes qemu look up absolute paths under the root first, then on the host, so the host's temp folder and
    # model stay reachable. -S and a bare environment: no site-packages but the root's wheels, no QEMU_* settings.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "site")}
    return [*qemu, str(root / "usr" / "bin" / "python3.11"), "-S", *arguments], env


def _save_feeds(feeds: list[dict[str, np.ndarray]], path: Path) -> None:
    arrays = {
        f"b{index}/{name}": np.ascontiguousarray(value)
        for index, batch in enumerate(feeds)
        for name, value in batch.items()
    }
    np.savez(path, **arrays)


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """One array of every batch's rows; token-level outputs of batches padded to different lengths are zero-padded
    to the longest, as edgec.running.inference.collect_outputs does."""
    shape = np.max([part.shape for part in parts], axis=0)
    padded = [
        np.pad(part, [(0, 0)] + [(0, int(size) - own) for size, own in zip(shape[1:], part.shape[1:])])
        for part in parts
    ]
    return np.concatenate(padded).astype(np.float32)


def _load_run(path: Path, batches: int) -> tuple[dict[str, np.ndarray], list[float], dict]:
    with np.load(path, allow_pickle=False) as saved:
        meta = json.loads(str(saved["meta"]))
        outputs = {
            name: _concatenate([saved[f"b{index}/{name}"] for index in range(batches)]) for name in meta["outputs"]
        }
        return outputs, [float(ms) for ms in saved["latency_ms"]], meta


def _runtime(home: Path, meta: dict) -> str:
    where = "native"
    if not _native():
        versions = _versions(home)
        where = f"qemu-aarch64 {versions['qemu-aarch64'].split()[0]} -cpu {versions['cpu']}"
    return f"onnxruntime {meta['onnxruntime']} ({meta['machine']}, {where})"


def _run(command: list[str], env: dict[str, str], timeout_s: float, model: Path) -> None:
    try:
        done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EdgecError(
            f"the aarch64 run of {model.name} took over {timeout_s:g} s; pass fewer batches or a larger timeout_s"
        ) from None
    if done.returncode != 0:
        reason = _last_line(done.stderr) or f"exit {done.returncode}"
        raise EdgecError(
            f"aarch64 onnxruntime failed on {model.name}: {reason}; check that it runs on the host's onnxruntime"
        )


def run_emulated(
    model_path: Path, feeds: list[dict[str, np.ndarray]], *, threads: int = 1, timeout_s: float = 3600
) -> EmulatedRun:
    """Run an ONNX model on aarch64 onnxruntime, one session.run per batch of feeds, and return what it gave.

    Builds the runtime first where needed (ensure_arm64_runtime). Raises EdgecError where the run fails, or where
    the runner reports a machine other than aarch64: the result proves the artifact ran on Arm, or nothing.
    """
    model = Path(model_path).resolve()
    if not model.is_file():
        raise InputError(f"{model} is not a file; pass the path of an .onnx model")
    if not feeds:
        raise InputError("run_emulated got no batches; pass at least one dict of input arrays")
    home = ensure_arm64_runtime()
    with tempfile.TemporaryDirectory(prefix="edgec-arm64-") as folder:
        work = Path(folder)
        # A copy in an otherwise empty folder: the script's folder heads sys.path, and edgec's own would put
        # modules there that the emulated Python must not see.
        runner = Path(shutil.copy(_RUNNER, work / _RUNNER.name))
        _save_feeds(feeds, work / "feeds.npz")
        arguments = [str(runner), str(model), str(work / "feeds.npz"), str(work / "out.npz"), str(threads)]
        command, env = _command(home, arguments)
        _run(command, env, timeout_s, model)
        outputs, latencies, meta = _load_run(work / "out.npz", len(feeds))
    if meta["machine"] != "aarch64":
        raise EdgecError(f"the runner reported machine {meta['machine']!r}, not aarch64; delete {home} and run again")
    return EmulatedRun(outputs, latencies, _runtime(home, meta))


def run_script_emulated(script: Path, arguments: list[str], *, stdin: str = "", timeout_s: float = 3600) -> str:
    """Run a standalone Python script (an artifact's predict.py) on the aarch64 Python; returns what it printed.

    The emulated Python has the standard library, numpy, onnxruntime and tokenizers, and nothing else: no torch,
    transformers or edgec. Raises EdgecError with the script's last error line where it fails.
    """
    script = Path(script).resolve()
    if not script.is_file():
        raise InputError(f"{script} is not a file; the artifact has no device runner, rebuild it")
    command, env = _command(ensure_arm64_runtime(), [str(script), *arguments])
    try:
        done = subprocess.run(
            command, check=False, env=env, input=stdin, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise EdgecError(f"the aarch64 run of {script.name} took over {timeout_s:g} s; pass fewer texts") from None
    if done.returncode != 0:
        raise EdgecError(f"{script.name} failed on aarch64: {_last_line(done.stderr) or f'exit {done.returncode}'}")
    return done.stdout
