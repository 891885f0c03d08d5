"""Latency, throughput and peak memory of an artifact (and optionally its PyTorch source), each in a fresh process."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue as queue_module
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgec.running.profiling import Profile
from edgec.targets import SessionSettings


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    batch: int = 1
    seq_len: int = 128
    threads: int | None = 2
    """Intra-op threads (ONNX Runtime and PyTorch); None keeps the session settings' own (PyTorch: its default)."""
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
    other_load: float | None = None
    """Share of the machine's CPU time that other processes (and the hypervisor) took while the runs were timed;
    None where /proc/stat is unreadable. Above a few percent, the figures are not those of a quiet machine."""


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


def summarize(runtime: str, timing: tuple[list[float], float | None], config: BenchConfig) -> BenchResult:
    times_ms, other_load = timing
    times = np.asarray(times_ms)
    p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    mean = float(times.mean())
    return BenchResult(runtime, p50, p90, p99, mean, config.batch * 1000.0 / mean, peak, other_load)


def timed(run, config: BenchConfig) -> tuple[list[float], float | None]:
    """Milliseconds of each of config.runs calls of `run`, after config.warmup untimed ones, and the other load
    while they ran (see BenchResult.other_load)."""
    for _ in range(config.warmup):
        run()
    times = []
    before = cpu_seconds()
    for _ in range(config.runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return times, other_load(before, cpu_seconds())


@dataclass(frozen=True)
class CpuSeconds:
    wall: float
    machine_busy: float
    """CPU seconds every core spent on anything but idling since boot, time stolen by the hypervisor included."""
    own: float
    """CPU seconds of this process and of the children it has waited for."""


def cpu_seconds() -> CpuSeconds | None:
    """Where the machine's CPU time has gone so far; None where /proc/stat is unreadable (not Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu  user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return CpuSeconds(
        time.perf_counter(),
        busy / os.sysconf("SC_CLK_TCK"),
        own.user + own.system + own.children_user + own.children_system,
    )


def other_load(before: CpuSeconds | None, after: CpuSeconds | None) -> float | None:
    """Share of the machine's CPU capacity between two readings that went to anything but this process."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    others = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    capacity = (after.wall - before.wall) * (os.cpu_count() or 1)
    return min(1.0, max(0.0, others / capacity))


def session_for(config: BenchConfig, settings: SessionSettings) -> SessionSettings:
    """The artifact's session settings with the benchmark's thread count, where it sets one."""
    return settings if config.threads is None else dataclasses.replace(settings, intra_op_threads=config.threads)


def _bench_onnx(model_path: str, vocab_size: int, config: BenchConfig, settings: SessionSettings) -> BenchResult:
    from edgec.running.inference import ort_session

    session = ort_session(model_path, session_for(config, settings))
    feeds = synthetic_inputs(vocab_size, config, [i.name for i in session.get_inputs()])
    return summarize("onnxruntime", timed(lambda: session.run(None, feeds), config), config)


def _bench_pte(model_path: str, vocab_size: int, config: BenchConfig) -> BenchResult:
    import json

    from edgec.backends.executorch import IO_FILE, pte_forward, set_threads

    if config.threads is not None:  # None (bench's default): the runtime's own pool, every core
        set_threads(config.threads)  # ExecuTorch's XNNPACK thread pool; by default it takes every core
    io = json.loads(Path(model_path).with_name(IO_FILE).read_text())
    feeds = synthetic_inputs(vocab_size, config, [i["name"] for i in io["inputs"]])
    forward = pte_forward(Path(model_path))
    return summarize("executorch (xnnpack)", timed(lambda: forward(feeds), config), config)


def _profile_onnx(model_path: str, vocab_size: int, config: BenchConfig, settings: SessionSettings) -> Profile:
    from edgec.running.profiling import profile_session

    feeds = synthetic_inputs(vocab_size, config, ["input_ids", "attention_mask", "token_type_ids"])
    return profile_session(model_path, feeds, session_for(config, settings), warmup=config.warmup, runs=config.runs)


def _bench_pytorch(source_path: str, task: str, vocab_size: int, config: BenchConfig) -> BenchResult:
    import torch

    from edgec.source import load_source

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    source = load_source(source_path, task=task)
    module = source.reference_module()
    feeds = {k: torch.from_numpy(v) for k, v in synthetic_inputs(vocab_size, config, list(source.input_names)).items()}

    def run():
        with torch.inference_mode():
            module(**feeds)

    return summarize("pytorch fp32", timed(run, config), config)


def _child(queue, function, args) -> None:
    try:
        result = function(*args)
    except BaseException as exc:  # the parent waits on the queue: it must hear of a failure too
        queue.put({_FAILED: f"{type(exc).__name__}: {exc}"})
        raise
    queue.put(result.to_dict() if isinstance(result, Profile) else asdict(result))


_FAILED = "edgec_benchmark_failed"


def in_fresh_process(function, *args) -> dict:
    """Run a benchmark in a spawned process so peak memory and thread pools are its own; its result as a dict.
    A benchmark that raises, or a process that dies without a result, raises here instead of waiting forever."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, args))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not process.is_alive() and queue.empty():
                raise RuntimeError(f"the benchmark process exited (code {process.exitcode}) without a result") from None
    process.join()
    if _FAILED in result:
        raise RuntimeError(f"the benchmark failed in its process: {result[_FAILED]}")
    return result


def bench_onnx(model_path: str, vocab_size: int, config: BenchConfig, settings: SessionSettings) -> BenchResult:
    return BenchResult(**in_fresh_process(_bench_onnx, model_path, vocab_size, config, settings))


def profile_onnx(model_path: str, vocab_size: int, config: BenchConfig, settings: SessionSettings) -> Profile:
    """ONNX Runtime's profiler over `config.runs` runs after `config.warmup`, in a fresh process."""
    return Profile.from_dict(in_fresh_process(_profile_onnx, model_path, vocab_size, config, settings))


def bench_model(model_path: str, vocab_size: int, config: BenchConfig, settings: SessionSettings) -> BenchResult:
    """An artifact's model file on its own runtime: an ExecuTorch program on ExecuTorch, anything else on ONNX Runtime
    with `settings`."""
    if model_path.endswith(".pte"):
        return BenchResult(**in_fresh_process(_bench_pte, model_path, vocab_size, config))
    return bench_onnx(model_path, vocab_size, config, settings)


def bench_pytorch(source_path: str, task: str, vocab_size: int, config: BenchConfig) -> BenchResult:
    return BenchResult(**in_fresh_process(_bench_pytorch, source_path, task, vocab_size, config))
