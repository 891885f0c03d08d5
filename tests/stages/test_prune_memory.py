"""Pruning's memory does not grow with the calibration texts beyond one layer's inputs.

Mask tuning streams layer inputs (one layer's hidden states for all texts, pruned model and target) and the
importance pass sums Fisher blocks batch by batch. Caching every layer's inputs instead would grow with
layers x texts; this model has 12 layers, so the bound below (3 layers' worth) would be broken many times over.
Minutes long on 2 shared cores, so it runs with EDGEC_DEEP=1 only (as the deep property tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import WORDS, _tokenizer

SCRIPT = """
import json, resource, sys, numpy as np
from edgec.data import Dataset, Example
from edgec.recipe import PruneConfig
from edgec.source import load_source
from edgec.stages.prune import prune_source
folder, count = sys.argv[1], int(sys.argv[2])
words = json.loads(sys.argv[3])
rng = np.random.default_rng(0)
texts = [" ".join(rng.choice(words, size=12)) for _ in range(count)]
source = load_source(folder)
result = prune_source(source, Dataset(tuple(Example(t) for t in texts), "random"), PruneConfig(fraction=0.5, calib_samples=count), max_length=64, seed=0)
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "tokens": result.summary.mean_tokens * count}))
"""


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    """12 layers of width 256: one layer's inputs for 2,048 texts are ~30 MB, all layers' several hundred."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("deep")
    tokenizer = _tokenizer(folder, "bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        num_hidden_layers=12,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=72,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _peak(folder, count: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), str(count), json.dumps(WORDS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.environ.get("EDGEC_DEEP"), reason="minutes long: set EDGEC_DEEP=1 to run")
def test_peak_memory_at_2048_texts_grows_by_at_most_a_few_layers_of_inputs(deep_model):
    small, large = _peak(deep_model, 256), _peak(deep_model, 2048)
    layer_inputs_mb = large["tokens"] * 256 * 4 / 2**20  # one layer's hidden states, fp32, real tokens of 2,048 texts
    growth_mb = (large["peak_kb"] - small["peak_kb"]) / 1024
    assert growth_mb < 3 * layer_inputs_mb + 32, (growth_mb, layer_inputs_mb)
