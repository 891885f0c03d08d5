"""build(): a model, a recipe and a target profile in; a verified artifact folder out."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec import surgery
from edgec.artifact import Artifact, load_artifact, package_versions, sha256_file, staged_output
from edgec.backends import get_backend
from edgec.backends.executorch import require_executorch
from edgec.backends.tensorrt import (
    REJECTED_ENGINE_FILE, artifact_spec, build_artifact_engine, check_engine_requirement, engine_stage, parity_runtime,
    require_engine_here,
)
from edgec.bench import BenchConfig, synthetic_inputs
from edgec.data import Dataset, read_dataset
from edgec.emulation import EmulatedRun, run_emulated
from edgec.errors import ConfigError, InputError, ParityError
from edgec.hardware import host
from edgec.manifest import Manifest, ParityRecord, SessionRecord, Sizes, SourceRecord
from edgec.inference import collect_outputs, replay_forward
from edgec.package import package
from edgec.parity import golden
from edgec.parity.evalset import EvalSet, reference_outputs, selection_split
from edgec.parity.ledger import ParityRow, first_loss, parity_row
from edgec.parity.runtime import measure_model, model_forward
from edgec.pipeline import Context, Stage, run_stages
from edgec.precision import Precision
from edgec.profiling import Profile, profile_session
from edgec.processes import check_single_process, main_process_output
from edgec.recipe import ParityThresholds, Recipe
from edgec.source import OUTPUT_NAMES, TOKEN_LEVEL_TASKS, LoadOptions, Source, load_source, save_model
from edgec.stages.distill import distill
from edgec.stages.export import export
from edgec.stages.export_fixed import export_fixed
from edgec.stages.optimize import optimize
from edgec.stages.fallback import fallback
from edgec.stages.iterative import iterative_stages
from edgec.stages.prune import prune
from edgec.stages.quantize import quantize
from edgec.targets import MobileSettings, TargetProfile, choose_target, load_target, package_data

log = logging.getLogger("edgec")


def default_calibration_file() -> Path:
    """The project's own corpus (calibration/corpus.txt, installed as edgec.corpus)."""
    return package_data("edgec.corpus", "calibration") / "corpus.txt"


def build(
    model: str | Path,
    target: str | TargetProfile = "ort",
    *,
    recipe: Recipe | None = None,
    calib: Dataset | None = None,
    eval: Dataset | None = None,  # noqa: A002 - the product's own word
    train: Dataset | None = None,
    out: str | Path,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    tensorrt: dict[str, Any] | None = None,
    instruction_set: str | None = None,
    mobile: dict[str, Any] | None = None,
    on_stage: Callable[[str], None] = lambda name: None,
) -> Artifact:
    """Compile `model` for `target`; raises ParityError (after saving OUT.rejected) if the artifact drifts.

    `train` is the text distillation trains on (recipe.distill); `calib` also drives pruning's importance.
    `tensorrt` changes the target's [tensorrt] settings (max_batch, max_seq_len, require_engine, ...);
    `mobile` the mobile target's accelerator shaping (accelerator, fixed_batch, fixed_seq).
    `instruction_set` (edgec.hardware.INSTRUCTION_SETS) is the CPU the artifact is for; None: this host's.
    """
    out = Path(out)
    # issue 18: two processes would race on OUT; multi-process distillation runs in `edgec prune --distill`.
    check_single_process("edgec build", "distill under torchrun with `edgec prune --distill`, then build the pruned folder")
    profile, choice = resolve_target(target, has_calibration=calib is not None, tensorrt=tensorrt or {}, mobile=mobile or {},
                                     instruction_set=instruction_set)
    if profile.backend == "mobile" and out.suffix != ".zip":
        raise ConfigError(f"target {profile.name} writes one .zip bundle; pass --out {out.name}.zip")
    check_engine_requirement(profile)
    if profile.backend == "executorch":  # issue 18: fail before any work where the package is missing
        require_executorch()
    recipe = resolve_recipe(recipe or Recipe(), profile)
    if recipe.distill is not None and train is None:
        raise ConfigError("distillation needs training text; pass --distill FILE (unlabelled text is enough)")
    started = time.perf_counter()
    with staged_output(out, force=force) as staging, tempfile.TemporaryDirectory(prefix="edgec-") as work:
        source, recipe, calib, evaluation, selection, prune_calib = _prepare(model, recipe, calib, eval, load, on_stage)
        thresholds = profile.thresholds(recipe.quant.precision, recipe.parity, pruned=recipe.prune is not None)
        ctx = Context(source, recipe, profile, thresholds, Path(work), calib, evaluation, selection, prune_calib,
                      train=train, teacher=source.model)
        ctx = run_stages(ctx.with_note("target", choice) if choice else ctx, stages_for(recipe, profile, staging), on_stage)
        on_stage("golden sample")
        sample = write_golden(ctx, staging)
        manifest = package(staging, manifest_for(ctx, time.perf_counter() - started, sample), build_profile(ctx))
        if not manifest.parity.passed:
            rejected = out.with_name(out.name + ".rejected")
            shutil.rmtree(rejected, ignore_errors=True)
            os.replace(staging, rejected)
            raise ParityError(parity_failure_message(ctx, rejected))
    return load_artifact(out) if out.suffix == ".zip" else Artifact(out, manifest)


