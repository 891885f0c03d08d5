"""Mobile back end: ONNX Runtime Mobile's ORT format, its reduced-build operator config, and ORT's usability check.

The artifact is one .zip (see README, "Mobile bundles"): model.ort, required_operators_and_types.config,
the tokenizer, mobile_usability.json, the manifest and the report.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import onnx

from edgec.artifacts.stage_notes import MobileEmitNote
from edgec.backends.device_runner import RUNNER_FILE, write_device_runner
from edgec.backends.registry import Backend, register_backend
from edgec.errors import ConfigError, InputError
from edgec.pipeline import Context
from edgec.stages.export import export
from edgec.stages.export_fixed import export_fixed
from edgec.stages.quantize import quiet_root_logger
from edgec.targets import TargetProfile

MODEL_FILE = "model.ort"
CONFIG_FILE = "required_operators_and_types.config"
USABILITY_FILE = "mobile_usability.json"
# The tokenizer as mobile runtimes read it (tokenizer.json), plus what transformers needs to rebuild it.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Conversion keeps ONNX Runtime's *basic* optimizations only (constant folding, redundant-node removal):
# the higher levels insert CPU-only fused contrib ops, which NNAPI, CoreML and XNNPACK cannot take.
_CONVERSION_LEVEL = "basic"


@contextlib.contextmanager
def _conversion_level(level: str) -> Iterator[None]:
    # convert_onnx_models_to_ort reads its optimization level from this variable only.
    name = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
    before = os.environ.get(name)
    os.environ[name] = level
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name)
        else:
            os.environ[name] = before


def convert_to_ort(onnx_path: Path, out_dir: Path) -> tuple[Path, Path, Path]:
    """onnxruntime's own converter (fixed optimizations, ARM target, type reduction).

    Returns the .ort model, its required-operators config and the optimized ONNX the .ort was made from.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    # The converter prints each step and its config writer logs at INFO on a logger of its own.
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with _conversion_level(_CONVERSION_LEVEL), contextlib.redirect_stdout(io.StringIO()) as log, quiet_root_logger():
        try:
            convert_onnx_models_to_ort(
                onnx_path,
                output_dir=out_dir,
                optimization_styles=[OptimizationStyle.Fixed],
                target_platform="arm",
                save_optimized_onnx_model=True,
                enable_type_reduction=True,
            )
        except Exception as exc:  # noqa: BLE001 - the converter raises whatever its session raised
            raise InputError(
                f"ONNX Runtime could not convert the model to ORT format ({exc}); {log.getvalue()[-300:]!r}"
            ) from None
    ort_model = next(out_dir.glob("*.ort"))
    config = next(out_dir.glob(f"*{CONFIG_FILE.removesuffix('.config')}*.config"))
    optimized = next(out_dir.glob("*.optimized.onnx"))
    return ort_model, config, optimized


