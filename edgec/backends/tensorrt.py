"""TensorRT back end: the ONNX TensorRT parses, its build spec, the trtexec script, and the engine where one can be built.

On a machine without tensorrt or a CUDA device the artifact is complete except for the engine, which
`edgec engine ARTIFACT` (or ./build_engine.sh) builds later on the device; the manifest says so.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx

from edgec.artifact import Artifact, file_table, package_versions, sha256_file, write_manifest
from edgec.backends.onnxruntime import copy_model_and_tokenizer
from edgec.backends.registry import register_backend
from edgec.backends.tensorrt_engine import INSTALL_HINT, build_engine, engine_unavailable_reason
from edgec.errors import BackendUnavailable, InputError
from edgec.ops.calibration import tensorrt_calibration_cache
from edgec.ops.trt_preflight import Hazard, preflight
from edgec.ops.trt_shapes import length_histogram, optimization_profile, trtexec_shapes
from edgec.pipeline import Context
from edgec.parity.evalset import eval_texts
from edgec.targets import TargetProfile

SPEC_FILE = "trt_build.json"
SCRIPT_FILE = "build_engine.sh"
ENGINE_FILE = "model.engine"
TIMING_CACHE_FILE = "timing.cache"
IMPLICIT_ONNX_FILE = "model_fp32.onnx"
CALIBRATION_CACHE_FILE = "calibration.cache"
# BuilderFlag names per precision. int8 also sets FP16 so the layers left in float (softmax, LayerNorm,
# the residual stream) run in fp16 rather than fp32: the usual explicit-quantization build.
_FLAGS = {"int8": ["INT8", "FP16"], "fp16": ["FP16"], "fp32": []}


def check_engine_requirement(profile: TargetProfile) -> None:
    """With tensorrt.require_engine, fail before any work when this machine cannot build the engine."""
    if profile.tensorrt is not None and profile.tensorrt.require_engine and (reason := engine_unavailable_reason()):
        raise BackendUnavailable(f"--require-engine: cannot build a TensorRT engine here ({reason}); {INSTALL_HINT}, or drop --require-engine")


@register_backend("tensorrt")
def emit(ctx: Context, staging: Path) -> Context:
    """Write the ONNX, trt_build.json and build_engine.sh (and, for int8, the implicit-mode pair); no engine yet."""
    model, files = copy_model_and_tokenizer(ctx, staging)
    graph = onnx.load(str(model), load_external_data=False)
    hazards = preflight(graph, {i.name: (0, 1) for i in graph.graph.input})
    errors = [h for h in hazards if h.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more in the preflight)" if len(errors) > 1 else ""
        raise InputError(f"TensorRT preflight: {errors[0].what}; {errors[0].fix}{more}")
    implicit = _write_implicit_pair(ctx, staging) if ctx.precision == "int8" and ctx.target.tensorrt.implicit_int8 else None
    spec = build_spec(ctx, graph, model, hazards, implicit)
    (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    script = staging / SCRIPT_FILE
    script.write_text(trtexec_script(spec))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    note = {
        "backend": "tensorrt", "model": model.name, "spec": SPEC_FILE, "script": SCRIPT_FILE, "flags": spec["flags"],
        "profile": spec["profiles"][0], "preflight_warnings": [h.what for h in hazards],
    }
    return ctx.with_note("emit", note, onnx_path=model, files=files, parity_model=simulation_model(model, ctx.precision, ctx.target, ctx.workdir))


def engine_stage(ctx: Context, staging: Path) -> Context:
    """Build the engine where tensorrt and a CUDA device exist; elsewhere record that it is deferred."""
    reason = engine_unavailable_reason()
    if reason is not None:
        return ctx.with_note("engine", deferred_engine(reason))
    spec = json.loads((staging / SPEC_FILE).read_text())
    built = build_engine(staging, spec)
    return ctx.with_note("engine", {"status": "built", "file": spec["engine"], **built}, parity_model=staging / spec["engine"])


def deferred_engine(reason: str) -> dict:
    return {"status": f"deferred ({reason})", "file": None, "build_with": f"edgec engine ARTIFACT (or ./{SCRIPT_FILE}) on the GPU"}


def simulation_model(model: Path, precision: str, profile: TargetProfile, workdir: Path) -> Path:
    """What ONNX Runtime CPU runs in the engine's place: the Q/DQ ONNX itself for int8, an fp16 conversion for an
    fp16 engine built from the fp32 ONNX (TensorRT's FP16 flag), the ONNX itself otherwise."""
    if precision != "fp16" or profile.tensorrt.fp16_onnx:
        return model
    from edgec.stages.quantize import to_fp16

    stand_in = workdir / "tensorrt-fp16-stand-in.onnx"
    if not stand_in.exists():
        to_fp16(model, stand_in)
    return stand_in


def _write_implicit_pair(ctx: Context, staging: Path) -> dict:
    """The float graph int8 was calibrated on and its ranges as TensorRT's calibration table (implicit int8 mode)."""
    calibration = json.loads((ctx.workdir / "quantize" / "ranges.json").read_text())
    shutil.copyfile(calibration["source"], staging / IMPLICIT_ONNX_FILE)
    ranges = {name: tuple(r) for name, r in calibration["ranges"].items()}
    # TensorRT 10's version number (major*10000 + minor*100 + patch); build_engine.sh rewrites it to the local one.
    (staging / CALIBRATION_CACHE_FILE).write_text(tensorrt_calibration_cache(ranges, "TRT-100000-EntropyCalibration2"))
    return {"onnx": IMPLICIT_ONNX_FILE, "calibration_cache": CALIBRATION_CACHE_FILE, "tensors": len(ranges)}


def token_lengths(ctx: Context) -> np.ndarray:
    """Token count of every eval and calibration text (after truncation): what the engine will be asked to run."""
    eval_lengths = [b.feeds["attention_mask"].sum(axis=1) for b in ctx.evaluation.batches]
    texts = eval_texts(ctx.source.task, ctx.calib)
    pairs = [e.text_pair for e in texts.examples] if texts.has_pairs else None
    encoded = ctx.source.tokenizer(texts.texts, pairs, truncation=True, max_length=ctx.recipe.max_length)
    return np.concatenate([*eval_lengths, [len(ids) for ids in encoded["input_ids"]]])


def build_spec(ctx: Context, graph: onnx.ModelProto, model: Path, hazards: list[Hazard], implicit: dict | None) -> dict:
    """Everything TensorRT needs to build the engine, with what it was derived from."""
    settings = ctx.target.tensorrt
    max_seq_len = ctx.recipe.max_length  # the build capped it at settings.max_seq_len
    lengths = token_lengths(ctx)
    inputs = [i.name for i in graph.graph.input]
    dtype = lambda v: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name  # noqa: E731
    return {
        "format": 1,
        "onnx": model.name,
        "onnx_sha256": sha256_file(model),
        "engine": ENGINE_FILE,
        "timing_cache": TIMING_CACHE_FILE,
        "precision": ctx.precision,
        "quantization": "explicit int8 Q/DQ: symmetric int8 activations, per-channel symmetric int8 weights"
        if ctx.precision == "int8" else ("fp16 ONNX" if settings.fp16_onnx and ctx.precision == "fp16" else "none (float ONNX)"),
        "flags": _FLAGS[ctx.precision],
        "strongly_typed": False,
        "workspace_mib": settings.workspace_mib,
        "builder_optimization_level": settings.builder_optimization_level,
        "profiles": [optimization_profile(inputs, lengths, max_batch=settings.max_batch, opt_batch=settings.opt_batch, max_seq_len=max_seq_len)],
        "length_histogram": length_histogram(lengths, max_seq_len),
        "inputs": [{"name": i.name, "dtype": dtype(i)} for i in graph.graph.input],
        "outputs": [{"name": o.name, "dtype": dtype(o)} for o in graph.graph.output],
        "implicit_int8": implicit,
        "preflight": [{"severity": h.severity, "what": h.what, "fix": h.fix} for h in hazards],
        "requires": {"tensorrt": ">=10.0", "edgec": package_versions()["edgec"], "onnx_opset": _default_opset(graph)},
    }


def _default_opset(graph: onnx.ModelProto) -> int:
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def trtexec_script(spec: dict) -> str:
    """build_engine.sh: the trtexec command line equivalent to `edgec engine` for this spec."""
    profile = spec["profiles"][0]
    flags = " ".join(f"--{f.lower()}" for f in spec["flags"])
    shapes = " \\\n  ".join(f"--{which}Shapes={trtexec_shapes(profile, which)}" for which in ("min", "opt", "max"))
    common = (
        f"{shapes} \\\n  {flags} --memPoolSize=workspace:{spec['workspace_mib']} "
        f"--builderOptimizationLevel={spec['builder_optimization_level']} \\\n"
        f"  --timingCacheFile={spec['timing_cache']} --skipInference"
    ).replace("  \\\n", " \\\n")
    lines = [
        "#!/usr/bin/env bash",
        f"# Builds {spec['engine']} from {spec['onnx']} with trtexec (TensorRT >= 10), as {SPEC_FILE} specifies;",
        "# the same engine as `edgec engine` builds. Run it on the GPU the engine is for: an engine is tied to",
        "# the GPU model and the TensorRT version that built it. Extra arguments go to trtexec.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]
    implicit = spec.get("implicit_int8")
    if implicit:
        lines += [
            "# ./build_engine.sh --implicit: TensorRT's implicit int8 mode instead, from the float graph and",
            "# calibration table. TensorRT refuses a table whose header names another TensorRT version, so",
            "# the header is rewritten to the local version first.",
            'if [ "${1:-}" = "--implicit" ]; then',
            "  shift",
            "  version=$(python3 -c 'import tensorrt as t; a, b, c = (int(x) for x in t.__version__.split(\".\")[:3]); print(a * 10000 + b * 100 + c)')",
            f"  sed -i \"1s/.*/TRT-$version-EntropyCalibration2/\" {implicit['calibration_cache']}",
            f"  exec trtexec --onnx={implicit['onnx']} --saveEngine={spec['engine']} --calib={implicit['calibration_cache']} \\",
            f"  {common} \"$@\"",
            "fi",
        ]
    lines.append(f"exec trtexec --onnx={spec['onnx']} --saveEngine={spec['engine']} \\\n  {common} \"$@\"")
    return "\n".join(lines) + "\n"


def build_artifact_engine(artifact: Artifact) -> dict:
    """`edgec engine`: build the engine an artifact's spec describes, then record it in the manifest."""
    spec_path = artifact.path / SPEC_FILE
    if not spec_path.is_file():
        raise InputError(f"{artifact.path} has no {SPEC_FILE}, so it is not a TensorRT artifact; build one with --target trt-int8 or trt-fp16")
    spec = json.loads(spec_path.read_text())
    if sha256_file(artifact.path / spec["onnx"]) != spec["onnx_sha256"]:
        raise InputError(f"{artifact.path / spec['onnx']} changed since the build (sha256 differs from {SPEC_FILE}); rebuild the artifact")
    built = {"status": "built", "file": spec["engine"], **build_engine(artifact.path, spec)}
    manifest = {**artifact.manifest, "engine": built}
    manifest["files"] = file_table(artifact.path)
    write_manifest(artifact.path, manifest)
    return built


def parity_runtime(artifact: Artifact, workdir: Path) -> tuple[Path, bool]:
    """What `edgec parity` runs for a TensorRT artifact: its engine where one was built and can run here,
    else the ONNX stand-in on ONNX Runtime CPU. Returns the model file and whether it is simulated."""
    manifest = artifact.manifest
    engine = manifest.get("engine") or {}
    if engine.get("file") and (artifact.path / engine["file"]).is_file() and engine_unavailable_reason() is None:
        return artifact.path / engine["file"], False
    profile = TargetProfile.from_dict(manifest["target"])
    return simulation_model(artifact.model_path, manifest["precision"], profile, workdir), True
