"""Optimize stage: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, Gelu ...)."""

from __future__ import annotations

import logging

from edgec.pipeline import Context

# The transformers optimizer's BERT fusions also match these encoders' graphs (MPNet's relative
# position bias blocks the attention fusion; the rest still applies).
_FUSION_MODEL_TYPE = "bert"


def optimize(ctx: Context) -> Context:
    """Write work/optimize/model.onnx with fused transformer ops; the note counts them."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    out_dir = ctx.workdir / "optimize"
    out_dir.mkdir(parents=True)
    options = FusionOptions(_FUSION_MODEL_TYPE)
    options.enable_gelu_approximation = False  # tanh-approximated Gelu costs accuracy for little speed on CPU
    options.enable_embed_layer_norm = False  # keeps the embeddings as plain ops, which every back end runs
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # opt_level 0: Python fusions only; ONNX Runtime's own graph optimizations run at session load,
    # so the file stays portable across CPUs and runtime versions.
    optimized = optimize_model(
        str(ctx.onnx_path), model_type=_FUSION_MODEL_TYPE, num_heads=0, hidden_size=0,
        optimization_options=options, opt_level=0, use_gpu=False,
    )
    fused = {op: n for op, n in sorted(optimized.get_fused_operator_statistics().items()) if n}
    path = out_dir / "model.onnx"
    optimized.model.producer_name, optimized.model.producer_version = "edgec", ""
    optimized.save_model_to_file(str(path))
    return ctx.with_note("optimize", {"fused_ops": fused}, onnx_path=path)
