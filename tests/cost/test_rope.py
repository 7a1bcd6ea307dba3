"""cost.rope: RoPE's HBM traffic and launches, charged only to models with rotary embeddings."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.cuda_graphs import ATTN
from sp_planner.cost.gemm_work import elementwise_bytes_per_token
from sp_planner.cost.host import layer_host_ops
from sp_planner.cost.rope import has_rope, rope_elements_per_token, rope_host_ops

GPT3 = load_model("GPT-3-175B")  # learned absolute positions
GPT3_ROPE = GPT3.model_copy(update={"position_embedding": "rope"})


def test_gpt3_175b_moves_no_rope_bytes_by_hand():
    # h = q = kv = 12288, GeLU with ffn 4h: two norms and two residual adds 10h, the GeLU reads and
    # writes ffn (8h): 18h elements of 2 bytes a token and layer, forward.
    assert elementwise_bytes_per_token(GPT3) == 2 * 18 * 12288 == 442_368
    # RoPE would read and write q and k, 2 bytes each: 2 x 2 x (q + kv) bytes more.
    assert elementwise_bytes_per_token(GPT3_ROPE) - elementwise_bytes_per_token(GPT3) == 2 * 2 * 24576 == 98_304


def test_rope_models_keep_their_traffic():
    # Llama-3-8B: 10h + 2 (q + kv) + 3 ffn = 40960 + 2 x 5120 + 3 x 14336 = 94208 elements.
    assert elementwise_bytes_per_token(load_model("Llama-3-8B")) == 2 * 94_208


@pytest.mark.parametrize("kind", ["learned_absolute", "alibi", "none"])
def test_models_without_rotary_embeddings_run_none_of_it(kind):
    model = GPT3.model_copy(update={"position_embedding": kind})
    assert not has_rope(model)
    assert (rope_elements_per_token(model), rope_host_ops(model)) == (0, (0, 0))
    assert rope_elements_per_token(GPT3_ROPE) == 2 * 24576 and rope_host_ops(GPT3_ROPE) == (2, 2)


def test_host_ops_leave_out_ropes_launches():
    args = dict(tp=1, ep=1, etp=1, low_precision=False, full_recompute=False)
    # cost.host: a dense layer's 12 forward and 20 backward ops hold RoPE's 2 + 2.
    assert [float(x) for x in layer_host_ops(GPT3_ROPE, **args)] == [12, 20]
    assert [float(x) for x in layer_host_ops(GPT3, **args)] == [10, 18]
    # A graph of the attention replays it as one op with or without RoPE: 10 - 5 + 1 and 18 - 10 + 1.
    graphed = dict(args, cuda_graphs=frozenset({ATTN}))
    assert [float(x) for x in layer_host_ops(GPT3, **graphed)] == [6, 9]
    assert [float(x) for x in layer_host_ops(GPT3_ROPE, **graphed)] == [6, 9]
