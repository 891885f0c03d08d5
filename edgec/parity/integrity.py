"""What is wrong with an artifact's files before anything runs: files changed since the build, NaN constants.

A NaN weight does not always reach the outputs (ONNX Runtime's fused attention drops a NaN query bias without a
trace), so the model file itself is checked too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.artifacts.artifact import Artifact, verify_hashes


def nan_constants(model_path: Path) -> list[str]:
    """Names of the ONNX model's initializers and Constant nodes that hold a NaN (other formats: not inspected)."""
    if model_path.suffix != ".onnx":
        return []
    graph = onnx.load(str(model_path)).graph
    tensors = [
        *graph.initializer,
        *(a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"),
    ]
    floating = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    return sorted(
        t.name
        for t in tensors
        if t.data_type in floating and np.isnan(numpy_helper.to_array(t).astype(np.float32)).any()
    )


def integrity_failures(artifact: Artifact) -> list[str]:
    """One phrase per problem: files whose sha256 changed (or were added or removed), NaN constants in the model."""
    found = []
    changed = verify_hashes(artifact)
    if changed:
        found.append(f"files changed since the build: {', '.join(changed)}")
    if artifact.model_path.is_file() and (nans := nan_constants(artifact.model_path)):
        found.append(f"the model holds NaN constants: {', '.join(nans[:5])}{' ...' if len(nans) > 5 else ''}")
    return found
