"""Every example runs (on the default model where installed, on a tiny model otherwise)."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import minilm_path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tiny_models, tmp_path):
    command = [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path / "demo"),
               "--eval-pairs", "60", "--runs", "10", "--summary", str(tmp_path / "summary.json")]
    if minilm_path() is None:
        command += ["--model", str(tiny_models("bert"))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "edgec demo" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and summary["p50_ms"] > 0 and summary["model_mb"] > 0
