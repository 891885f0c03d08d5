"""Property-based tests (Hypothesis): the data readers, the parity metrics, calibration ranges and the graph rewrites.

`make test` runs 200 examples per property for the readers and metrics, 25 for the ONNX graphs (each builds and
runs sessions); `make test-deep` (EDGEC_DEEP=1) runs ten times as many.
"""

from __future__ import annotations

import json
import os
import string

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from edgec.data import Columns, read_dataset
from edgec.errors import InputError
from edgec.ops import calibration
from edgec.ops.graph import residual_adds_to_sum, scale_matmul_inputs
from edgec.ops.pooling import append_pooling
from edgec.parity import metrics

DEPTH = 10 if os.environ.get("EDGEC_DEEP") else 1  # `make test-deep` sets EDGEC_DEEP=1
READERS = settings(max_examples=200 * DEPTH, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MATH = settings(max_examples=200 * DEPTH, deadline=None)
GRAPHS = settings(max_examples=25 * DEPTH, deadline=None)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _read_or_input_error(path, columns=Columns()):
    try:
        data = read_dataset(path, columns)
    except InputError as exc:
        assert "\n" not in str(exc)  # one line, as the CLI prints it
        return None
    assert len(data) >= 1 and all(isinstance(t, str) and t.strip() for t in data.texts)
    return data


@READERS
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".tsv"]))
def test_arbitrary_bytes_give_rows_or_one_input_error(tmp_path, content, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    _read_or_input_error(path)


@READERS
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["text", "text_pair", "label", "score", "other"]), JSON_VALUES, max_size=5),
        min_size=1,
        max_size=6,
    )
)
def test_arbitrary_jsonl_values_give_rows_or_one_input_error(tmp_path, rows):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = _read_or_input_error(path)
    if data is not None:
        for example in data.examples:
            assert (
                example.label is None or isinstance(example.label, (int, str)) and not isinstance(example.label, bool)
            )
            assert example.score is None or np.isfinite(example.score)


CELLS = st.text(alphabet=string.ascii_letters + string.digits + ' ,."-\t', max_size=6)


@READERS
@given(
    header=st.lists(st.sampled_from(["text", "label", "score", "pair", "x"]), min_size=1, max_size=4, unique=True),
    body=st.lists(st.lists(CELLS, max_size=5), max_size=5),
)
def test_arbitrary_csv_values_give_rows_or_one_input_error(tmp_path, header, body):
    path = tmp_path / "data.csv"
    path.write_text("\n".join([",".join(header), *(",".join(row) for row in body)]) + "\n")
    _read_or_input_error(
        path, Columns(label="label" if "label" in header else None, score="score" if "score" in header else None)
    )


FINITE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@MATH
@given(a=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 8)), elements=FINITE), data=st.data())
def test_cosine_is_symmetric_bounded_and_one_on_itself(a, data):
    b = data.draw(hnp.arrays(np.float32, a.shape, elements=FINITE))
    cosine = metrics.cosine_rows(a, b)
    assert np.all(np.abs(cosine) <= 1 + 1e-9) and np.allclose(cosine, metrics.cosine_rows(b, a))
    nonzero = np.linalg.norm(a.astype(np.float64), axis=1) > 1e-3
    assert np.allclose(metrics.cosine_rows(a, a)[nonzero], 1.0)


@MATH
@given(logits=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 5)), elements=FINITE), data=st.data())
def test_agreement_kl_and_accuracy_invariants(logits, data):
    other = data.draw(hnp.arrays(np.float32, logits.shape, elements=FINITE))
    assert metrics.top1_agreement(logits, logits) == 1.0 and 0.0 <= metrics.top1_agreement(logits, other) <= 1.0
    assert abs(metrics.mean_kl(logits, logits)) < 1e-9 and metrics.mean_kl(logits, other) >= -1e-9
    labels = data.draw(hnp.arrays(np.int64, (len(logits),), elements=st.integers(0, logits.shape[1] - 1)))
    assert 0.0 <= metrics.accuracy(logits, labels) <= 100.0


@MATH
@given(reference=hnp.arrays(np.float32, st.integers(1, 30), elements=FINITE), data=st.data())
def test_error_statistics_are_ordered_and_zero_on_equal_outputs(reference, data):
    candidate = data.draw(hnp.arrays(np.float32, reference.shape, elements=FINITE))
    stats = metrics.error_statistics(reference, candidate)
    assert stats["max_abs"] >= stats["q_abs"] >= 0 and stats["max_abs"] >= stats["mean_abs"] >= 0
    assert stats["max_abs"] >= stats["median_abs"] and stats["max_rel"] >= stats["median_rel"] >= 0
    assert all(v == 0 for v in metrics.error_statistics(reference, reference).values())


@MATH
@given(values=hnp.arrays(np.float32, st.integers(2, 40), elements=FINITE), scores=st.data())
def test_spearman_is_within_bounds_or_nan(values, scores):
    embeddings = np.stack([values, values[::-1]], axis=1).repeat(2, axis=0)  # pairs of rows
    gold = scores.draw(hnp.arrays(np.float64, (len(values),), elements=st.floats(0, 5)))
    rho = metrics.pair_spearman(embeddings, gold)
    assert np.isnan(rho) or -100 - 1e-6 <= rho <= 100 + 1e-6


