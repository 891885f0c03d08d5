"""The importance pass's cap on each calibration text's share of the Fisher information."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.data import read_dataset
from edgec.errors import ConfigError
from edgec.recipe import PruneConfig
from edgec.running.inference import encode_batches
from edgec.source import load_source
from edgec.stages.prune import calibration_batches
from edgec.stages.prune_fisher import Fisher, fisher_information


def _norm(fisher: Fisher) -> float:
    """A one-text Fisher's squared gradient norm: the trace of its blocks and its layer gates."""
    return sum(float(np.trace(b)) for b in fisher.heads + fisher.neurons) + float(fisher.layers.sum())


@pytest.mark.parametrize("clip", [0.5, 0.9])
def test_capped_fisher_equals_each_text_weighted_by_its_cap(tiny_models, data_files, clip):
    """One pass with the cap equals Σ_n min(1, cap / ‖g_n‖²) g_n g_nᵀ computed text by text (labelled classifier:
    the loss is deterministic, so batching changes nothing but padding)."""
    source = load_source(tiny_models("bert", "sequence-classification"))
    batches, labels = calibration_batches(source, read_dataset(data_files["labels"]), 64)
    capped = fisher_information(source, batches, labels, 0, blocks=True, clip=clip)
    texts = sum(len(b.indices) for b in batches)
    singles = [
        fisher_information(source, [b], labels, 0, blocks=True, clip=None)
        for b in encode_batches(source.tokenizer, read_dataset(data_files["labels"]), max_length=64, batch_size=1)
    ]
    norms = np.array([_norm(f) for f in singles])
    cap = np.quantile(norms, clip)
    weights = np.minimum(1.0, cap / norms)
    assert capped.capped == int((norms > cap).sum()) > 0
    assert len(singles) == texts
    for kind in ("heads", "neurons"):
        for i, block in enumerate(getattr(capped, kind)):
            expected = sum(w * getattr(f, kind)[i] for w, f in zip(weights, singles))
            np.testing.assert_allclose(block, expected, rtol=2e-3, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(capped.layers, sum(w * f.layers for w, f in zip(weights, singles)), rtol=2e-3)


def test_a_cap_at_the_largest_norm_changes_nothing(tiny_models, data_files):
    source = load_source(tiny_models("bert", "sequence-classification"))
    batches, labels = calibration_batches(source, read_dataset(data_files["labels"]), 64)
    uncapped = fisher_information(source, batches, labels, 0, blocks=False, clip=None)
    at_max = fisher_information(source, batches, labels, 0, blocks=False, clip=1.0)
    assert at_max.capped == 0
    for a, b in zip(uncapped.heads + uncapped.neurons, at_max.heads + at_max.neurons):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("clip", [0.0, 1.5, -0.1])
def test_importance_clip_must_be_a_quantile(clip):
    with pytest.raises(ConfigError, match="importance_clip"):
        PruneConfig(fraction=0.5, importance_clip=clip)
