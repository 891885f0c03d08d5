"""Sweeps and budgeted searches on Ray: every candidate build is a Ray task, on this machine or a cluster.

The only module of edgec that imports ray, and only inside functions (`pip install 'edgec[ray]'`).

- Builds run in parallel, one CPU each (Ray sets a task's OMP_NUM_THREADS to the CPUs it holds: 1).
- A build task returns its artifact folder as bytes, so a cluster needs no shared filesystem; the driver writes it.
- Timing happens only when nothing else runs on the node: the timing task asks for every CPU of one node (the
  driver's, so all latencies come from one node type and the table names it), and sets the threads the benchmark
  asks for (BenchConfig.threads) instead of Ray's one.
- A failed task is retried once; a cell whose task fails again is reported with its error and the rest go on.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import BackendUnavailable, ConfigError
from edgec.running.bench import BenchConfig
from edgec.sweep import CellJob, build_cell, host_description, time_cell

INSTALL_HINT = "pip install 'edgec[ray]'"
Build = Callable[[CellJob, Path], dict]


@dataclass(frozen=True, kw_only=True)
class RayCluster:
    """Where the tasks run."""

    address: str | None = None
    """A running cluster (`ray://HEAD:10001`, or `auto` for the one this machine belongs to); None starts a local
    instance with this machine's cores, shut down at the end."""
    retries: int = 1
    """Times a failed task is run again before its cell is reported as failed."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ConfigError(f"Ray retries must be >= 0, got {self.retries}")


@contextlib.contextmanager
def connected(cluster: RayCluster) -> Iterator:
    """ray, initialised for `cluster` (a local instance when it has no address) and shut down afterwards."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(f"--ray needs the ray package; {INSTALL_HINT}") from None
    # Tasks must see the same offline model cache and quiet tokenizers as the driver.
    env = {k: v for k, v in os.environ.items() if k in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME")}
    options = dict(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        if cluster.address:
            ray.init(address=cluster.address, **options)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=1 << 30, **options)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {cluster.address} ({exc}); check --ray-address") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


def _unpack(data: bytes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(folder)


def _build_task(build: Build, job: CellJob) -> tuple[dict, bytes]:
    """On a worker: build the cell in a scratch folder; return its measurements and the artifact as bytes."""
    with tempfile.TemporaryDirectory(prefix="edgec-ray-") as scratch:
        out = Path(scratch) / "artifact"
        measured = build(job, out)
        return measured, _pack(out)


def _time_task(packed: bytes, bench: BenchConfig) -> tuple[float, str]:
    """On the timing node, holding all of its CPUs: the artifact's latency p50 and the node it ran on."""
    import ray
    import torch

    os.environ["OMP_NUM_THREADS"] = str(bench.threads)  # Ray set it to this task's CPUs; the benchmark says how many
    torch.set_num_threads(bench.threads)
    with tempfile.TemporaryDirectory(prefix="edgec-ray-") as scratch:
        _unpack(packed, Path(scratch))
        latency = time_cell(Path(scratch), bench)
    return latency, f"Ray node {ray.util.get_node_ip_address()} ({host_description()})"


def _failure(exc: Exception) -> dict:
    cause = getattr(exc, "cause", None) or exc
    message = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
    return {
        "metric": None,
        "value": None,
        "drop": None,
        "cosine_mean": None,
        "latency_ms": None,
        "size_mb": None,
        "error": f"{type(cause).__name__}: {message}"[:300],
    }


def run_on_ray(
    jobs: list[CellJob],
    outs: list[Path],
    bench: BenchConfig,
    cluster: RayCluster,
    on_stage: Callable[[str], None] = lambda name: None,
    build: Build = build_cell,
) -> tuple[list[dict], str]:
    """Build every job as a Ray task, write each artifact to its `outs` folder and time it on one node.

    Returns one measurement per job, in order (failed ones carry "error"), and where latency was measured.
    """
    with connected(cluster) as ray:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        cpus = next(n["Resources"]["CPU"] for n in ray.nodes() if n["NodeID"] == node and n["Alive"])
        retry = dict(max_retries=cluster.retries, retry_exceptions=True)
        build_remote = ray.remote(num_cpus=1, **retry)(_build_task)
        time_remote = ray.remote(
            num_cpus=cpus, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False), **retry
        )(_time_task)
        builds = {build_remote.remote(build, job): index for index, job in enumerate(jobs)}
        timings: dict = {}
        results: list[dict] = [{} for _ in jobs]
        timed_on = "no cell was timed"
        while builds or timings:
            (ref,), _ = ray.wait([*builds, *timings], num_returns=1)
            index = builds.pop(ref, None)
            try:
                if index is not None:
                    measured, packed = ray.get(ref)
                    _unpack(packed, outs[index])
                    results[index] = measured
                    timings[time_remote.remote(packed, bench)] = index
                    on_stage(f"built {outs[index].name}")
                else:
                    index = timings.pop(ref)
                    results[index]["latency_ms"], timed_on = ray.get(ref)
            except ray.exceptions.RayError as exc:
                results[index] = _failure(exc)
                on_stage(f"failed {outs[index].name}")
        return results, timed_on
