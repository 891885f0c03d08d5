"""ONNX Runtime profiler traces summed per operator type and per node."""

import numpy as np
import pytest

from edgec.running.profiling import TOP_NODES, Profile, node_times, profile_session, summarize_profile


def _run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(name: str, op: str, ts: int, dur: int) -> dict:
    return {
        "cat": "Node",
        "name": f"{name}_kernel_time",
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op, "input_type_shape": [{"float": [1, 8, 4]}, {"float": [4, 4]}]},
    }


def test_warmup_runs_are_left_out_and_time_is_per_run():
    events = [_run(0, 900), _node("slow_first", "MatMul", 10, 5000)]  # warm-up: ignored
    for start in (1000, 2000):
        events += [
            _run(start, 600),
            _node("mm", "MatMul", start + 1, 300),
            _node("mm2", "MatMul", start + 2, 100),
            _node("sm", "Softmax", start + 3, 100),
            {"cat": "Node", "name": "mm_fence_before", "ts": start, "dur": 7},
        ]
    profile = summarize_profile(events, skip_runs=1)
    assert profile.runs == 2 and profile.kernel_ms == pytest.approx(0.5) and profile.run_ms == pytest.approx(0.6)
    assert [(o.op_type, o.nodes) for o in profile.operators] == [("MatMul", 2), ("Softmax", 1)]
    assert profile.operators[0].ms == pytest.approx(0.4) and profile.operators[0].share == pytest.approx(0.8)
    assert [n.name for n in profile.nodes] == ["mm", "mm2", "sm"] and profile.nodes[0].shapes == "1x8x4, 4x4"
    assert Profile.from_dict(profile.to_dict()) == profile


def test_node_times_keeps_every_node_where_the_summary_keeps_the_slowest():
    events = [_run(0, 100)] + [_node(f"n{i}", "Add", 1 + i, 10 + i) for i in range(TOP_NODES + 2)]
    nodes = node_times(events, skip_runs=0)
    assert [n.name for n in nodes] == [f"n{i}" for i in range(TOP_NODES + 2)]  # in the order they ran
    assert sum(n.share for n in nodes) == pytest.approx(1.0)
    assert summarize_profile(events, skip_runs=0).nodes == tuple(sorted(nodes, key=lambda n: -n.ms)[:TOP_NODES])


def test_a_trace_without_runs_after_the_warmup_is_an_error():
    with pytest.raises(ValueError, match="none after"):
        summarize_profile([_run(0, 10)], skip_runs=1)


def _model(path):
    """x (n, 32) -> MatMul by a constant (4 KB: large enough for ORT to write it in its own file) -> Relu -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((32, 32), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["y"], name="act"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_real_session_is_profiled(tmp_path):
    from edgec.targets import SessionSettings

    profile = profile_session(
        _model(tmp_path / "m.onnx"),
        {"x": np.ones((4, 32), np.float32), "unused": np.ones(1)},
        SessionSettings(graph_optimization_level="disabled"),
        warmup=2,
        runs=3,
    )
    assert profile.runs == 3 and {o.op_type for o in profile.operators} == {"MatMul", "Relu"}
    assert len(profile.nodes) <= TOP_NODES and sum(o.share for o in profile.operators) == pytest.approx(1.0)


def test_a_session_writes_the_graph_it_runs_beside_its_weights(tmp_path):
    import onnx

    from edgec.running.inference import ort_session
    from edgec.targets import SessionSettings

    written = tmp_path / "runtime.onnx"
    ort_session(_model(tmp_path / "m.onnx"), SessionSettings(graph_optimization_level="basic"), optimized_model=written)
    graph = onnx.load(str(written), load_external_data=False).graph
    assert {n.name for n in graph.node} == {"proj", "act"} and (tmp_path / "runtime.onnx.data").exists()
