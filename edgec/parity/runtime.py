"""Running a model over an EvalSet for a ledger row: a model file (ONNX, ORT, a TensorRT engine, a .pte) or a PyTorch module."""

from __future__ import annotations

from pathlib import Path

from edgec.parity.evalset import EvalSet
from edgec.parity.ledger import ParityRow, parity_row
from edgec.recipe import ParityThresholds
from edgec.running.inference import Forward, Outputs, collect_outputs, ort_forward, ort_session, torch_forward
from edgec.source import OUTPUT_NAMES, TOKEN_LEVEL_TASKS, Source
from edgec.targets import SessionSettings


def model_forward(model_path: Path, settings: SessionSettings, task: str) -> Forward:
    """Run a model file: a TensorRT engine on its GPU, an ExecuTorch program on its runtime, anything else (ONNX, ORT)
    on ONNX Runtime CPU.

    Only the task's outputs are returned (an embedding artifact's token states are there for other runtimes).
    """
    if model_path.suffix == ".engine":
        from edgec.backends.tensorrt_engine import engine_forward

        return engine_forward(model_path)
    if model_path.suffix == ".pte":  # issue 18
        from edgec.backends.executorch import pte_forward

        return pte_forward(model_path)
    return ort_forward(ort_session(model_path, settings), OUTPUT_NAMES[task])


def measure_model(
    model_path: Path,
    stage: str,
    task: str,
    evaluation: EvalSet,
    thresholds: ParityThresholds,
    settings: SessionSettings,
    simulated: bool = False,
    statistics: bool = False,
) -> ParityRow:
    """One ledger row: run the model file on the eval set and compare it with the reference."""
    outputs = model_outputs(model_path, task, evaluation, settings, f"parity: {stage}")
    return parity_row(
        stage, model_path.name, task, evaluation, outputs, thresholds, simulated=simulated, statistics=statistics
    )


def model_outputs(
    model_path: Path, task: str, evaluation: EvalSet, settings: SessionSettings, description: str
) -> Outputs:
    """The model file's outputs on the eval set's batches."""
    return collect_outputs(
        model_forward(model_path, settings, task),
        evaluation.batches,
        token_level=task in TOKEN_LEVEL_TASKS,
        description=description,
    )


def measure_module(source: Source, stage: str, evaluation: EvalSet, thresholds: ParityThresholds) -> ParityRow:
    """One ledger row for a PyTorch model (before export: after pruning or distillation)."""
    forward = torch_forward(source.reference_module(), source.input_names, source.output_names)
    outputs = collect_outputs(
        forward, evaluation.batches, token_level=source.task in TOKEN_LEVEL_TASKS, description=f"parity: {stage}"
    )
    return parity_row(stage, type(source.model).__name__, source.task, evaluation, outputs, thresholds)
