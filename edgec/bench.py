"""Latency, throughput and peak memory of an artifact (and optionally its PyTorch source), each in a fresh process."""

from __future__ import annotations

import multiprocessing
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    batch: int = 1
    seq_len: int = 128
    threads: int = 2
    warmup: int = 20
    runs: int = 200


@dataclass(frozen=True)
class BenchResult:
    runtime: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float
    peak_rss_mb: float


def synthetic_inputs(vocab_size: int, config: BenchConfig, input_names: list[str]) -> dict[str, np.ndarray]:
    """Token ids drawn from the vocabulary (fixed seed), full attention mask, segment 0."""
    rng = np.random.default_rng(0)
    shape = (config.batch, config.seq_len)
    feeds = {
        "input_ids": rng.integers(5, vocab_size, size=shape, dtype=np.int64),
        "attention_mask": np.ones(shape, dtype=np.int64),
        "token_type_ids": np.zeros(shape, dtype=np.int64),
    }
    return {k: v for k, v in feeds.items() if k in input_names}


def summarize(runtime: str, times_ms: list[float], config: BenchConfig) -> BenchResult:
    times = np.asarray(times_ms)
    p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return BenchResult(runtime, p50, p90, p99, float(times.mean()), config.batch * 1000.0 / float(times.mean()), peak)


def timed(run, config: BenchConfig) -> list[float]:
    """Milliseconds of each of config.runs calls of `run`, after config.warmup untimed ones."""
    for _ in range(config.warmup):
        run()
    times = []
    for _ in range(config.runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _bench_onnx(model_path: str, vocab_size: int, config: BenchConfig, graph_level: str) -> BenchResult:
    from edgec.inference import ort_session
    from edgec.targets import SessionSettings

    session = ort_session(model_path, SessionSettings(intra_op_threads=config.threads, inter_op_threads=1, graph_optimization_level=graph_level))
    feeds = synthetic_inputs(vocab_size, config, [i.name for i in session.get_inputs()])
    return summarize("onnxruntime", timed(lambda: session.run(None, feeds), config), config)


def _bench_pte(model_path: str, vocab_size: int, config: BenchConfig) -> BenchResult:
    import json
    from pathlib import Path

    from edgec.backends.executorch import IO_FILE, pte_forward, set_threads

    set_threads(config.threads)  # ExecuTorch's XNNPACK thread pool; by default it takes every core
    io = json.loads(Path(model_path).with_name(IO_FILE).read_text())
    feeds = synthetic_inputs(vocab_size, config, [i["name"] for i in io["inputs"]])
    forward = pte_forward(Path(model_path))
    return summarize("executorch (xnnpack)", timed(lambda: forward(feeds), config), config)


def _bench_pytorch(source_path: str, task: str, vocab_size: int, config: BenchConfig) -> BenchResult:
    import torch

    from edgec.source import load_source

    torch.set_num_threads(config.threads)
    source = load_source(source_path, task=task)
    module = source.reference_module()
    feeds = {k: torch.from_numpy(v) for k, v in synthetic_inputs(vocab_size, config, list(source.input_names)).items()}

    def run():
        with torch.inference_mode():
            module(**feeds)

    return summarize("pytorch fp32", timed(run, config), config)


def _child(queue, function, args) -> None:
    queue.put(asdict(function(*args)))


def in_fresh_process(function, *args) -> BenchResult:
    """Run a benchmark in a spawned process so peak memory and thread pools are its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, args))
    process.start()
    result = queue.get()
    process.join()
    return BenchResult(**result)


def bench_onnx(model_path: str, vocab_size: int, config: BenchConfig, graph_level: str) -> BenchResult:
    return in_fresh_process(_bench_onnx, model_path, vocab_size, config, graph_level)


def bench_model(model_path: str, vocab_size: int, config: BenchConfig, graph_level: str) -> BenchResult:
    """An artifact's model file on its own runtime: an ExecuTorch program on ExecuTorch, anything else on ONNX Runtime."""
    if model_path.endswith(".pte"):
        return in_fresh_process(_bench_pte, model_path, vocab_size, config)
    return bench_onnx(model_path, vocab_size, config, graph_level)


def bench_pytorch(source_path: str, task: str, vocab_size: int, config: BenchConfig) -> BenchResult:
    return in_fresh_process(_bench_pytorch, source_path, task, vocab_size, config)
