"""A static int8 build whose profile splits outlier channels off: those MatMuls run in float on the float input."""

import dataclasses

import numpy as np
import onnx

import edgec
from edgec.ops import outliers
from edgec.stages import quantize
from edgec.targets import load_target


def test_a_build_splits_the_outlier_channels_off_in_float(tiny_models, data_files, tmp_path, monkeypatch):
    # Tiny random models have no outlier channels: say channels 0 and 3 of every MatMul input are.
    monkeypatch.setattr(quantize.outliers, "outlier_channels", lambda peak, rows: np.array([0, 3], dtype=np.int64))
    base = load_target("ort-x86")
    profile = dataclasses.replace(base, quantization=dataclasses.replace(base.quantization, split_outliers=True))
    artifact = edgec.build(
        tiny_models("bert"),
        profile,
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="int8")),
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "a",
    )
    note = artifact.manifest.stages.quantize
    assert note.inputs_with_outliers > 0 and note.outlier_channels_in_float == 2 * note.inputs_with_outliers
    model = onnx.load(str(artifact.model_path))
    made = {o: n for n in model.graph.node for o in n.output}
    float_parts = [n for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith(outliers.SUFFIX)]
    assert len(float_parts) >= note.inputs_with_outliers, "one float part per MatMul reading a split input"
    for matmul in float_parts:
        gather = made[matmul.input[0]]
        assert gather.op_type == "Gather" and made.get(gather.input[0], gather).op_type != "DequantizeLinear", (
            "the outlier channels are gathered from the float activation, not its int8 rounding"
        )
    assert artifact.manifest.parity.passed
