"""Where an artifact's time goes: ONNX Runtime's profiler, summed per operator type and per node."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_KERNEL_SUFFIX = "_kernel_time"
TOP_NODES = 10


@dataclass(frozen=True)
class OperatorTime:
    """One operator type's kernels, per inference."""

    op_type: str
    ms: float
    """Kernel time per inference, summed over the nodes of this type."""
    share: float
    """Fraction of all kernel time."""
    nodes: int
    """Nodes of this type that ran (as ONNX Runtime executed the graph, after its own fusions)."""


@dataclass(frozen=True)
class NodeTime:
    name: str
    op_type: str
    ms: float
    share: float
    shapes: str
    """Input shapes the kernel saw, as the profiler recorded them (e.g. `1x128x768, 768x768`)."""


@dataclass(frozen=True)
class Profile:
    runs: int
    """Profiled inferences (after the warm-up runs, which are left out)."""
    run_ms: float
    """Median wall time of one profiled inference (profiling itself adds some overhead)."""
    kernel_ms: float
    """Kernel time per inference, summed over every node."""
    operators: tuple[OperatorTime, ...]
    """By time, largest first."""
    nodes: tuple[NodeTime, ...]
    """The TOP_NODES slowest nodes, slowest first."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "run_ms": self.run_ms,
            "kernel_ms": self.kernel_ms,
            "operators": [vars(o) for o in self.operators],
            "nodes": [vars(n) for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Profile:
        return cls(
            values["runs"],
            values["run_ms"],
            values["kernel_ms"],
            tuple(OperatorTime(**o) for o in values["operators"]),
            tuple(NodeTime(**n) for n in values["nodes"]),
        )


def _kept_runs(events: list[dict[str, Any]], skip_runs: int) -> list[dict[str, Any]]:
    """The trace's model runs after the first `skip_runs`, in order."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    kept = runs[skip_runs:]
    if not kept:
        raise ValueError(f"the trace holds {len(runs)} runs, none after the {skip_runs} skipped")
    return kept


def node_times(events: list[dict[str, Any]], skip_runs: int) -> tuple[NodeTime, ...]:
    """Every node's kernel time per inference from a profiler trace, leaving out the first `skip_runs` runs; in the
    order the nodes first ran."""
    return _node_times(events, _kept_runs(events, skip_runs))


def _node_times(events: list[dict[str, Any]], kept: list[dict[str, Any]]) -> tuple[NodeTime, ...]:
    start = kept[0]["ts"]
    by_node: dict[str, float] = defaultdict(float)
    op_of, shapes_of = {}, {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith(_KERNEL_SUFFIX) or event["ts"] < start:
            continue
        name = event["name"][: -len(_KERNEL_SUFFIX)]
        by_node[name] += event["dur"] / 1000.0
        op_of[name] = event["args"].get("op_name", "?")
        shapes_of[name] = _shapes(event["args"].get("input_type_shape", []))
    count = len(kept)
    total = sum(by_node.values()) / count
    return tuple(
        NodeTime(name, op_of[name], ms / count, ms / count / total if total else 0.0, shapes_of[name])
        for name, ms in by_node.items()
    )


def summarize_profile(events: list[dict[str, Any]], skip_runs: int) -> Profile:
    """Per operator type and per node kernel time from a profiler trace, leaving out the first `skip_runs` runs."""
    kept = _kept_runs(events, skip_runs)
    nodes = _node_times(events, kept)
    total = sum(n.ms for n in nodes)
    by_op: dict[str, float] = defaultdict(float)
    nodes_of_op: dict[str, int] = defaultdict(int)
    for node in nodes:
        by_op[node.op_type] += node.ms
        nodes_of_op[node.op_type] += 1
    share = lambda ms: ms / total if total else 0.0  # noqa: E731
    operators = tuple(
        OperatorTime(op, ms, share(ms), nodes_of_op[op]) for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])
    )
    slowest = tuple(sorted(nodes, key=lambda n: -n.ms)[:TOP_NODES])
    return Profile(len(kept), float(np.median([r["dur"] for r in kept])) / 1000.0, total, operators, slowest)


def _shapes(inputs: list[dict[str, list[int]]]) -> str:
    return ", ".join("x".join(str(d) for d in shape) or "scalar" for item in inputs for shape in item.values())


def profile_trace(
    model_path: str | Path,
    feeds: dict[str, np.ndarray],
    session_settings,
    *,
    warmup: int,
    runs: int,
    optimized_model: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run the model `warmup + runs` times under ONNX Runtime's profiler; the trace's events (all runs).
    `optimized_model` also writes the graph the profiled session runs (`inference.ort_session`)."""
    from edgec.running.inference import ort_session

    with tempfile.TemporaryDirectory(prefix="edgec-profile-") as folder:
        session = ort_session(
            model_path,
            session_settings,
            profile_prefix=str(Path(folder) / "trace"),
            optimized_model=optimized_model,
        )
        inputs = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in feeds.items() if k in inputs}
        for _ in range(warmup + runs):
            session.run(None, feeds)
        trace = Path(session.end_profiling())
        return json.loads(trace.read_text())


def profile_session(
    model_path: str | Path, feeds: dict[str, np.ndarray], session_settings, *, warmup: int, runs: int
) -> Profile:
    """Run the model `warmup + runs` times under ONNX Runtime's profiler and summarize the last `runs`."""
    events = profile_trace(model_path, feeds, session_settings, warmup=warmup, runs=runs)
    return summarize_profile(events, skip_runs=warmup)


def operator_rows(profile: Profile) -> list[list[str]]:
    """The per-operator table as strings: operator, nodes, ms per inference, share."""
    return [[o.op_type, str(o.nodes), f"{o.ms:.3f}", f"{o.share:.1%}"] for o in profile.operators]


def node_rows(profile: Profile) -> list[list[str]]:
    """The slowest nodes as strings: node, operator, ms per inference, share, input shapes."""
    return [[n.name, n.op_type, f"{n.ms:.3f}", f"{n.share:.1%}", n.shapes] for n in profile.nodes]


OPERATOR_HEADER = ["operator", "nodes", "ms / inference", "share"]
NODE_HEADER = ["node", "operator", "ms / inference", "share", "input shapes"]
