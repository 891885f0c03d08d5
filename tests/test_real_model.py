"""all-MiniLM-L6-v2 on STS-B: the default model on real data (skipped where either is absent)."""

import json

import onnx
import pytest
from typer.testing import CliRunner

from edgec.artifacts.manifest import Manifest
from edgec.cli.main import app

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def sts_sample(sts_test, tmp_path_factory):
    """300 STS-B test pairs, a deterministic sample (every 4th line and some)."""
    lines = sts_test.read_text().splitlines()
    path = tmp_path_factory.mktemp("sts") / "sample.jsonl"
    path.write_text("\n".join(lines[::4][:300]) + "\n")
    return path


@pytest.fixture(scope="module")
def minilm_int8(minilm, sts_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm") / "minilm-int8"
    result = CliRunner().invoke(
        app,
        ["build", str(minilm), "--target", "ort", "--precision", "int8", "--eval", str(sts_sample), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    return out


def test_minilm_static_int8_keeps_sts_parity(minilm_int8, sts_sample, tmp_path):
    out = minilm_int8
    manifest = Manifest.read(out)
    final = manifest.parity.ledger[-1].metrics
    reference = manifest.parity.reference_metric["spearman"]
    assert final["cosine_mean"] > 0.99
    assert reference - final["spearman"] <= 1.0
    assert manifest.stages.optimize.fused_ops["MultiHeadAttention"] == 6
    assert manifest.stages.optimize.residual_sums >= 12
    assert manifest.sizes.model_bytes <= 0.27 * manifest.sizes.source_weights_bytes
    # Activations are really quantized (4 per layer: QKV, attention output, FFN in, FFN out), not just weights.
    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) == 24
    recheck = CliRunner().invoke(app, ["parity", str(out), "--data", str(sts_sample), "--json"])
    assert recheck.exit_code == 0 and json.loads(recheck.stdout)["passed"]
    check_alone_without_the_source_model(out, sts_sample, tmp_path)


def check_alone_without_the_source_model(out, data, tmp_path):
    """A user's CI: the artifact and nothing else (the source model's path leads nowhere, no network)."""
    import shutil

    import numpy as np
    from onnx import numpy_helper

    alone = shutil.copytree(out, tmp_path / "alone")
    manifest = json.loads((alone / "edgec.json").read_text())
    manifest["source"]["path"] = str(tmp_path / "no-such-model")
    (alone / "edgec.json").write_text(json.dumps(manifest))
    intact = CliRunner().invoke(app, ["parity", str(alone), "--json"])
    assert intact.exit_code == 0, intact.output
    against_source = CliRunner().invoke(app, ["parity", str(alone), "--data", str(data)])
    assert (
        against_source.exit_code == 2 and "is not on this machine" in against_source.output
    )  # --data needs the source
    model = onnx.load(str(alone / "model.onnx"))
    weight = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2)
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(values[np.random.default_rng(0).permutation(len(values))], weight.name))
    onnx.save(model, str(alone / "model.onnx"))
    damaged = CliRunner().invoke(app, ["parity", str(alone), "--json"])
    assert damaged.exit_code == 1 and not json.loads(damaged.stdout)["passed"]


def test_minilm_artifact_in_sentence_transformers_equals_edgec_run(minilm_int8, sts_sample):
    """SentenceTransformer(ARTIFACT, backend="onnx") runs the artifact's own model.onnx and gives the vectors
    edgec run prints."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    texts = [json.loads(line)["text"] for line in sts_sample.read_text().splitlines()[:64]]
    model = SentenceTransformer(str(minilm_int8), backend="onnx", device="cpu")
    assert model[0].auto_model.path.resolve() == (minilm_int8 / "model.onnx").resolve()
    assert not list(minilm_int8.glob("*.safetensors"))
    result = CliRunner().invoke(app, ["run", str(minilm_int8), *texts, "--json"])
    assert result.exit_code == 0, result.output
    mine = np.asarray(json.loads(result.stdout)["outputs"]["sentence_embedding"])
    theirs = model.encode(texts, batch_size=16)
    cosine = (mine * theirs).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), np.linalg.norm(mine, axis=1), rtol=1e-4)


# A second full MiniLM build (~30 s): `make test-deep`. `make test` keeps the ORT int8 build's STS-B parity above and
# the Q/DQ graph's structure on tiny models (tests/backends/test_tensorrt_backend.py).
@pytest.mark.deep
def test_minilm_tensorrt_int8_simulated_parity(minilm, sts_sample, tmp_path):
    """The Q/DQ ONNX TensorRT would build from keeps STS-B within the trt-int8 target (drop <= 0.5) on ORT CPU."""
    out = tmp_path / "minilm-trt"
    result = CliRunner().invoke(
        app,
        [
            "build",
            str(minilm),
            "--target",
            "trt",
            "--calib",
            str(sts_sample),
            "--eval",
            str(sts_sample),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out)
    final = manifest.parity.ledger[-1]
    assert manifest.target.name == "trt-int8" and final.simulated
    assert manifest.parity.reference_metric["spearman"] - final.metrics["spearman"] <= 0.5
    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) == 24
    assert not any(n.domain not in ("", "ai.onnx") for n in graph.node)