@MATH
@given(
    values=hnp.arrays(np.float32, st.integers(1, 400), elements=FINITE),
    method=st.sampled_from(["minmax", "percentile", "entropy"]),
)
def test_calibration_ranges_contain_zero_and_stay_within_the_data(values, method):
    low, high = calibration.activation_range(values, method, 99.9)
    assert low <= 0.0 <= high
    assert low >= min(float(values.min()), 0.0) - 1e-6 and high <= max(float(values.max()), 0.0) + 1e-6
    if method == "minmax":
        assert (low, high) == (min(float(values.min()), 0.0), max(float(values.max()), 0.0))


@MATH
@given(x=hnp.arrays(np.float32, st.integers(1, 50), elements=FINITE), signed=st.booleans())
def test_fake_quantization_error_is_at_most_half_a_step_inside_the_range(x, signed):
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assume(high - low > 1e-3)
    step = (high - low) / 255
    assert np.all(np.abs(calibration.fake_quantize(x, low, high, signed) - x) <= step * 0.5 + 1e-4 + step * 1e-3)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compare the graphs as written
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _layer(hidden: int, layers: int, rng: np.random.Generator) -> onnx.ModelProto:
    """`layers` post-LN blocks: x -> LayerNorm(x + (x W + b)), the residual join edgec rewrites, then a weight MatMul."""
    nodes, initializers, current = [], [], "x"
    for i in range(layers):
        w, b, gamma, beta = (f"w{i}", f"b{i}", f"g{i}", f"beta{i}")
        initializers += [
            numpy_helper.from_array(rng.normal(size=(hidden, hidden)).astype(np.float32), w),
            numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), b),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, hidden).astype(np.float32), gamma),
            numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), beta),
        ]
        nodes += [
            helper.make_node("MatMul", [current, w], [f"mm{i}"], name=f"mm{i}"),
            helper.make_node("Add", [b, f"mm{i}"], [f"biased{i}"], name=f"bias{i}"),
            helper.make_node("Add", [f"biased{i}", current], [f"joined{i}"], name=f"join{i}"),
            helper.make_node("LayerNormalization", [f"joined{i}", gamma, beta], [f"ln{i}"], name=f"ln{i}", axis=-1),
        ]
        current = f"ln{i}"
    graph = helper.make_graph(
        nodes,
        "blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SHAPES = st.tuples(
    st.integers(1, 3), st.integers(1, 6), st.sampled_from([4, 8, 12]), st.integers(1, 3), st.integers(0, 2**31 - 1)
)


@GRAPHS
@given(shape=SHAPES)
def test_residual_sums_preserve_the_outputs(shape):
    batch, seq, hidden, layers, seed = shape
    rng = np.random.default_rng(seed)
    model = _layer(hidden, layers, rng)
    x = rng.normal(size=(batch, seq, hidden)).astype(np.float32)
    before = _session(model).run(None, {"x": x})[0]
    assert residual_adds_to_sum(model) == layers
    assert not [n for n in model.graph.node if n.op_type == "Add"]
    np.testing.assert_allclose(_session(model).run(None, {"x": x})[0], before, rtol=1e-4, atol=1e-4)


@GRAPHS
@given(shape=SHAPES)
def test_smoothing_scales_preserve_the_outputs(shape):
    batch, seq, hidden, layers, seed = shape
    rng = np.random.default_rng(seed)
    model = _layer(hidden, layers, rng)
    x = rng.normal(size=(batch, seq, hidden)).astype(np.float32)
    before = _session(model).run(None, {"x": x})[0]
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    groups = {n.input[0]: [n] for n in matmuls}
    scale_matmul_inputs(model, groups, {name: rng.uniform(0.1, 10, hidden) for name in groups})
    np.testing.assert_allclose(_session(model).run(None, {"x": x})[0], before, rtol=1e-3, atol=1e-3)


@GRAPHS
@given(
    batch=st.integers(1, 3),
    seq=st.integers(1, 6),
    hidden=st.integers(2, 8),
    mode=st.sampled_from(["mean", "cls", "max"]),
    normalize=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_pooling_nodes_match_numpy_over_any_padding(batch, seq, hidden, mode, normalize, seed):
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["last_hidden_state"])],
        "enc",
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", "s", hidden]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", hidden])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    append_pooling(
        model, hidden="last_hidden_state", mask="attention_mask", mode=mode, normalize=normalize, output="pooled"
    )
    h = rng.normal(size=(batch, seq, hidden)).astype(np.float32)
    lengths = rng.integers(1, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    got = dict(zip([o.name for o in model.graph.output], _session(model).run(None, {"h": h, "attention_mask": mask})))[
        "pooled"
    ]
    real = mask[..., None].astype(bool)
    expected = {"mean": (h * real).sum(1) / real.sum(1), "cls": h[:, 0], "max": np.where(real, h, -np.inf).max(1)}[mode]
    if normalize:
        expected = expected / np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
