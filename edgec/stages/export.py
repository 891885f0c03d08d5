"""Export stage: the PyTorch model to ONNX with dynamic batch and sequence axes."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx

from edgec.artifacts.stage_notes import ExportNote
from edgec.ops.pooling import append_pooling
from edgec.pipeline import Context
from edgec.source import TOKEN_STATES

# edgec task -> the task name optimum's exporter uses.
_OPTIMUM_TASKS = {
    "feature-extraction": "feature-extraction",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
}


def export(ctx: Context, *, token_states: bool = False) -> Context:
    """Write work/export/model.onnx; feature extraction gets its pooling appended as ONNX nodes (and, with
    `token_states`, keeps the token states as a second output)."""
    out_dir = ctx.workdir / "export"
    out_dir.mkdir(parents=True)
    path = _export_with_optimum(ctx, out_dir)
    model = onnx.load(str(path))
    if ctx.source.task == "feature-extraction":
        pooling = ctx.source.pooling
        # The ONNX Runtime back end asks for the token states: sentence-transformers' ONNX backend and Optimum's
        # ORTModelForFeatureExtraction read `last_hidden_state` and pool it themselves (edgec's tools read only
        # sentence_embedding). Other back ends build what the device runs from this graph and get one output.
        append_pooling(
            model,
            hidden=TOKEN_STATES,
            mask="attention_mask",
            mode=pooling.mode,
            normalize=pooling.normalize,
            output="sentence_embedding",
            keep_hidden=token_states,
        )
    model.producer_name, model.producer_version = "edgec", ""  # no tool versions inside the model file
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    note = ExportNote(exporter="optimum-onnx", opset=ctx.recipe.opset, inputs=[i.name for i in model.graph.input])
    return ctx.with_note("export", note, onnx_path=path)


def _export_with_optimum(ctx: Context, out_dir: Path) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model

    with quiet("optimum", "transformers", "torch.onnx"):
        onnx_export_from_model(
            ctx.source.model,
            out_dir,
            task=_OPTIMUM_TASKS[ctx.source.task],
            opset=ctx.recipe.opset,
            do_validation=False,  # edgec's own parity row follows this stage
        )
    return out_dir / "model.onnx"  # optimum also saves config and tokenizer there; the artifact writes its own


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Exporters warn and log at length about tracing details that concern no user: errors only, while inside."""
    found = [logging.getLogger(name) for name in loggers]
    levels = [logger.level for logger in found]
    for logger in found:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(found, levels):
            logger.setLevel(level)
