"""Progress bars: drawn in a terminal, absent from pipes and captured output; bad input still prints one line."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from rich.console import Console

from edgec import progress

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _run(args, *, terminal: bool) -> tuple[int, str]:
    """`python -m edgec ARGS` with stdout and stderr on a pseudo-terminal (as typed in one), or on a pipe."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    command = [sys.executable, "-m", "edgec", *map(str, args)]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        return done.returncode, done.stdout + done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    child = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return child.wait(timeout=600), _ANSI.sub("", b"".join(chunks).decode(errors="replace"))


@pytest.fixture(scope="module")
def build_args(tiny_models, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("progress")
    return lambda name: [
        "build",
        tiny_models("bert"),
        "--target",
        "ort-x86",
        "--precision",
        "int8",
        "--calib",
        data_files["calib"],
        "--eval",
        data_files["pairs"],
        "--out",
        out / name,
    ]


def test_a_terminal_shows_bars_with_counts_and_time_left(build_args):
    code, text = _run(build_args("tty"), terminal=True)
    assert code == 0, text
    for bar in ("reference pass (PyTorch fp32)", "calibration", "parity: quantize"):
        assert re.search(re.escape(bar) + r".*\d+/\d+.*eta", text), bar
    assert "parity ledger" in text  # the summary is printed after the bars are gone


def test_a_pipe_gets_no_bars(build_args):
    code, text = _run(build_args("pipe"), terminal=False)
    assert code == 0, text
    assert "reference pass" not in text and "eta" not in text and "\x1b[" not in text
    assert "parity ledger" in text


def test_bad_input_in_a_terminal_is_one_line(tmp_path):
    code, text = _run(["build", tmp_path / "no-such-model", "--out", tmp_path / "out"], terminal=True)
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    assert code == 2 and "Traceback" not in text
    assert [line for line in lines if "error" in line] == [lines[-1]] and lines[-1].startswith(
        "edgec: error: model folder"
    )


def test_loops_report_nothing_without_a_display():
    assert list(progress.track(range(3), "nothing drawn")) == [0, 1, 2]
    with progress.bar("nothing drawn", 2) as step:
        step(status="still fine")


def test_no_display_unless_stdout_is_a_terminal(monkeypatch):
    console = Console(force_terminal=True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    with progress.display(console) as shown:
        assert shown is None
