"""specs.attention: the softmax kind (Megatron-Core's and Transformer Engine's names) a model states."""

import pytest
from pydantic import ValidationError

from sp_planner.specs.attention import LEARNABLE, VANILLA
from sp_planner.specs.model import ModelSpec

SHAPE = dict(name="m", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16,
             vocab_size=100)


def test_softmax_type_defaults_to_vanilla_and_takes_megatrons_names():
    assert ModelSpec(**SHAPE).softmax_type == VANILLA == "vanilla"
    assert ModelSpec(**SHAPE, softmax_type="learnable").softmax_type == LEARNABLE
    assert ModelSpec(**SHAPE, softmax_type="off-by-one").softmax_type == "off-by-one"
    with pytest.raises(ValidationError, match="softmax_type"):
        ModelSpec(**SHAPE, softmax_type="sinks")