def _prepare(
    model: str | Path, recipe: Recipe, calib: Dataset | None, eval: Dataset | None, load: LoadOptions,  # noqa: A002
    on_stage: Callable[[str], None],
) -> tuple[Source, Recipe, Dataset, EvalSet, EvalSet | None, Dataset | None]:
    """The model, the calibration sample, the reference outputs on the gate's data (and on the selection part of
    --eval where a stage of the recipe selects), and pruning's calibration sample (PruneConfig.calib_samples, which
    may exceed quantization's; None without pruning)."""
    on_stage("load")
    source = load_source(model, task=recipe.task, options=load)
    recipe = dataclasses.replace(recipe, max_length=min(recipe.max_length, source.max_length))
    samples = recipe.quant.calib_samples
    prune_samples = recipe.prune.calib_samples if recipe.prune is not None else 0
    pool = calib or read_dataset(default_calibration_file(), sample=max(samples, prune_samples), seed=recipe.seed)
    calib = pool.sample(samples, recipe.seed)
    prune_calib = pool.sample(prune_samples, recipe.seed) if recipe.prune is not None else None
    on_stage("reference")
    if eval is None:
        log.warning("no --eval: parity is measured on the %d calibration texts the quantizer also saw, with no task metric; "
                    "pass --eval FILE with labels or scores for a gate that means something", len(calib))
        return source, recipe, calib, reference_outputs(source, calib, recipe.max_length), None, prune_calib
    if not selects(recipe):
        return source, recipe, calib, reference_outputs(source, eval, recipe.max_length), None, prune_calib
    chosen, held_out = selection_split(eval, recipe.seed)
    gate = reference_outputs(source, held_out, recipe.max_length)
    return source, recipe, calib, gate, reference_outputs(source, chosen, recipe.max_length), prune_calib


def selects(recipe: Recipe) -> bool:
    """Whether a stage of the recipe chooses by the eval data: distillation's early stop, int8's float fallback."""
    return recipe.distill is not None or ("fallback" in recipe.quant.precision.needs.stages and recipe.quant.fallback)


