"""Export stage for mobile accelerators (`--target mobile --accelerator coreml|nnapi|xnnpack --fixed-shape BxS`).

ONNX Runtime's NNAPI and CoreML providers take a graph only in pieces where an op, a dtype or a dynamic shape is
outside their list (onnxruntime/tools/mobile_helpers/*_supported_ops.md); each piece boundary costs a copy between
the accelerator and the CPU. This export shapes the graph for them:

- fixed input shapes (batch, sequence): every Shape / Range / Expand computed from the input sizes becomes a
  constant, which ONNX Runtime's conversion folds away;
- the additive attention mask computed once per run from the 0/1 mask with Cast, Sub and Mul (transformers' sdpa
  path builds a 4-D mask with Expand, Equal and Where, none of which CoreML takes);
- the word-embedding lookup (Gather) is the first node, left on the CPU; the token-type lookup becomes arithmetic
  (type 0's row + type_id x (row 1 - row 0)) so no second Gather cuts the graph;
- NNAPI: opset 16, where LayerNormalization is exported as its primitive ops (NNAPI has no LayerNormalization),
  and int32 token ids (NNAPI's Gather takes non-constant indices only as int32).
"""

from __future__ import annotations

import onnx
import torch

from edgec.artifacts.stage_notes import ExportNote
from edgec.errors import ConfigError, InputError
from edgec.ops.pooling import append_pooling
from edgec.pipeline import Context
from edgec.stages.export import quiet

_OPSET = {"coreml": 17, "nnapi": 16, "xnnpack": 17}


class FixedShapeModule(torch.nn.Module):
    """The model as the accelerator graph computes it: embeddings looked up once, the token type by arithmetic."""

    def __init__(self, model: torch.nn.Module, task: str, accelerator: str):
        super().__init__()
        self.model, self.task, self.accelerator = model, task, accelerator
        self.words = model.get_input_embeddings()
        types = getattr(getattr(model.base_model, "embeddings", None), "token_type_embeddings", None)
        self.type_step = (
            (types.weight[1] - types.weight[0]).detach() if types is not None and types.num_embeddings == 2 else None
        )

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        ids = input_ids.to(torch.int32) if self.accelerator == "nnapi" else input_ids
        embeds = self.words(ids)  # (batch, seq, hidden); the model adds type 0's row itself
        if token_type_ids is not None and self.type_step is not None:
            embeds = embeds + token_type_ids.unsqueeze(-1).to(embeds.dtype) * self.type_step
        out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state if self.task == "feature-extraction" else out.logits


def export_fixed(ctx: Context) -> Context:
    """Write work/export/model.onnx with the fixed input shapes and the accelerator's ops (see the module doc)."""
    settings = ctx.target.mobile
    batch, seq = settings.fixed_batch, settings.fixed_seq
    if ctx.source.task not in ("feature-extraction", "sequence-classification"):
        raise ConfigError(
            f"--accelerator graphs are made for embedding models and classifiers, not {ctx.source.task}; drop --accelerator"
        )
    if seq > ctx.source.max_length:
        raise ConfigError(
            f"--fixed-shape {batch}x{seq}: the model takes at most {ctx.source.max_length} tokens; pass a shorter sequence"
        )
    out_dir = ctx.workdir / "export"
    out_dir.mkdir(parents=True)
    path = out_dir / "model.onnx"
    model, base = ctx.source.model.eval(), ctx.source.model.base_model
    # BERT-style models pick their mask at call time from this attribute: "sdpa" builds the 4-D mask (Expand, Where),
    # anything else the additive (batch, 1, 1, seq) one from Cast, Sub and Mul, which the sdpa layers take as well.
    attention = getattr(base, "attn_implementation", None)
    names = ctx.source.input_names
    example = tuple(torch.ones((batch, seq), dtype=torch.int64) for _ in names)
    try:
        if attention is not None:
            base.attn_implementation = "eager"
        _export(
            FixedShapeModule(model, ctx.source.task, settings.accelerator),
            example,
            names,
            path,
            _OPSET[settings.accelerator],
        )
    finally:
        if attention is not None:
            base.attn_implementation = attention
    graph = onnx.load(str(path))
    if ctx.source.task == "feature-extraction":
        pooling = ctx.source.pooling
        append_pooling(
            graph,
            hidden="last_hidden_state",
            mask="attention_mask",
            mode=pooling.mode,
            normalize=pooling.normalize,
            output="sentence_embedding",
        )
    graph.producer_name, graph.producer_version = "edgec", ""
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    note = ExportNote(
        exporter="torch.onnx (TorchScript), fixed shapes",
        accelerator=settings.accelerator,
        fixed_shape=[batch, seq],
        opset=_OPSET[settings.accelerator],
        inputs=list(names),
    )
    return ctx.with_note("export", note, onnx_path=path)


def _export(module: torch.nn.Module, example: tuple, names: tuple[str, ...], path, opset: int) -> None:
    output = "last_hidden_state" if module.task == "feature-extraction" else "logits"
    try:
        with quiet("torch.onnx", "transformers"), torch.no_grad():
            torch.onnx.export(
                module,
                example,
                str(path),
                input_names=list(names),
                output_names=[output],
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types for code it cannot trace
        raise InputError(
            f"the fixed-shape export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
            "drop --accelerator to build the general mobile graph"
        ) from None