def mobile_usability(onnx_path: Path) -> dict:
    """ORT's mobile usability check: how much of the graph NNAPI and CoreML could take, as it stands and with
    fixed input shapes (mobile apps often fix batch and sequence length for the accelerators)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo

    model = ModelProtoWithShapeInfo(onnx_path).model_with_shape_info
    providers = {
        "NNAPI": checker.check_nnapi_partitions,
        "CoreML MLProgram": lambda m, fixed: checker.check_coreml_partitions(
            m, fixed, "coreml_supported_mlprogram_ops.md"
        ),
    }
    report = {}
    for name, check in providers.items():
        as_is, fixed = check(model, True), check(model, False)
        report[name] = {
            "nodes": as_is.num_nodes,
            "supported_nodes": as_is.num_supported_nodes,
            "partitions": as_is.num_partitions,
            "unsupported_ops": sorted(as_is.unsupported_ops),
            "suitability": as_is.suitability().name,
            "supported_nodes_with_fixed_shapes": fixed.num_supported_nodes,
            "partitions_with_fixed_shapes": fixed.num_partitions,
            "suitability_with_fixed_shapes": fixed.suitability().name,
        }
    return report


# The ONNX Runtime provider each accelerator means, as the usability checker names it (it has no XNNPACK rules).
_PROVIDERS = {"coreml": "CoreML MLProgram", "nnapi": "NNAPI"}


def accelerator_report(onnx_path: Path, accelerator: str) -> dict:
    """The usability check of an accelerator-shaped graph for its provider: partitions, the share of nodes it takes,
    and every node left on the CPU with the reason (op not in the provider's list, or its input shapes/rank)."""
    if accelerator not in _PROVIDERS:
        return {
            "provider": accelerator,
            "checked": False,
            "why": "ONNX Runtime's usability checker has no rules for this provider",
        }
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo

    model = ModelProtoWithShapeInfo(onnx_path).model_with_shape_info
    if accelerator == "coreml":
        info = checker.check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md")
    else:
        info = checker.check_nnapi_partitions(model, True)
    taken = {id(node) for group in info.supported_groups for node in group}
    remaining = [
        {
            "node": node.name,
            "op": node.op_type,
            "why": "op not in the provider's list"
            if not info.supported_ops_checker.is_op_supported(node)
            else "input shape or rank",
        }
        for node in model.graph.node
        if id(node) not in taken
    ]
    return {
        "provider": _PROVIDERS[accelerator],
        "checked": True,
        "nodes": info.num_nodes,
        "supported_nodes": info.num_supported_nodes,
        "supported_share": round(100 * info.num_supported_nodes / max(info.num_nodes, 1), 1),
        "partitions": info.num_partitions,
        "suitability": info.suitability().name,
        "remaining_nodes": remaining,
    }


def config_operators(config_text: str) -> dict[str, set[str]]:
    """Op types per domain in a required_operators(_and_types).config (lines `domain;opset;Op1,Op2{types}`)."""
    found: dict[str, set[str]] = {}
    for line in config_text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        domain, _, ops = line.split(";", 2)
        names = set()
        depth, current = 0, ""
        for char in ops:  # type lists in braces contain commas of their own
            depth += char == "{"
            depth -= char == "}"
            if char == "," and depth == 0:
                names.add(current.split("{")[0].strip())
                current = ""
            else:
                current += char
        names.add(current.split("{")[0].strip())
        found.setdefault(domain, set()).update(n for n in names if n)
    return found


def emit(ctx: Context, staging: Path) -> Context:
    """model.ort, its operator config, the tokenizer and the usability report; parity runs on the .ort itself."""
    work = ctx.workdir / "mobile"
    work.mkdir(parents=True)
    onnx_copy = work / "model.onnx"
    shutil.copyfile(cast(Path, ctx.onnx_path), onnx_copy)
    ort_model, config, optimized = convert_to_ort(onnx_copy, work / "converted")
    model, config_out = staging / MODEL_FILE, staging / CONFIG_FILE
    shutil.copyfile(ort_model, model)
    # The converter names the temporary .ort it read in a comment; the bundle's copy names the file it ships.
    lines = [line for line in config.read_text().splitlines() if not line.startswith("# - ")]
    config_out.write_text("\n".join(line.replace("model/s:", f"model/s: {MODEL_FILE}") for line in lines) + "\n")
    usability = mobile_usability(optimized)
    accelerator = ctx.target.mobile.accelerator if ctx.target.mobile else None
    if accelerator:  # issue 18: the shaped graph's own verdict, node by node
        usability["accelerator"] = accelerator_report(optimized, accelerator)
    (staging / USABILITY_FILE).write_text(json.dumps(usability, indent=2, sort_keys=True) + "\n")
    ctx.source.tokenizer.save_pretrained(str(work / "tokenizer"))
    tokenizer = [staging / name for name in _TOKENIZER_FILES if (work / "tokenizer" / name).exists()]
    for path in tokenizer:
        shutil.copyfile(work / "tokenizer" / path.name, path)
    runner = write_device_runner(staging)
    ops = Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)
    note = MobileEmitNote(
        model=MODEL_FILE,
        operator_config=CONFIG_FILE,
        conversion=f"ORT format, fixed {_CONVERSION_LEVEL} optimizations, ARM",
        operator_counts=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        usability={ep: u["suitability"] for ep, u in usability.items() if ep != "accelerator"},
        accelerator={k: v for k, v in usability["accelerator"].items() if k != "remaining_nodes"}
        if accelerator
        else None,
        runner=RUNNER_FILE if runner else None,
    )
    # The manifest's signature comes from the ONNX the .ort was converted from (same inputs and outputs).
    return ctx.with_note("emit", note, files=(model, config_out, *tokenizer, *runner), parity_model=model)


def export_for_device(ctx: Context) -> Context:
    """An accelerator (--accelerator) takes fixed input shapes and its own mask form; ONNX Runtime Mobile's CPU
    kernels take the dynamic graph."""
    return (export_fixed if ctx.target.mobile is not None and ctx.target.mobile.accelerator else export)(ctx)


def check_bundle_path(profile: TargetProfile, out: Path) -> None:
    if out.suffix != ".zip":
        raise ConfigError(f"target {profile.name} writes one .zip bundle; pass --out {out.name}.zip")


BACKEND = register_backend(
    Backend(
        name="mobile",
        emit=emit,
        needs="onnxruntime",
        needs_module="onnxruntime",
        export=export_for_device,
        preflight=check_bundle_path,
        emulates=True,
    )
)
