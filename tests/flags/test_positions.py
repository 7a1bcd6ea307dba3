"""flags.positions: what the Megatron-based emitters say --max-position-embeddings means for the
model's position embedding (Megatron --position-embedding-type, arguments.py d98e8a64dd 2397-2398)."""

import pytest

from sp_planner.flags import render_flags
from sp_planner.flags.positions import position_note


@pytest.mark.parametrize("kind,expected", [
    ("rope", "--max-position-embeddings is set to seq_len 32768; use a RoPE base/scaling suited to that length."),
    ("learned_absolute", "learned position table's length"),
    ("none", "pass --position-embedding-type none"),
])
def test_the_note_follows_the_position_embedding(build, kind, expected):
    model = build.llama2_7b.model_copy(update={"position_embedding": kind})
    flags = render_flags("megatron", build.request(model, 32768, 1, tp=8))
    assert flags.supported and any(expected in note for note in flags.notes)
    # Only a RoPE model is told about a RoPE base.
    assert any("RoPE" in note for note in flags.notes) == (kind == "rope")


def test_mindspeed_takes_alibi_as_a_position_embedding_type(build):
    alibi = build.request(build.llama2_7b.model_copy(update={"position_embedding": "alibi"}), 32768, 1, tp=8)
    assert "pass --position-embedding-type alibi" in position_note(alibi, mindspeed=True)



def test_megatron_lm_refuses_alibi(build):
    """Megatron-LM's --position-embedding-type choices have no alibi (arguments.py d98e8a64dd
    2397-2398), so the plan cannot run as planned there; MindSpeed's alone take it."""
    alibi = build.request(build.llama2_7b.model_copy(update={"position_embedding": "alibi"}), 32768, 1, tp=8)
    flags = render_flags("megatron", alibi)
    assert not flags.supported and flags.text == ""
    assert "Llama-2-7B's ALiBi cannot be expressed: Megatron-LM's --position-embedding-type has no alibi" \
        in flags.reason
    assert render_flags("mindspeed", alibi).supported
    # The same plan with RoPE is expressed.
    assert render_flags("megatron", build.request(build.llama2_7b, 32768, 1, tp=8)).supported
