"""Which nodes of a graph, as ONNX Runtime runs it, make the attention core, and how much time they take.

The core is what an attention fusion would replace: everything between the Q/K/V projections and the output
projection (head split and merge, rotary or relative-position terms, Q·Kᵀ, scale, masks, Softmax, ·V). It is
found on the graph ORT writes after its own load-time optimizations, whose node names the profiler's are:
  - seeds: the products of two activations (MatMuls whose B operand is no constant weight) and fused attention ops;
  - the core is the seeds, what feeds them (walking up inputs) and what they feed (walking down outputs), without
    passing a weight projection, a normalization, a residual sum or a quantization step (SmoothQuant's input
    scaling included): those belong to the layer around the attention, and a walk through them would reach every
    layer. A Shape node is taken but not walked past (it reads only its input's shape). Walking up only from what
    feeds a seed, and down only from what a seed feeds, keeps out what merely shares an input with the core (mean
    pooling reads the attention mask too). Left out: the few int64 ops that compute the head-merging Reshape's
    shape (microseconds).
Used by benchmarks/new_architectures.py.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgec.running.bench import BenchConfig, in_fresh_process, session_for, synthetic_inputs
from edgec.running.profiling import node_times, profile_trace, summarize_profile
from edgec.targets import SessionSettings

MATMULS = frozenset(
    {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
    | {"QLinearMatMul", "QGemm", "MatMulNBits"}
)
FUSED_ATTENTION = frozenset({"Attention", "MultiHeadAttention", "QAttention", "GroupQueryAttention"})
_LAYER = frozenset({"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "Sum"})
_QUANTIZATION = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_SHAPE = frozenset({"Shape", "Size"})
_B_OPERAND = {"QLinearMatMul": 3, "QGemm": 3}  # inputs (a, a_scale, a_zero_point, b, ...); the others' B is input 1
# ONNX-domain ops that are themselves a fusion of several (ORT runs each as one kernel).
_ONNX_FUSED = frozenset({"LayerNormalization", "Gelu", "Attention", "RMSNormalization"})


def _constant(name: str, made: dict[str, onnx.NodeProto], initializers: set[str]) -> bool:
    """An initializer, or one reached through a DequantizeLinear/Transpose/Cast of one (an unfused int8 weight)."""
    if name in initializers:
        return True
    node = made.get(name)
    relays = {"DequantizeLinear", "Transpose", "Cast"}
    return node is not None and node.op_type in relays and _constant(node.input[0], made, initializers)


def attention_core(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that make the attention core (see the module docstring)."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    made = {out: node for node in graph.node for out in node.output}
    used = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            used[name].append(node)

    def weight(node: onnx.NodeProto) -> bool:
        if node.op_type not in MATMULS:
            return False
        return _constant(node.input[_B_OPERAND.get(node.op_type, 1)], made, initializers)  # the W of x·W

    def input_scaling(node: onnx.NodeProto) -> bool:
        """SmoothQuant's constant Mul before a projection's int8 input (ops.graph.scale_matmul_inputs): the
        projection's, not the attention's."""
        readers = [r for out in node.output for r in used[out]]
        return (
            node.op_type == "Mul"
            and any(i in initializers for i in node.input)
            and bool(readers)
            and all(r.op_type in _QUANTIZATION or weight(r) for r in readers)
        )

    def outside(node: onnx.NodeProto) -> bool:
        return weight(node) or input_scaling(node) or node.op_type in _LAYER | _QUANTIZATION

    def walk(seeds: list[onnx.NodeProto], up: bool) -> set[str]:
        reached, pending = set(), list(seeds)
        while pending:
            node = pending.pop()
            if up and node.op_type in _SHAPE:
                continue
            nexts = [made[i] for i in node.input if i in made] if up else [r for o in node.output for r in used[o]]
            for other in nexts:
                if other.name not in reached and not outside(other):
                    reached.add(other.name)
                    pending.append(other)
        return reached

    seeds = [n for n in graph.node if n.op_type in FUSED_ATTENTION or (n.op_type in MATMULS and not weight(n))]
    return {n.name for n in seeds} | walk(seeds, up=True) | walk(seeds, up=False)


def constant_work(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that compute from constants only: work ORT did not fold, so every inference repeats it
    (static int8 leaves such a chain where a quantized constant feeds a MatMul: DequantizeLinear does not fold)."""
    known = {i.name for i in model.graph.initializer}
    found = set()
    for node in model.graph.node:  # in topological order, as ORT writes them
        if all(i in known for i in node.input if i):
            found.add(node.name)
            known.update(node.output)
    return found


def fused_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes per op type that stands for several ONNX ops: ORT's contrib ops and ONNX's own fused ones."""
    counts = Counter(
        n.op_type for n in model.graph.node if n.domain.startswith("com.microsoft") or n.op_type in _ONNX_FUSED
    )
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class CoreProfile:
    """One model's profile at one length, split into the attention core and the rest."""

    seq_len: int
    run_ms: float
    """Median wall time of a profiled inference."""
    kernel_ms: float
    """Kernel time per inference, every node."""
    core_ms: float
    """Kernel time per inference of the attention core's nodes."""
    core_ops: dict[str, tuple[int, float]]
    """Per op type in the core: (nodes, ms per inference), largest first."""
    runtime_fused: dict[str, int]
    """Fused op types in the graph ORT runs (after its load-time optimizations), with their node counts."""
    constant_ms: float
    """Kernel time per inference of the nodes that compute from constants only (`constant_work`)."""
    unmatched_ms: float
    """Kernel time of profiled nodes not found in the written graph (an If's branches, nodes ORT left unnamed)."""


def _profile_core(model_path: str, vocab: int, config: BenchConfig, settings: SessionSettings) -> CoreProfile:
    feeds = synthetic_inputs(vocab, config, ["input_ids", "attention_mask", "token_type_ids"])
    with tempfile.TemporaryDirectory(prefix="edgec-core-") as folder:
        written = Path(folder) / "runtime.onnx"  # the graph the profiled session runs, whose names the trace uses
        events = profile_trace(
            model_path,
            feeds,
            session_for(config, settings),
            warmup=config.warmup,
            runs=config.runs,
            optimized_model=written,
        )
        runtime = onnx.load(str(written), load_external_data=False)
    summary, nodes = summarize_profile(events, config.warmup), node_times(events, config.warmup)
    core, constant = attention_core(runtime), constant_work(runtime)
    known = {n.name for n in runtime.graph.node}
    by_op: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for node in nodes:
        if node.name in core:
            by_op[node.op_type][0] += 1
            by_op[node.op_type][1] += node.ms
    return CoreProfile(
        seq_len=config.seq_len,
        run_ms=summary.run_ms,
        kernel_ms=summary.kernel_ms,
        core_ms=sum(ms for _, ms in by_op.values()),
        core_ops={op: (n, ms) for op, (n, ms) in sorted(by_op.items(), key=lambda kv: -kv[1][1])},
        runtime_fused=fused_op_counts(runtime),
        constant_ms=sum(n.ms for n in nodes if n.name in constant),
        unmatched_ms=sum(n.ms for n in nodes if n.name not in known),
    )


def profile_core(model_path: str, vocab: int, config: BenchConfig, settings: SessionSettings) -> dict:
    """`_profile_core` in a fresh process (its own thread pools and memory), as a dict."""
    return in_fresh_process(_profile_core, model_path, vocab, config, settings)
