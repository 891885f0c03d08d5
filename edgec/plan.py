"""What one build runs: the target profile with the caller's changes, the recipe completed by it, and the stages in
pipeline order, as the recipe, the precision and the back end call for them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

from edgec.backends import get_backend
from edgec.errors import ConfigError
from edgec.hardware import host
from edgec.pipeline import Stage
from edgec.precision import Precision
from edgec.recipe import Recipe
from edgec.stages.distill import distill
from edgec.stages.fallback import fallback
from edgec.stages.iterative import iterative_stages
from edgec.stages.optimize import optimize
from edgec.stages.prune import prune
from edgec.stages.quantize import quantize
from edgec.targets import MobileSettings, TargetProfile, choose_target, load_target


def resolve_target(
    target: str | TargetProfile,
    *,
    has_calibration: bool,
    tensorrt: dict[str, Any],
    mobile: dict[str, Any] | None = None,
    instruction_set: str | None = None,
) -> tuple[TargetProfile, str | None]:
    """The profile (`trt` chosen by whether calibration data was given) with the changes measured for the
    instruction set (default: the host's) and the caller's [tensorrt] (and [mobile]) changes, and the sentence
    saying what an alias chose."""
    name, choice = choose_target(target, has_calibration=has_calibration) if isinstance(target, str) else (target, None)
    profile = load_target(name) if isinstance(name, str) else name
    profile = profile.for_instruction_set(instruction_set or host().instruction_set)
    if mobile:  # issue 18: --accelerator / --fixed-shape
        if profile.backend != "mobile":
            raise ConfigError(
                f"--accelerator and --fixed-shape shape mobile graphs, not {profile.name}; use --target mobile"
            )
        try:
            profile = dataclasses.replace(
                profile, mobile=dataclasses.replace(profile.mobile or MobileSettings(), **mobile)
            )
        except TypeError as exc:
            raise ConfigError(f"mobile settings: {exc}") from None
    if tensorrt:
        if profile.tensorrt is None:
            raise ConfigError(
                f"TensorRT settings ({', '.join(sorted(tensorrt))}) apply to TensorRT targets only, not {profile.name}; use --target trt-int8 or trt-fp16"
            )
        try:
            profile = dataclasses.replace(profile, tensorrt=dataclasses.replace(profile.tensorrt, **tensorrt))
        except TypeError as exc:
            raise ConfigError(f"tensorrt settings: {exc}") from None
    return profile, choice


def resolve_recipe(recipe: Recipe, profile: TargetProfile) -> Recipe:
    """Fill the precision from the profile's default and check the profile supports it; an engine's longest
    sequence also caps the inputs' truncation length, so the artifact never feeds the engine a longer one."""
    accelerator = profile.mobile.accelerator if profile.mobile else None
    precision = recipe.quant.precision or (Precision.FP32 if accelerator else profile.default_precision)
    if precision not in profile.precisions:
        raise ConfigError(
            f"target {profile.name} does not support precision {precision}; use one of {', '.join(profile.precisions)}"
        )
    if (
        accelerator and precision is not Precision.FP32
    ):  # issue 18: static int8 calibrates on batches of any shape, this graph takes one
        raise ConfigError(
            f"--accelerator {accelerator} graphs are float (fp32); drop --precision {precision} or --accelerator"
        )
    max_seq_len = (
        profile.tensorrt.max_seq_len if profile.tensorrt else (profile.mobile.fixed_seq if profile.mobile else None)
    )
    max_length = min(recipe.max_length, max_seq_len) if max_seq_len else recipe.max_length
    return dataclasses.replace(
        recipe, quant=dataclasses.replace(recipe.quant, precision=precision), max_length=max_length
    )


SELECTING_STAGES = ("distill", "fallback")
"""Stages that choose by the eval data: distillation's early stop, int8's float fallback."""


def selects(stages: list[Stage]) -> bool:
    """Whether a stage the build will run chooses by the eval data. Asked of the stage list, not the recipe: a back end
    that makes int8 its own way (ExecuTorch) runs no fallback, and its gate then keeps every --eval example."""
    return any(stage.name in SELECTING_STAGES for stage in stages)


def front_end_stages(recipe: Recipe) -> list[Stage]:
    """The PyTorch stages before export: pruning, then distillation, where the recipe asks for them (the iterative
    schedule alternates them)."""
    if recipe.prune is not None and recipe.prune.schedule == "iterative":
        return iterative_stages(recipe)
    stages = [Stage("prune", prune)] if recipe.prune is not None else []
    return stages + ([Stage("distill", distill)] if recipe.distill is not None else [])


def stages_for(recipe: Recipe, profile: TargetProfile, staging: Path) -> list[Stage]:
    """The stages a recipe and target call for, in pipeline order."""
    backend = get_backend(profile.backend)
    artifact = Stage("artifact", lambda ctx: backend.emit(ctx, staging))
    if backend.export is None:  # made from the PyTorch model itself: no ONNX stages
        return [*front_end_stages(recipe), artifact, *backend.extra_stages(staging)]
    stages = [*front_end_stages(recipe), Stage("export", backend.export)]
    if profile.fuse:
        stages.append(Stage("optimize", optimize))
    needs = cast(Precision, recipe.quant.precision).needs  # resolved by resolve_recipe
    if "quantize" in needs.stages and needs.quantizer not in backend.own_quantizers:
        stages.append(Stage("quantize", quantize))
    if "fallback" in needs.stages and recipe.quant.fallback:
        stages.append(Stage("fallback", fallback))
    return [*stages, artifact, *backend.extra_stages(staging)]
