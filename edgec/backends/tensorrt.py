"""TensorRT back end: the ONNX TensorRT parses, typed as a strongly typed engine runs it (TensorRT 10 and 11), its
build spec, the trtexec script, and the engine where one can be built.

On a machine without tensorrt or a CUDA device the artifact is complete except for the engine, which
`edgec engine ARTIFACT --data FILE` (or ./build_engine.sh) builds later on the device; the manifest says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx

from edgec.artifacts.artifact import Artifact, file_table, package_versions, sha256_file
from edgec.artifacts.stage_notes import TensorRTEmitNote
from edgec.backends.onnxruntime import copy_model_and_tokenizer
from edgec.backends.registry import Backend, register_backend
from edgec.backends.tensorrt_engine import INSTALL_HINT, build_engine, engine_unavailable_reason
from edgec.data import Dataset
from edgec.errors import BackendUnavailable, InputError, ParityError
from edgec.ops.trt_preflight import Hazard, preflight
from edgec.ops.trt_shapes import length_histogram, optimization_profile, trtexec_shapes
from edgec.parity import golden
from edgec.parity.evalset import eval_texts
from edgec.parity.ledger import ParityRow
from edgec.parity.runtime import measure_model, model_forward
from edgec.parity.source_reference import reference_for
from edgec.pipeline import Context, Stage
from edgec.precision import Precision
from edgec.stages.mixed_precision import type_for_engine, write_rounding_model
from edgec.stages.quantize import calibration_feeds
from edgec.targets import TargetProfile, TensorRTSettings

SPEC_FILE = "trt_build.json"
SCRIPT_FILE = "build_engine.sh"
ENGINE_FILE = "model.engine"
CANDIDATE_ENGINE_FILE = "model.candidate.engine"
REJECTED_ENGINE_FILE = "model.engine.rejected"
TIMING_CACHE_FILE = "timing.cache"
SPEC_FORMAT = 2
TENSORRT_MAJORS = (10, 11)
"""TensorRT majors the spec is written for: strongly typed networks (10.x opts in, 11.x always), no precision flags."""
BUILD_WITH = f"edgec engine ARTIFACT --data EVAL_FILE (or ./{SCRIPT_FILE}) on the GPU"


def check_engine_requirement(profile: TargetProfile, out: Path) -> None:
    """With tensorrt.require_engine, fail before any work when this machine cannot build the engine."""
    if profile.tensorrt is not None and profile.tensorrt.require_engine and (reason := engine_unavailable_reason()):
        raise BackendUnavailable(
            f"--require-engine: cannot build a TensorRT engine here ({reason}); {INSTALL_HINT}, or drop --require-engine"
        )


def require_engine_here() -> None:
    """Fail with the install hint where no engine can be built (no tensorrt or no CUDA device)."""
    if (reason := engine_unavailable_reason()) is not None:
        raise BackendUnavailable(f"cannot build a TensorRT engine here: {reason}; {INSTALL_HINT}")


def emit(ctx: Context, staging: Path) -> Context:
    """Write the ONNX typed as the engine runs it (fp16 where the calibration data allows), trt_build.json and
    build_engine.sh; no engine yet."""
    model, files = copy_model_and_tokenizer(ctx, staging)
    typing = None
    if ctx.precision.needs.fp16_parts:
        typing = type_for_engine(cast(Path, ctx.onnx_path), model, calibration_feeds(ctx), ctx.target.session)
    graph = onnx.load(str(model), load_external_data=False)
    hazards = preflight(graph, {i.name: (0, 1) for i in graph.graph.input})
    errors = [h for h in hazards if h.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more in the preflight)" if len(errors) > 1 else ""
        raise InputError(f"TensorRT preflight: {errors[0].what}; {errors[0].fix}{more}")
    spec = build_spec(ctx, graph, model, hazards)
    (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    script = staging / SCRIPT_FILE
    script.write_text(trtexec_script(spec))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    note = TensorRTEmitNote(
        model=model.name,
        spec=SPEC_FILE,
        script=SCRIPT_FILE,
        typing=typing,
        profile=spec["profiles"][0],
        preflight_warnings=[h.what for h in hazards],
    )
    stand_in = simulation_model(model, ctx.precision, ctx.workdir)
    return ctx.with_note("emit", note, onnx_path=model, files=files, parity_model=stand_in)


def engine_stage(ctx: Context, staging: Path) -> Context:
    """Build the engine where tensorrt and a CUDA device exist; elsewhere record that it is deferred."""
    reason = engine_unavailable_reason()
    if reason is not None:
        return ctx.with_note("engine", deferred_engine(reason))
    spec = json.loads((staging / SPEC_FILE).read_text())
    built = build_engine(staging, spec)
    return ctx.with_note(
        "engine", {"status": "built", "file": spec["engine"], **built}, parity_model=staging / spec["engine"]
    )


def deferred_engine(reason: str) -> dict:
    return {"status": f"deferred ({reason})", "file": None, "build_with": BUILD_WITH}


def simulation_model(model: Path, precision: Precision, workdir: Path) -> Path:
    """What ONNX Runtime CPU runs in the engine's place: the fp32 ONNX itself, or for an fp16-typed one (fp16 and
    int8 builds) a copy that rounds every fp16 tensor through an explicit Cast pair, as the engine stores it."""
    if not precision.needs.fp16_parts:
        return model
    stand_in = workdir / "tensorrt-fp16-rounding.onnx"
    if not stand_in.exists():
        write_rounding_model(model, stand_in)
    return stand_in


def token_lengths(ctx: Context) -> np.ndarray:
    """Token count of every eval and calibration text (after truncation): what the engine will be asked to run."""
    eval_lengths = [b.feeds["attention_mask"].sum(axis=1) for b in ctx.evaluation.batches]
    texts = eval_texts(ctx.source.task, ctx.calib)
    pairs = [e.text_pair for e in texts.examples] if texts.has_pairs else None
    encoded = ctx.source.tokenizer(texts.texts, pairs, truncation=True, max_length=ctx.recipe.max_length)
    return np.concatenate([*eval_lengths, [len(ids) for ids in encoded["input_ids"]]])


def build_spec(ctx: Context, graph: onnx.ModelProto, model: Path, hazards: list[Hazard]) -> dict:
    """Everything TensorRT needs to build the engine, with what it was derived from."""
    settings = cast(TensorRTSettings, ctx.target.tensorrt)  # a TensorRT profile has its section
    max_seq_len = ctx.recipe.max_length  # the build capped it at settings.max_seq_len
    lengths = token_lengths(ctx)
    inputs = [i.name for i in graph.graph.input]
    dtype = lambda v: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name  # noqa: E731
    return {
        "format": SPEC_FORMAT,
        "onnx": model.name,
        "onnx_sha256": sha256_file(model),
        "engine": ENGINE_FILE,
        "timing_cache": TIMING_CACHE_FILE,
        "precision": ctx.precision,
        "quantization": _QUANTIZATION[ctx.precision],
        # Precision comes from the ONNX's own types: no builder precision flags (TensorRT 11 removed them).
        "strongly_typed": True,
        "tensorrt_majors": list(TENSORRT_MAJORS),
        "workspace_mib": settings.workspace_mib,
        "builder_optimization_level": settings.builder_optimization_level,
        "profiles": [
            optimization_profile(
                inputs, lengths, max_batch=settings.max_batch, opt_batch=settings.opt_batch, max_seq_len=max_seq_len
            )
        ],
        "length_histogram": length_histogram(lengths, max_seq_len),
        "inputs": [{"name": i.name, "dtype": dtype(i)} for i in graph.graph.input],
        "outputs": [{"name": o.name, "dtype": dtype(o)} for o in graph.graph.output],
        "preflight": [{"severity": h.severity, "what": h.what, "fix": h.fix} for h in hazards],
        "requires": {
            "tensorrt": ">=10.0,<12",
            "edgec": package_versions()["edgec"],
            "onnx_opset": _default_opset(graph),
        },
    }


_QUANTIZATION = {  # what the spec says of each precision a TensorRT profile may list
    Precision.INT8: "explicit int8 Q/DQ (symmetric int8 activations, per-channel symmetric int8 weights); float parts typed "
    "fp16 where the calibration data allows, fp32 elsewhere",
    Precision.FP16: "none; float parts typed fp16 where the calibration data allows, fp32 elsewhere",
    Precision.FP32: "none (fp32 ONNX)",
}


def _default_opset(graph: onnx.ModelProto) -> int:
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def trtexec_script(spec: dict) -> str:
    """build_engine.sh: the trtexec command line `edgec engine` equals for this spec (without its parity gate)."""
    profile = spec["profiles"][0]
    shapes = " \\\n  ".join(f"--{which}Shapes={trtexec_shapes(profile, which)}" for which in ("min", "opt", "max"))
    lines = [
        "#!/usr/bin/env bash",
        f"# Builds {spec['engine']} from {spec['onnx']} with trtexec "
        f"(TensorRT {' or '.join(map(str, spec['tensorrt_majors']))}), as {SPEC_FILE} specifies;",
        "# the same engine as `edgec engine` builds, which also checks its parity. Run it on the GPU it is for:",
        "# an engine is tied to the GPU model and the TensorRT version that built it. Extra arguments go to trtexec.",
        "# The ONNX carries its own precision (fp16/fp32 types, int8 Q/DQ), so no precision flag is passed;",
        "# --stronglyTyped is required by TensorRT 10 and a no-op in 11, where every network is strongly typed.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f"exec trtexec --onnx={spec['onnx']} --saveEngine={spec['engine']} \\\n  {shapes} \\\n"
        f"  --stronglyTyped --memPoolSize=workspace:{spec['workspace_mib']} "
        f"--builderOptimizationLevel={spec['builder_optimization_level']} \\\n"
        f'  --timingCacheFile={spec["timing_cache"]} --skipInference "$@"',
    ]
    return "\n".join(lines) + "\n"


def artifact_spec(artifact: Artifact) -> dict:
    """The artifact's trt_build.json, checked: present, of this edgec's format, and written for its ONNX."""
    spec_path = artifact.path / SPEC_FILE
    if not spec_path.is_file():
        raise InputError(
            f"{artifact.path} has no {SPEC_FILE}, so it is not a TensorRT artifact; build one with --target trt-int8 or trt-fp16"
        )
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != SPEC_FORMAT:
        raise InputError(
            f"{spec_path} has format {spec.get('format')}, written for weakly typed TensorRT (precision "
            "flags, implicit int8) that TensorRT 11 removed; rebuild the artifact with this edgec"
        )
    if sha256_file(artifact.path / spec["onnx"]) != spec["onnx_sha256"]:
        raise InputError(
            f"{artifact.path / spec['onnx']} changed since the build (sha256 differs from {SPEC_FILE}); rebuild the artifact"
        )
    return spec


def build_artifact_engine(
    artifact: Artifact, gate: Callable[[Path], ParityRow], checked_on: str
) -> tuple[dict, ParityRow]:
    """`edgec engine`: build the engine the spec describes, run `gate` (parity on `checked_on` data) on it, and record
    it in the manifest. A passing engine becomes model.engine; a failing one is kept as model.engine.rejected, beside
    whatever engine the artifact had. Returns the manifest's engine record and the parity row."""
    spec = artifact_spec(artifact)
    candidate = artifact.path / CANDIDATE_ENGINE_FILE
    built = build_engine(artifact.path, {**spec, "engine": candidate.name})
    row = gate(candidate)
    parity = {"data": checked_on, "passed": row.passed, "failures": list(row.failures), "metrics": row.metrics}
    if row.passed:
        os.replace(candidate, artifact.path / spec["engine"])
        record = {"status": "built", "file": spec["engine"], **built, "parity": parity}
    else:
        os.replace(candidate, artifact.path / REJECTED_ENGINE_FILE)
        record = {
            **cast(dict[str, Any], artifact.manifest.engine),
            "rejected": {"file": REJECTED_ENGINE_FILE, **built, "parity": parity},
        }
    dataclasses.replace(artifact.manifest, engine=record, files=file_table(artifact.path)).write(artifact.path)
    return record, row


