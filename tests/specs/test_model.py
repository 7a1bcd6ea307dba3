"""specs.model: the position embedding and dropout a model states, and the files written before them."""

import pydantic
import pytest

from sp_planner.catalog import load_model
from sp_planner.specs.model import ModelSpec

BASE = load_model("Llama-3-8B").model_dump(exclude={"position_embedding"})


def test_a_spec_without_the_field_is_a_rope_model():
    # Every model file before the field described a RoPE model (the cost model charged RoPE to all).
    assert ModelSpec.model_validate(BASE).position_embedding == "rope"


@pytest.mark.parametrize("kind", ["rope", "learned_absolute", "alibi", "none"])
def test_megatrons_names_and_alibi_are_accepted(kind):
    assert ModelSpec.model_validate({**BASE, "position_embedding": kind}).position_embedding == kind


def test_an_unknown_position_embedding_is_refused_with_the_choices():
    with pytest.raises(pydantic.ValidationError, match="learned_absolute"):
        ModelSpec.model_validate({**BASE, "position_embedding": "sinusoidal"})


def test_a_spec_without_dropout_fields_trains_without_dropout():
    # Files written before the fields described Llama-style models, timed without dropout.
    spec = ModelSpec.model_validate({k: v for k, v in BASE.items() if not k.endswith("_dropout")})
    assert (spec.hidden_dropout, spec.attention_dropout) == (0.0, 0.0)
    megatron = ModelSpec.model_validate({**BASE, "hidden_dropout": 0.1, "attention_dropout": 0.1})
    assert (megatron.hidden_dropout, megatron.attention_dropout) == (0.1, 0.1)


@pytest.mark.parametrize("field,value", [("hidden_dropout", 1.0), ("attention_dropout", -0.1)])
def test_a_dropout_outside_0_to_1_is_refused(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        ModelSpec.model_validate({**BASE, field: value})


def test_nope_layers_default_to_none_and_need_rope_on_the_others():
    assert ModelSpec.model_validate({k: v for k, v in BASE.items() if k != "num_nope_layers"}).num_nope_layers == 0
    assert ModelSpec.model_validate({**BASE, "num_nope_layers": 8}).num_nope_layers == 8  # Llama-3-8B: 32 layers
    with pytest.raises(pydantic.ValidationError, match=r"num_nope_layers \(32\) must be below num_layers \(32\)"):
        ModelSpec.model_validate({**BASE, "num_nope_layers": 32})
    with pytest.raises(pydantic.ValidationError, match="needs position_embedding rope"):
        ModelSpec.model_validate({**BASE, "position_embedding": "learned_absolute", "num_nope_layers": 8})


def test_sparse_attention_selects_keys_for_mla_layers_only():
    dsa = {"index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048}
    with pytest.raises(pydantic.ValidationError, match=r"dsa \(DeepSeek Sparse Attention\) .* it needs mla"):
        ModelSpec.model_validate({**BASE, "dsa": dsa})
    v3 = load_model("DeepSeek-V3").model_dump()
    assert ModelSpec.model_validate({**v3, "dsa": dsa}).dsa.index_topk == 2048
    assert ModelSpec.model_validate(v3).dsa is None  # a file written before the field: dense MLA
