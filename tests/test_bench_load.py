"""Benchmarks say when other processes shared the CPU while they timed (BenchResult.other_load)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edgec.running import bench
from edgec.running.bench import BenchConfig, CpuSeconds, other_load, timed


def test_other_load_is_the_busy_time_this_process_did_not_spend(monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    before = CpuSeconds(wall=100.0, machine_busy=50.0, own=10.0)
    after = CpuSeconds(wall=101.0, machine_busy=51.5, own=10.5)
    assert other_load(before, after) == pytest.approx(0.5)  # 1.0 s of others' CPU over 2 core-seconds
    assert other_load(before, CpuSeconds(101.0, 50.5, 10.5)) == 0.0  # all the busy time was ours
    assert other_load(None, after) is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="other_load reads /proc/stat (Linux)")
def test_timing_next_to_busy_processes_reports_their_load():
    cores = os.cpu_count() or 1
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(min(cores, 4))]
    try:
        time.sleep(0.3)  # the hogs are running before the timed window opens
        times, load = timed(lambda: time.sleep(0.005), BenchConfig(warmup=0, runs=100))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert len(times) == 100
    assert load is not None and load >= 0.5 * len(hogs) / cores
