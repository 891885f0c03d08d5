"""Precision: parsed at the edge, one table of what each needs."""

from __future__ import annotations

import json

import pytest

from edgec.errors import ConfigError
from edgec.precision import Precision
from edgec.recipe import QuantConfig
from edgec.stages.quantize import QUANTIZERS


def test_words_parse_to_members_and_write_back_as_the_same_words():
    assert QuantConfig(precision="int8-dynamic").precision is Precision.INT8_DYNAMIC
    assert json.dumps({"precision": Precision.INT8}) == '{"precision": "int8"}'
    assert f"{Precision.FP16}" == "fp16"


def test_an_unknown_word_is_one_line_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^unknown precision 'int4'; use one of fp32, fp16, int8-dynamic, int8$"):
        QuantConfig(precision="int4")


@pytest.mark.parametrize("precision", list(Precision))
def test_every_precision_has_a_row_and_its_quantizer_exists(precision):
    needs = precision.needs
    assert (needs.quantizer is None) == ("quantize" not in needs.stages)
    assert needs.quantizer is None or needs.quantizer in QUANTIZERS
