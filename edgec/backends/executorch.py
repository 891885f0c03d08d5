"""ExecuTorch back end: a .pte program lowered to the XNNPACK delegate, and the runtime that runs it.

The only module of edgec that imports executorch (and torchao's PT2E quantization, which executorch's XNNPACK
quantizer plugs into), and only inside functions: edgec imports and its other back ends work without them.

The program is made from the PyTorch model itself (after pruning and distillation), not from ONNX:
torch.export with a dynamic batch and sequence length, for int8 the PT2E flow (XNNPACKQuantizer's symmetric
per-channel weights and per-tensor activations, calibrated on the build's calibration texts; see quantizer()), then
to_edge_transform_and_lower with the XNNPACK partitioner. Parity runs the .pte through ExecuTorch's own Python
runtime (pte_forward), against the same fp32 reference and thresholds as every other target.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch

from edgec.artifacts.artifact import Artifact
from edgec.artifacts.stage_notes import ExecuTorchEmitNote
from edgec.backends.registry import Backend, register_backend
from edgec.compression import surgery
from edgec.errors import BackendUnavailable, InputError
from edgec.parity.evalset import eval_texts
from edgec.pipeline import Context
from edgec.running.inference import Feeds, Forward
from edgec.stages.export import quiet

MODEL_FILE = "model.pte"
# The program's input and output names in its positional order: ExecuTorch methods take and return plain lists,
# so a device app (and pte_forward) needs them beside the .pte.
IO_FILE = "model_io.json"
INSTALL_HINT = "pip install 'edgec[executorch]'"
# Largest batch the program accepts: the dynamic batch dimension needs an upper bound, and 32 is the batch edgec's
# parity runs use. A device feeding more splits its batch.
MAX_BATCH = 32
_CALIBRATION_BATCH = 16


def require_executorch() -> None:
    try:
        import executorch.exir
        import executorch.runtime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"the executorch target needs the executorch package ({exc.name} is missing); {INSTALL_HINT}"
        ) from None


def _encode(ctx: Context, texts: list[str], pairs: Sequence[str | None] | None) -> tuple[torch.Tensor, ...]:
    """The model's inputs, in source.input_names order, for a list of texts (padded to their longest)."""
    encoded = ctx.source.tokenizer(
        texts, pairs, padding=True, truncation=True, max_length=ctx.recipe.max_length, return_tensors="pt"
    )
    return tuple(encoded[name].to(torch.int64) for name in ctx.source.input_names)


def _calibration_batches(ctx: Context) -> Iterator[tuple[torch.Tensor, ...]]:
    texts = eval_texts(ctx.source.task, ctx.calib)
    pairs = [e.text_pair for e in texts.examples] if texts.has_pairs else None
    for start in range(0, len(texts), _CALIBRATION_BATCH):
        end = start + _CALIBRATION_BATCH
        yield _encode(ctx, texts.texts[start:end], pairs[start:end] if pairs else None)


def _export(module: torch.nn.Module, ctx: Context, example: tuple[torch.Tensor, ...]):
    """torch.export with dynamic batch (1..MAX_BATCH) and sequence length (2..max_length) on every input."""
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=MAX_BATCH), Dim("seq", min=2, max=ctx.recipe.max_length)
    shapes = tuple({0: batch, 1: seq} for _ in example)
    try:
        return torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types for code it cannot trace
        raise InputError(
            f"torch.export could not capture {ctx.source.model_type} for ExecuTorch ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}); use an ONNX Runtime target for this model"
        ) from None


# Keeping them float is not offered: XNNPACKQuantizer.set_module_name refuses a None config ("not supported yet").
FFN_OUTPUT_LAYOUTS = ("dynamic", "static")
FFN_OUTPUT = "dynamic"
"""How int8 builds quantize the FFN output projections' inputs. Chosen on STS-B dev (validation), never on the test
pairs the benchmark reports: `python benchmarks/executorch_minilm.py` measures each layout first and records the choice."""


def quantizer(module: torch.nn.Module, *, ffn_output: str):
    """XNNPACK's PT2E quantizer as edgec sets it: the Linear layers only, static int8 (calibrated), except the FFN output
    projections, whose inputs (after GELU) hold outlier activations that one static per-tensor range loses;
    `ffn_output` is "dynamic" (int8 with per-run ranges, XNNPACK's QD8 kernels) or "static".

    The residual adds, LayerNorms, softmax and attention products stay float: with XNNPACKQuantizer's global config
    (which also quantizes add and mul) MiniLM's STS-B Spearman fell 5.4 points, 4.8 with the FFN outputs dynamic.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    chosen = XNNPACKQuantizer().set_module_type(torch.nn.Linear, get_symmetric_quantization_config(is_per_channel=True))
    if ffn_output == "dynamic":
        dynamic = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
        for name in ffn_output_names(module):
            chosen.set_module_name(name, dynamic)
    return chosen


def ffn_output_names(module: torch.nn.Module) -> list[str]:
    """Qualified names (in `module`) of every encoder layer's FFN output Linear."""
    model = cast(torch.nn.Module, module.model if hasattr(module, "model") else module)
    parts = surgery.parts_for(model)
    outputs = {id(surgery.get(layer, parts.ffn_out)) for layer in surgery.encoder_layers(model)}
    return [
        name for name, child in module.named_modules() if id(child) in outputs and isinstance(child, torch.nn.Linear)
    ]