def resolve_target(
    target: str | TargetProfile, *, has_calibration: bool, tensorrt: dict[str, Any], mobile: dict[str, Any] | None = None,
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
            raise ConfigError(f"--accelerator and --fixed-shape shape mobile graphs, not {profile.name}; use --target mobile")
        try:
            profile = dataclasses.replace(profile, mobile=dataclasses.replace(profile.mobile or MobileSettings(), **mobile))
        except TypeError as exc:
            raise ConfigError(f"mobile settings: {exc}") from None
    if tensorrt:
        if profile.tensorrt is None:
            raise ConfigError(f"TensorRT settings ({', '.join(sorted(tensorrt))}) apply to TensorRT targets only, not {profile.name}; use --target trt-int8 or trt-fp16")
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
        raise ConfigError(f"target {profile.name} does not support precision {precision}; use one of {', '.join(profile.precisions)}")
    if accelerator and precision is not Precision.FP32:  # issue 18: static int8 calibrates on batches of any shape, this graph takes one
        raise ConfigError(f"--accelerator {accelerator} graphs are float (fp32); drop --precision {precision} or --accelerator")
    max_seq_len = profile.tensorrt.max_seq_len if profile.tensorrt else (profile.mobile.fixed_seq if profile.mobile else None)
    max_length = min(recipe.max_length, max_seq_len) if max_seq_len else recipe.max_length
    return dataclasses.replace(recipe, quant=dataclasses.replace(recipe.quant, precision=precision), max_length=max_length)


def front_end_stages(recipe: Recipe) -> list[Stage]:
    """The PyTorch stages before export: pruning, then distillation, where the recipe asks for them (the iterative
    schedule alternates them)."""
    if recipe.prune is not None and recipe.prune.schedule == "iterative":
        return iterative_stages(recipe)
    stages = [Stage("prune", prune)] if recipe.prune is not None else []
    return stages + ([Stage("distill", distill)] if recipe.distill is not None else [])


def stages_for(recipe: Recipe, profile: TargetProfile, staging: Path) -> list[Stage]:
    """The stages a recipe and target call for, in pipeline order."""
    emit = get_backend(profile.backend)
    if profile.backend == "executorch":  # issue 18: lowered from the PyTorch model (int8 by PT2E inside emit), no ONNX
        return [*front_end_stages(recipe), Stage("artifact", lambda ctx: emit(ctx, staging))]
    accelerated = profile.mobile is not None and profile.mobile.accelerator is not None  # issue 18
    stages = [*front_end_stages(recipe), Stage("export", export_fixed if accelerated else export)]
    if profile.fuse:
        stages.append(Stage("optimize", optimize))
    needs = recipe.quant.precision.needs
    # A TensorRT back end types the fp16 parts itself, from the calibration data's ranges (backends.tensorrt.emit).
    if "quantize" in needs.stages and not (profile.tensorrt is not None and needs.quantizer == "fp16"):
        stages.append(Stage("quantize", quantize))
    if "fallback" in needs.stages and recipe.quant.fallback:
        stages.append(Stage("fallback", fallback))
    stages.append(Stage("artifact", lambda ctx: emit(ctx, staging)))
    if profile.tensorrt is not None:
        stages.append(Stage("engine", lambda ctx: engine_stage(ctx, staging)))
    return stages


def write_golden(ctx: Context, staging: Path) -> dict:
    """The golden sample (texts from the gate's data, reference and artifact outputs) into the artifact."""
    texts, reference = golden.take(ctx.evaluation, ctx.source.task, ctx.recipe.seed)
    model = ctx.parity_model or ctx.onnx_path
    outputs, counts, _ = golden.run(texts, model_forward(model, ctx.target.session, ctx.source.task), ctx.source.tokenizer, ctx.recipe.max_length,
                                    ctx.source.task)
    return golden.write(staging, texts, reference, outputs, counts, golden.runtime_name(model, ctx.ledger[-1].simulated))


def manifest_for(ctx: Context, seconds: float, sample: dict) -> Manifest:
    """Everything needed to trust, reproduce and run the artifact, except the file table."""
    model_file = ctx.files[0]
    signature = lambda values: [  # noqa: E731
        {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
         "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
        for v in values
    ]
    if ctx.onnx_path is None:  # issue 18: a program made without ONNX (ExecuTorch) names its own inputs and outputs
        io = ctx.notes["emit"]["io"]
    else:  # the artifact's file, or the ONNX it was converted from
        model = onnx.load(str(ctx.onnx_path), load_external_data=False)
        io = {"inputs": signature(model.graph.input), "outputs": signature(model.graph.output)}
    config = ctx.source.model.config
    return Manifest(
        versions=package_versions(),
        host=host().to_dict(),
        source=SourceRecord(path=str(ctx.source.path.resolve()), model_type=ctx.source.model_type,
                            weights_sha256={p.name: sha256_file(p) for p in ctx.source.weight_files}),
        task=ctx.source.task,
        pooling=dataclasses.asdict(ctx.source.pooling) if ctx.source.pooling else None,
        labels={str(k): v for k, v in (config.id2label or {}).items()} if ctx.source.task != "feature-extraction" else None,
        target=ctx.target,
        instruction_set=ctx.target.instruction_set,
        session=SessionRecord(settings=ctx.target.session, chosen_by=f"target {ctx.target.name} for {ctx.target.instruction_set}"),
        precision=ctx.precision,
        recipe=ctx.recipe,
        model_file=model_file.name,
        io=io,
        sizes=Sizes(model_bytes=model_file.stat().st_size, source_weights_bytes=sum(p.stat().st_size for p in ctx.source.weight_files)),
        stages=ctx.notes,
        engine=ctx.notes.get("engine"),
        build_seconds=round(seconds, 1),
        parity=ParityRecord(
            passed=ctx.ledger[-1].passed,
            thresholds=ctx.thresholds,
            reference_metric=ctx.evaluation.reference_metric,
            eval_data=ctx.evaluation.dataset.source if ctx.evaluation.dataset is not ctx.calib else "calibration sample (no --eval)",
            eval_examples=len(ctx.evaluation.dataset),
            selection_examples=len(ctx.selection.dataset) if ctx.selection else 0,
            golden=sample,
            ledger=ctx.ledger,
        ),
    )


def build_profile(ctx: Context) -> tuple[Profile, dict[str, Any]] | None:
    """Where an ONNX Runtime artifact's time goes on the build machine (for the report; not in the manifest, whose
    content stays reproducible): a short profile at batch 1 and up to 128 tokens."""
    if ctx.target.backend != "ort":
        return None
    config = BenchConfig(batch=1, seq_len=min(128, ctx.recipe.max_length), threads=None, warmup=5, runs=20)
    feeds = synthetic_inputs(len(ctx.source.tokenizer), config, list(ctx.source.input_names))
    return profile_session(ctx.files[0], feeds, ctx.target.session, warmup=config.warmup, runs=config.runs), dataclasses.asdict(config)


def parity_failure_message(ctx: Context, rejected: Path) -> str:
    final, lost = ctx.ledger[-1], first_loss(ctx.ledger)
    where = f"accuracy was first lost at stage '{lost.stage}'" if lost else "no single stage failed"
    return f"parity failed: {'; '.join(final.failures)}; {where}; the rejected artifact and its report are in {rejected}"


def check_parity(
    artifact: Artifact, data: Dataset | None, *, reference: str | Path | None = None,
    overrides: ParityThresholds = ParityThresholds(),
) -> list[ParityRow]:
    """Re-run the artifact: on `data` against its uncompressed source model (or `reference`), or, without data, on
    its golden sample (no source model needed): one row against the fp32 reference, one against its own build."""
    manifest = artifact.manifest
    profile = manifest.target
    thresholds = manifest.parity.thresholds.overridden_by(overrides)
    with tempfile.TemporaryDirectory(prefix="edgec-") as work:
        model, simulated = artifact_runtime(artifact, profile, Path(work))
        if data is None:
            sample = golden.read(artifact.path)
            built_on = (manifest.parity.golden or {}).get("artifact_runtime")
            same_runtime = built_on == golden.runtime_name(model, simulated)
            return golden.check(sample, model_forward(model, artifact.session, manifest.task), artifact.tokenizer(), manifest.recipe.max_length,
                                manifest.task, model.name, thresholds, simulated, reproduce=same_runtime)
        task, evaluation = reference_for(artifact, data, reference)
        statistics = profile.tensorrt is not None
        return [measure_model(model, "artifact", task, evaluation, thresholds, artifact.session, simulated, statistics)]


def artifact_runtime(artifact: Artifact, profile: TargetProfile, workdir: Path) -> tuple[Path, bool]:
    """The file parity runs for an artifact and whether it is simulated (a TensorRT engine's ONNX stand-in)."""
    return parity_runtime(artifact, workdir) if profile.tensorrt is not None else (artifact.model_path, False)


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
            return golden.check(sample, model_forward(engine, session, manifest.task), tokenizer, manifest.recipe.max_length,
                                manifest.task, engine.name, thresholds, reproduce=False)[0]
    else:
        task, evaluation = reference_for(artifact, data, reference)
        checked_on = data.source

        def gate(engine: Path) -> ParityRow:
            return measure_model(engine, "engine", task, evaluation, thresholds, session, statistics=True)

    record, row = build_artifact_engine(artifact, gate, checked_on)
    if not row.passed:
        raise ParityError(f"engine parity failed on {checked_on}: {'; '.join(row.failures)}; "
                          f"the engine is kept as {artifact.path / REJECTED_ENGINE_FILE} and the artifact is unchanged")
    return record, row


def reference_for(artifact: Artifact, data: Dataset, reference: str | Path | None) -> tuple[str, EvalSet]:
    """The artifact's task and the uncompressed source model's outputs on `data`."""
    manifest = artifact.manifest
    source_path = Path(reference or manifest.source.path)
    if not source_path.is_dir():
        raise InputError(f"the reference model {source_path} is not on this machine; pass --reference MODEL_DIR, "
                         "or leave out --data to check the artifact against its own golden sample")
    source = load_source(source_path, task=manifest.task)
    if reference is None and {p.name: sha256_file(p) for p in source.weight_files} != manifest.source.weights_sha256:
        raise InputError(f"{source_path} changed since the build (weights sha256 differ); pass --reference with the original model")
    return source.task, reference_outputs(source, data, manifest.recipe.max_length)


def verify_emulated(
    artifact: Artifact, data: Dataset, *, samples: int, threads: int = 1, reference: str | Path | None = None,
    overrides: ParityThresholds = ParityThresholds(),
) -> tuple[ParityRow, EmulatedRun]:
    """Run the artifact on aarch64 ONNX Runtime under emulation on a sample of `data`; parity against the source model.

    The sample is `samples` examples drawn deterministically (emulation runs 100-500x slower than a device).
    """
    if artifact.manifest.backend not in ("ort", "mobile"):
        raise ConfigError(f"{artifact.path} is a {artifact.manifest.backend} artifact; only ONNX Runtime artifacts run on emulated aarch64")
    sample = data.sample(samples, seed=0)
    task, evaluation = reference_for(artifact, sample, reference)
    thresholds = artifact.manifest.parity.thresholds.overridden_by(overrides)
    inputs = {i["name"] for i in artifact.manifest.io["inputs"]}
    run = run_emulated(artifact.model_path, [{k: v for k, v in b.feeds.items() if k in inputs} for b in evaluation.batches], threads=threads)
    compared = {name: run.outputs[name] for name in OUTPUT_NAMES[task]}
    outputs = collect_outputs(replay_forward(evaluation.batches, compared), evaluation.batches,
                              token_level=task in TOKEN_LEVEL_TASKS)
    return parity_row("aarch64 (emulated)", artifact.model_path.name, task, evaluation, outputs, thresholds, statistics=True), run


def predict(artifact: Artifact, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """The artifact's named outputs for the texts: an ONNX Runtime artifact through the device runner it ships
    (predict.py: onnxruntime, tokenizers and numpy only), an ExecuTorch program through its runtime."""
    if artifact.model_path.suffix == ".pte":  # issue 18: ExecuTorch runs where the ONNX Runtime runner cannot
        from edgec.backends.executorch import pte_forward

        encoded = artifact.tokenizer()(texts, pairs, padding=True, truncation=True, max_length=artifact.manifest.recipe.max_length, return_tensors="np")
        return pte_forward(artifact.model_path)({k: v.astype(np.int64) for k, v in encoded.items()})
    from edgec.device_predict import Predictor  # issue 18: `edgec run` is the device's own logic

    return Predictor(artifact.path).run(texts, pairs)


def compress(
    model: str | Path,
    recipe: Recipe,
    *,
    calib: Dataset | None = None,
    eval: Dataset | None = None,  # noqa: A002
    train: Dataset | None = None,
    out: str | Path,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    on_stage: Callable[[str], None] = lambda name: None,
    deadline: float | None = None,
) -> dict:
    """Prune (and distill) `model` and save it as a Hugging Face folder that transformers loads as is.

    `deadline` (a time.perf_counter() value) ends distillation then, whatever recipe.distill.minutes says: a caller
    with one wall-clock budget for several steps gives distillation what is left. Returns the prune summary with
    the parity ledger of the front-end stages (PyTorch, vs the unpruned model).
    """
    out = Path(out)
    if recipe.prune is None:
        raise ConfigError("nothing to do: pass --prune F (the share of the encoder's compute to remove)")
    if recipe.distill is not None and train is None:
        raise ConfigError("distillation needs training text; pass --distill FILE (unlabelled text is enough)")
    # issue 18: under torchrun every process prunes and distills (the collectives need them all); rank 0 saves.
    with main_process_output(out, force=force) as staging, tempfile.TemporaryDirectory(prefix="edgec-") as work:
        source, recipe, calib, evaluation, selection, prune_calib = _prepare(model, recipe, calib, eval, load, on_stage)
        if "layers" in recipe.prune.units and source.model.config.model_type == "modernbert":  # surgery.standard_layout
            raise ConfigError("a ModernBERT with whole layers removed cannot be saved as a transformers folder (its layers alternate "
                              "local and global attention by position); prune with --units heads,ffn, or prune while building "
                              "(`edgec build --prune`)")
        profile = load_target("ort")
        thresholds = profile.thresholds(Precision.FP32, recipe.parity, pruned=True)
        ctx = Context(source, recipe, profile, thresholds, Path(work), calib, evaluation, selection, prune_calib,
                      train=train, teacher=source.model, deadline=deadline)
        ctx = run_stages(ctx, front_end_stages(recipe), on_stage)
        summary = ctx.notes["prune"]
        on_stage("save")
        save_pruned(ctx.source, summary, staging)
    return {**summary, "distill": ctx.notes.get("distill"), "ledger": ctx.ledger, "reference_metric": evaluation.reference_metric}


def save_pruned(pruned: Source, summary: dict, folder: Path) -> None:
    """Write a pruned model as a Hugging Face folder: weights (transformers' layout), tokenizer, pooling."""
    names = ("fraction", "units", "macs_before", "macs_after", "heads_after", "ffn_after", "layers_removed", "hidden_after", "seconds")
    layout = {k: summary[k] for k in names if k in summary}
    save_model(pruned, folder, model=surgery.standard_layout(pruned.model, layout))
