"""ONNX Runtime back end (x86-64 and ARM64 CPUs): the model file, the tokenizer, the device runner (predict.py), and
the files other libraries load the folder by."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import cast

from edgec.artifacts.stage_notes import OrtEmitNote
from edgec.backends.device_runner import RUNNER_FILE, write_device_runner
from edgec.backends.interop import write_library_files
from edgec.backends.registry import Backend, register_backend
from edgec.pipeline import Context
from edgec.stages.export import export

MODEL_FILE = "model.onnx"


def copy_model_and_tokenizer(ctx: Context, staging: Path) -> tuple[Path, tuple[Path, ...]]:
    """The context's ONNX as model.onnx and the tokenizer's files: what every artifact holds."""
    model = staging / MODEL_FILE
    shutil.copyfile(cast(Path, ctx.onnx_path), model)
    tokenizer_files = ctx.source.tokenizer.save_pretrained(str(staging))
    return model, (model, *sorted(Path(f) for f in tokenizer_files if Path(f).exists()))


def emit(ctx: Context, staging: Path) -> Context:
    """model.onnx, the tokenizer, and what sentence-transformers, Optimum and transformers need to load the folder."""
    model, files = copy_model_and_tokenizer(ctx, staging)
    files += write_library_files(ctx, staging)
    runner = write_device_runner(staging)
    note = OrtEmitNote(model=MODEL_FILE, runner=RUNNER_FILE if runner else None)
    return ctx.with_note("emit", note, onnx_path=model, files=(*files, *runner))


BACKEND = register_backend(
    Backend(
        name="ort",
        emit=emit,
        needs="onnxruntime",
        needs_module="onnxruntime",
        export=functools.partial(export, token_states=True),
        emulates=True,
        profiles_here=True,
    )
)