def _quantize(exported, module: torch.nn.Module, ctx: Context, example: tuple[torch.Tensor, ...]):
    """PT2E int8 with XNNPACK's quantizer, calibrated on the build's calibration texts; returns a new export."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(exported.module(), quantizer(module, ffn_output=FFN_OUTPUT))
    with torch.no_grad():
        for inputs in _calibration_batches(ctx):
            prepared(*inputs)
    return _export(convert_pt2e(prepared), ctx, example)


def lower(ctx: Context, out: Path) -> dict:
    """Write the .pte for ctx.source at `out`; returns what the manifest says about it."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = ctx.source.reference_module().eval()
    texts = eval_texts(ctx.source.task, ctx.calib)
    # Two examples of different lengths: a batch of 1 or a fixed length would let torch.export specialize on it.
    sample = texts.examples[:2] if len(texts) >= 2 else texts.examples * 2
    example = _encode(ctx, [e.text for e in sample], [e.text_pair for e in sample] if texts.has_pairs else None)
    with quiet("torch", "torch._dynamo", "torch.export", "executorch", "torchao"):
        exported = _export(module, ctx, example)
        if ctx.precision.needs.integer:
            exported = _quantize(exported, module, ctx, example)
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    out.write_bytes(program.buffer)
    delegated = sum(
        1
        for node in program.exported_program().graph.nodes
        if node.target == torch.ops.higher_order.executorch_call_delegate
    )
    return {
        "delegate": "XnnpackBackend",
        "delegated_partitions": delegated,
        "quantization": "PT2E XNNPACKQuantizer on the Linear layers: int8 symmetric per-channel weights; int8 per-tensor "
        "activations, static (calibrated) except the FFN output projections' (dynamic, per run)"
        if ctx.precision.needs.integer
        else "none (fp32)",
        "inputs": {
            name: {"dtype": "int64", "batch": [1, MAX_BATCH], "sequence": [2, ctx.recipe.max_length]}
            for name in ctx.source.input_names
        },
    }


def io_signature(ctx: Context) -> dict:
    """The manifest's inputs and outputs (names, dtypes, symbolic shapes), as manifest_for writes them for ONNX."""
    token_level = ctx.source.task in ("token-classification", "question-answering")
    outputs = [
        {
            "name": name,
            "dtype": "float32",
            "shape": ["batch", "sequence", *([] if name != "logits" else ["labels"])]
            if token_level
            else ["batch", "features"],
        }
        for name in ctx.source.output_names
    ]
    inputs = [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in ctx.source.input_names]
    return {"inputs": inputs, "outputs": outputs}


def emit(ctx: Context, staging: Path) -> Context:
    """model.pte (XNNPACK-delegated) and the tokenizer; parity runs on the .pte through ExecuTorch's runtime."""
    model, io = staging / MODEL_FILE, io_signature(ctx)
    program = lower(ctx, model)
    (staging / IO_FILE).write_text(json.dumps(io, indent=2) + "\n")
    tokenizer_files = ctx.source.tokenizer.save_pretrained(str(staging))
    files = (model, staging / IO_FILE, *sorted(Path(f) for f in tokenizer_files if Path(f).exists()))
    note = ExecuTorchEmitNote(model=MODEL_FILE, io_file=IO_FILE, io=io, **program)
    return ctx.with_note("emit", note, files=files, parity_model=model)


def set_threads(threads: int) -> None:
    """Size ExecuTorch's shared thread pool (XNNPACK's kernels run on it); by default it takes every core."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(
        threads
    )  # the runtime's own knob; its Python name says it must not race a run


def pte_forward(model_path: Path) -> Forward:
    """A Forward over a .pte program run by ExecuTorch's Python runtime (XNNPACK kernels on this CPU); the inputs and
    outputs are named by the model_io.json beside it."""
    require_executorch()
    from executorch.runtime import Runtime

    model_path = Path(model_path)
    io_file = model_path.with_name(IO_FILE)
    if not io_file.is_file():
        raise InputError(f"{model_path} has no {IO_FILE} beside it (its input and output names); rebuild the artifact")
    io = json.loads(io_file.read_text())
    inputs, outputs = [i["name"] for i in io["inputs"]], [o["name"] for o in io["outputs"]]
    method = Runtime.get().load_program(model_path).load_method("forward")

    def forward(feeds: Feeds) -> dict[str, np.ndarray]:
        values = method.execute(
            [torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=np.int64)) for name in inputs]
        )
        return {name: value.float().numpy() for name, value in zip(outputs, values)}

    return forward


def predict(artifact: Artifact, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
    """`edgec run` on a .pte: ExecuTorch runs where the ONNX Runtime device runner cannot."""
    encoded = artifact.tokenizer()(
        texts, pairs, padding=True, truncation=True, max_length=artifact.manifest.recipe.max_length, return_tensors="np"
    )
    return pte_forward(artifact.model_path)({k: v.astype(np.int64) for k, v in encoded.items()})


BACKEND = register_backend(
    Backend(
        name="executorch",
        emit=emit,
        needs="'edgec[executorch]'",
        needs_module="executorch",
        export=None,  # issue 18: lowered from the PyTorch model (int8 by PT2E inside emit), no ONNX
        preflight=lambda profile, out: (
            require_executorch()
        ),  # issue 18: fail before any work where the package is missing
        predict=predict,
    )
)
