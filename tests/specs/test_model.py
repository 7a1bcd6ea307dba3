"""specs.model: the position embedding a model states, and the files written before it."""

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
