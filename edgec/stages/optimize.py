"""Optimize stage: ONNX Runtime's transformer fusions, laid out for its CPU kernels."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from edgec.artifacts.stage_notes import OptimizeNote
from edgec.ops.attention_fusion import fuse_biased_attention
from edgec.ops.disentangled_attention import fuse_disentangled_attention
from edgec.ops.graph import residual_adds_to_sum, weightless
from edgec.ops.rotary_attention import fuse_rotary_attention
from edgec.pipeline import Context

# The transformers optimizer's BERT fusions also match these encoders' graphs (MPNet's relative
# position bias blocks its attention fusion; edgec's own rewrite, ops.attention_fusion, fuses that; ModernBERT's rotary
# attention and DeBERTa's disentangled attention match none of them: ops.rotary_attention and
# ops.disentangled_attention fuse those).
_FUSION_MODEL_TYPE = "bert"


def optimize(ctx: Context) -> Context:
    """Write work/optimize/model.onnx with fused transformer ops; the note counts them.

    Choices, each measured on all-MiniLM-L6-v2 with ORT 1.32 on a 2-core AVX512-VNNI CPU:
    - MultiHeadAttention rather than Attention: Q, K and V stay separate MatMuls, which static int8
      quantizes (the packed Attention op keeps its QKV projection in float). Attention that adds a
      position bias (MPNet) is fused by edgec's own rewrite, the bias fed as the op's attention_bias, and so is
      DeBERTa's disentangled attention (its c2p + p2c terms as the bias); ModernBERT's rotary attention by another,
      with RotaryEmbedding before it (its Wqkv stays one quantizable MatMul).
    - no SkipLayerNormalization, and residual joins as Sum (ops.graph.residual_adds_to_sum): ORT's CPU
      SkipLayerNormalization kernel was ~6x slower than Sum + LayerNormalization.
    - tanh-approximated Gelu (FastGelu, ~25% cheaper) only for int8 precisions, where its error is far
      below the quantization error; fp32 and fp16 keep exact Gelu.
    - no EmbedLayerNormalization: the embedding tables stay plain Gathers, which int8 stores in 8 bits.
    """
    out_dir = ctx.workdir / "optimize"
    out_dir.mkdir(parents=True)
    optimized = fuse(cast(Path, ctx.onnx_path), gelu_approximation=ctx.precision.needs.integer)
    counts = optimized.get_fused_operator_statistics()
    model = optimized.model
    biased = fuse_biased_attention(model) if ctx.target.fuse_biased_attention else 0
    disentangled = fuse_disentangled_attention(model) if ctx.target.fuse_biased_attention else 0
    rotary = fuse_rotary_attention(model, _max_positions(ctx)) if ctx.target.fuse_rotary_attention else 0
    counts["MultiHeadAttention"] = counts.get("MultiHeadAttention", 0) + biased + disentangled + rotary
    counts["RotaryEmbedding"] = counts.get("RotaryEmbedding", 0) + 2 * rotary
    fused = {op: n for op, n in sorted(counts.items()) if n}
    sums = residual_adds_to_sum(model)
    model.producer_name, model.producer_version = "edgec", ""
    path = out_dir / "model.onnx"
    optimized.save_model_to_file(str(path))  # also declares the com.microsoft opset the fused ops need
    note = OptimizeNote(
        fused_ops=fused,
        residual_sums=sums,
        biased_attention=biased,
        rotary_attention=rotary,
        disentangled_attention=disentangled,
    )
    return ctx.with_note("optimize", note, onnx_path=path)


def _max_positions(ctx: Context) -> int:
    """The positions a rotary model's cos/sin tables cover: the model's own limit, not the build's max_length, which
    callers of the artifact's ONNX file may exceed (8192 for ModernBERT: 4 tables of 1 MiB)."""
    return int(getattr(ctx.source.model.config, "max_position_embeddings", ctx.source.max_length))


def fuse(path: Path, *, gelu_approximation: bool) -> Any:
    """ONNX Runtime's transformers optimizer with edgec's choices (see optimize) on the model at `path`: its OnnxModel."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: Python fusions only; ONNX Runtime's own graph optimizations run at session load,
    # so the file stays portable across CPUs and runtime versions.
    # num_heads and hidden_size 0: ORT reads each layer's heads and head size from its Q Reshape, which pruning varies
    # by layer. Its log "Input hidden size (h) is not same as weight matrix dimension of q,k,v (w)" compares those
    # heads x head_dim with the stream's width, which differ after head or hidden pruning; it fuses all the same.
    with _shape_inference_without_weights(), _without_fusion_warnings():
        return optimize_model(
            str(path),
            model_type=_FUSION_MODEL_TYPE,
            num_heads=0,
            hidden_size=0,
            optimization_options=fusion_options(gelu_approximation=gelu_approximation),
            opt_level=0,
            use_gpu=False,
        )


def fusion_options(*, gelu_approximation: bool) -> Any:
    """The FusionOptions optimize's docstring gives the reasons for."""
    from onnxruntime.transformers.fusion_options import AttentionOpType, FusionOptions

    options = FusionOptions(_FUSION_MODEL_TYPE)
    options.use_multi_head_attention = True
    options.set_attention_op_type(AttentionOpType.MultiHeadAttention)
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_embed_layer_norm = False
    options.enable_gelu_approximation = gelu_approximation
    return options


@contextlib.contextmanager
def _without_fusion_warnings() -> Iterator[None]:
    """Inside, log records below ERROR are dropped. ORT's fusion modules log through loggers named after their bare
    module names (onnxruntime.transformers puts its folder on sys.path), which no "onnxruntime" logger's level reaches,
    and their warnings (the hidden-size one in fuse) describe edgec's pruned graphs wrongly."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _shape_inference_without_weights() -> Iterator[None]:
    """Inside, ORT's optimizer infers shapes on ops.graph.weightless copies of the model; the optimized model is the same.

    Its fusions ask symbolic shape inference for shapes (attention's mask check, no-op Reshape removal), which copies
    the model it is given, weights included, once per pass and once more per If subgraph: +986 MiB for a 58 MiB
    DeBERTa-v3 at base width with 2 layers (+103 MiB without the weights), and a 12-layer base build passed 14 GiB in
    this stage. Weights only give it their shapes, which the copy declares.
    """
    # onnxruntime.transformers puts its folder on sys.path, and OnnxModel imports the helper by this name at each call.
    module: Any = importlib.import_module("shape_infer_helper")
    original = module.SymbolicShapeInferenceHelper

    def on_weightless_copy(model, *args, **kwargs):
        return original(weightless(model), *args, **kwargs)

    module.SymbolicShapeInferenceHelper = on_weightless_copy
    try:
        yield
    finally:
        module.SymbolicShapeInferenceHelper = original
