"""ONNX Runtime profiler traces summed per operator type and per node."""

import numpy as np
import pytest

from edgec.running.profiling import TOP_NODES, Profile, profile_session, summarize_profile


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


def test_a_trace_without_runs_after_the_warmup_is_an_error():
    with pytest.raises(ValueError, match="none after"):
        summarize_profile([_run(0, 10)], skip_runs=1)


def test_a_real_session_is_profiled(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec.targets import SessionSettings

    weight = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["y"], name="act"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    profile = profile_session(
        tmp_path / "m.onnx",
        {"x": np.ones((4, 8), np.float32), "unused": np.ones(1)},
        SessionSettings(graph_optimization_level="disabled"),
        warmup=2,
        runs=3,
    )
    assert profile.runs == 3 and {o.op_type for o in profile.operators} == {"MatMul", "Relu"}
    assert len(profile.nodes) <= TOP_NODES and sum(o.share for o in profile.operators) == pytest.approx(1.0)
