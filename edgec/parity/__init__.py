"""Parity: how a model's outputs are compared with the fp32 reference, and the gate a build must pass.

One library for every caller (the build's stages, `edgec parity`, back ends, benchmarks), so no stage imports
another stage to measure:
- metrics: pure numeric comparisons (cosine, Spearman, agreement, KL, error statistics, non-finite counts);
- evalset: the eval data tokenized once with the reference outputs on it, validated labels, the selection split;
- gate: which thresholds a measurement misses (non-finite outputs and NaN metrics always fail);
- ledger: one row per stage, and where accuracy was first lost;
- runtime: running a model file or a PyTorch module over an EvalSet;
- golden: the sample an artifact carries to check itself with no source model.
Submodules are imported by name; this file imports nothing, so configs can use parity types without cycles.
"""
