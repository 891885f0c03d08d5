"""Optimization profiles from a length histogram, and their trtexec spelling."""

import numpy as np

from edgec.ops.trt_shapes import length_histogram, optimization_profile, round_up, trtexec_shapes


def test_opt_sits_at_the_median_rounded_to_a_tile_and_max_at_the_limits():
    lengths = np.array([5, 9, 12, 13, 14, 30, 200])
    profile = optimization_profile(["input_ids", "attention_mask"], lengths, max_batch=16, opt_batch=2, max_seq_len=128)
    assert profile["input_ids"] == {"min": [1, 1], "opt": [2, 16], "max": [16, 128]}
    assert profile["attention_mask"] == profile["input_ids"]


def test_opt_never_exceeds_max():
    profile = optimization_profile(["input_ids"], np.array([300, 310]), max_batch=4, opt_batch=1, max_seq_len=128)
    assert profile["input_ids"]["opt"] == [1, 128]


def test_histogram_reports_what_does_not_fit():
    histogram = length_histogram(np.array([10] * 9 + [300]), max_seq_len=256)
    assert histogram["longest"] == 300 and histogram["share_within_max"] == 0.9 and histogram["p50"] == 10


def test_trtexec_shape_strings():
    profile = {
        "input_ids": {"min": [1, 1], "opt": [1, 16], "max": [8, 64]},
        "attention_mask": {"min": [1, 1], "opt": [1, 16], "max": [8, 64]},
    }
    assert trtexec_shapes(profile, "max") == "input_ids:8x64,attention_mask:8x64"
    assert round_up(17) == 24 and round_up(16) == 16
