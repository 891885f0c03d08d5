"""Run an ONNX model on saved feeds and time each run: the script an emulated (or native) aarch64 Python executes.

Usage: python emulation_runner.py MODEL FEEDS_NPZ OUT_NPZ THREADS

FEEDS_NPZ holds one array per batch and input, keyed "b<batch>/<input>". OUT_NPZ gets one array per batch and
output ("b<batch>/<output>"), "latency_ms" (one per batch) and "meta" (a JSON string: machine, versions), which
the host reads to prove where the run happened. The runner stands alone: the aarch64 root holds only the
standard library, numpy and onnxruntime, never edgec.
"""

from __future__ import annotations

import json
import platform
import sys
import time

import numpy as np
import onnxruntime as ort


def load_batches(path: str) -> list[dict[str, np.ndarray]]:
    """The feeds of each batch, in batch order and, within a batch, in the order they were saved."""
    batches: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as saved:
        for key in saved.files:
            batch, name = key.split("/", 1)
            batches.setdefault(int(batch[1:]), {})[name] = saved[key]
    return [batches[index] for index in sorted(batches)]


def open_session(model: str, threads: int) -> ort.InferenceSession:
    """A CPU session with every graph optimization, as edgec's host-side parity runs use."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main(model: str, feeds_path: str, out_path: str, threads: str) -> None:
    """Run every batch, timing each session.run, and save outputs, latencies and where it ran."""
    session = open_session(model, int(threads))
    names = [output.name for output in session.get_outputs()]
    saved: dict[str, np.ndarray] = {}
    latencies = []
    batches = load_batches(feeds_path)
    # One untimed run first: under qemu the first run also pays for translating ONNX Runtime's code.
    session.run(names, batches[0])
    for index, feeds in enumerate(batches):
        start = time.perf_counter()
        values = session.run(names, feeds)
        latencies.append((time.perf_counter() - start) * 1000.0)
        saved.update({f"b{index}/{name}": value for name, value in zip(names, values)})
    meta = {
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": int(threads),
        "outputs": names,
    }
    np.savez(out_path, latency_ms=np.asarray(latencies, dtype=np.float64), meta=np.asarray(json.dumps(meta)), **saved)


if __name__ == "__main__":
    main(*sys.argv[1:5])