def parity_runtime(artifact: Artifact, workdir: Path) -> tuple[Path, bool]:
    """What `edgec parity` runs for a TensorRT artifact: its engine where one was built and can run here,
    else the ONNX stand-in on ONNX Runtime CPU. Returns the model file and whether it is simulated."""
    manifest = artifact.manifest
    engine = manifest.engine or {}
    if engine.get("file") and (artifact.path / engine["file"]).is_file() and engine_unavailable_reason() is None:
        return artifact.path / engine["file"], False
    return simulation_model(artifact.model_path, manifest.precision, workdir), True


def build_checked_engine(
    artifact: Artifact, data: Dataset | None, *, reference: str | Path | None = None
) -> tuple[dict, ParityRow]:
    """`edgec engine`: build a TensorRT artifact's engine, then gate it on parity measured on the engine itself: on
    `data` against the uncompressed source model (or `reference`), or, without data, on the artifact's golden sample
    against the fp32 reference outputs it carries. A passing engine is recorded as built; a failing one is kept as
    model.engine.rejected and ParityError is raised. Returns the manifest's engine record and the parity row.
    """
    artifact_spec(artifact)  # a non-TensorRT or stale artifact fails before the reference model loads
    require_engine_here()
    manifest = artifact.manifest
    thresholds, session = manifest.parity.thresholds, manifest.target.session
    if data is None:
        sample, tokenizer, checked_on = golden.read(artifact.path), artifact.tokenizer(), "the golden sample"

        def gate(engine: Path) -> ParityRow:  # the stored artifact outputs came from the CPU simulation: not comparable
            return golden.check(
                sample,
                model_forward(engine, session, manifest.task),
                tokenizer,
                manifest.recipe.max_length,
                manifest.task,
                engine.name,
                thresholds,
                reproduce=False,
                hidden_pruned=manifest.recipe.prunes_hidden,
            )[0]
    else:
        task, evaluation = reference_for(artifact, data, reference)
        checked_on = data.source

        def gate(engine: Path) -> ParityRow:
            return measure_model(engine, "engine", task, evaluation, thresholds, session, statistics=True)

    record, row = build_artifact_engine(artifact, gate, checked_on)
    if not row.passed:
        raise ParityError(
            f"engine parity failed on {checked_on}: {'; '.join(row.failures)}; "
            f"the engine is kept as {artifact.path / REJECTED_ENGINE_FILE} and the artifact is unchanged"
        )
    return record, row


BACKEND = register_backend(
    Backend(
        name="tensorrt",
        emit=emit,
        needs="'edgec[trt]' + an NVIDIA GPU, for the engine only",
        needs_module="tensorrt",
        own_quantizers=frozenset({"fp16"}),  # emit types the fp16 parts itself, from the calibration data's ranges
        extra_stages=lambda staging: (Stage("engine", lambda ctx: engine_stage(ctx, staging)),),
        preflight=check_engine_requirement,
        parity_runtime=parity_runtime,
        statistics=True,
    )
)
