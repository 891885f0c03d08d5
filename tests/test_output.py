"""Outputs survive interruption and concurrency: nothing partial at --out, a lock beside it, leftovers cleaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from edgec import interrupts
from edgec.artifacts import artifact
from edgec.artifacts.artifact import load_artifact, staged_output
from edgec.errors import InputError, Interrupted


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}") or p.name == out.name)


@pytest.mark.parametrize("interruption", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_block_that_raises_leaves_nothing(tmp_path, interruption):
    out = tmp_path / "m"
    with pytest.raises(type(interruption)), staged_output(out, force=False) as staging:
        (staging / "model.onnx").write_text("half")
        raise interruption
    assert _siblings(out) == []


def test_a_second_writer_of_the_same_output_fails_at_once(tmp_path):
    out = tmp_path / "m"
    with staged_output(out, force=False) as staging:
        (staging / "a").write_text("first")
        with pytest.raises(InputError, match=rf"another edgec run \(pid {os.getpid()}\) is writing {out}"):  # noqa: SIM117
            with staged_output(out, force=True):
                pass
    assert (out / "a").read_text() == "first" and _siblings(out) == ["m"]


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "m.zip"
    (tmp_path / ".m.zip.abc123.partial").mkdir()
    (tmp_path / ".m.zip.abc123.partial" / "model.onnx").write_text("half")
    (tmp_path / ".m.zip.partial").write_text("half a zip")
    (tmp_path / ".other.partial").mkdir()  # another output's: not ours to remove
    with staged_output(out, force=False) as staging:
        (staging / "x").write_text("whole")
    assert _siblings(out) == ["m.zip"] and (tmp_path / ".other.partial").exists()
    assert zipfile.ZipFile(out).read("x") == b"whole"


def test_zip_bombs_and_archives_with_too_many_files_are_refused(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("edgec.json", b"{}")
        archive.writestr("model.onnx", b"\0" * 200_000)  # compresses to a few hundred bytes
    monkeypatch.setattr(artifact, "MAX_BUNDLE_BYTES", 100_000)
    with pytest.raises(InputError, match="would unpack to 2 files and 0.0 GB"):
        load_artifact(bomb)
    monkeypatch.setattr(artifact, "MAX_BUNDLE_BYTES", 10**9)
    monkeypatch.setattr(artifact, "MAX_BUNDLE_FILES", 1)
    with pytest.raises(InputError, match="beyond the 1 files"):
        load_artifact(bomb)


def _build_command(model: Path, data_files: dict, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgec",
        "build",
        str(model),
        "--target",
        "ort-x86",
        "--precision",
        "int8",
        "--calib",
        str(data_files["calib"]),
        "--eval",
        str(data_files["pairs"]),
        "--out",
        str(out),
    ]


def _wait_for(path: Path, content: str = "", timeout: float = 120) -> None:
    """Until `path` exists (and holds `content`)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and content in path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared with {content!r}"
        time.sleep(0.05)


def test_a_signal_whose_raise_was_lost_still_keeps_the_build_from_out(tmp_path):
    out = tmp_path / "m"
    with interrupts.handled(), pytest.raises(Interrupted) as raised, staged_output(out, force=False) as staging:
        (staging / "model.onnx").write_text("half")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except Interrupted:
            pass  # lost, as a raise inside a weakref callback is ("Exception ignored in ...")
    assert raised.value.exit_code == 143 and not out.exists() and _siblings(out) == []
    with staged_output(out, force=False) as staging:  # the next build in this process is not stopped by that signal
        (staging / "model.onnx").write_text("whole")
    assert (out / "model.onnx").read_text() == "whole"


def _stop_mid_build(build: subprocess.Popen, tmp_path: Path) -> None:
    """Freeze the build (SIGSTOP) once its staging folder exists: a tiny model builds in about a second, so a signal
    sent after a fixed sleep could land after the build ended. A signal sent to the frozen process is handled when
    it resumes, before the build can finish."""
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".m.*.partial")):
        assert build.poll() is None, "the build ended before its staging folder was seen"
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.01)
    build.send_signal(signal.SIGSTOP)


def _ctrl_c_enabled() -> None:
    """Run in the child before exec: a shell without job control (CI scripts, `cmd &`) starts background jobs with
    SIGINT ignored, and Python keeps an inherited SIG_IGN, so restore the default a terminal's foreground job has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(build: subprocess.Popen, signum: int) -> None:
    build.send_signal(signum)
    build.send_signal(signal.SIGCONT)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_build_leaves_nothing(tiny_models, data_files, tmp_path, signum, code):
    out = tmp_path / "m"
    build = subprocess.Popen(
        _build_command(tiny_models("bert"), data_files, out),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_enabled,  # noqa: PLW1509
    )
    _stop_mid_build(build, tmp_path)
    _interrupt(build, signum)
    _, stderr = build.communicate(timeout=120)
    assert build.returncode == code, stderr
    assert "interrupted" in stderr and _siblings(out) == []


def test_after_a_killed_build_the_next_one_succeeds_and_two_at_once_do_not_collide(tiny_models, data_files, tmp_path):
    out = tmp_path / "m"
    command = _build_command(tiny_models("bert"), data_files, out)
    killed = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    _stop_mid_build(killed, tmp_path)
    _interrupt(killed, signal.SIGKILL)
    killed.wait()
    assert not out.exists()
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / ".m.lock", f"pid {first.pid}")  # the killed run's lock file stays; this one takes it over
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    _, first_stderr = first.communicate(timeout=300)
    assert first.returncode == 0, first_stderr
    assert (
        second.returncode == 2 and "another edgec run" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    )
    assert load_artifact(out).manifest.parity.passed and _siblings(out) == ["m"]
