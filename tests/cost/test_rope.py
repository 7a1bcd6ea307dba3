"""cost.rope: RoPE's HBM traffic and launches, charged only to models with rotary embeddings."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.cuda_graphs import ATTN
from sp_planner.cost.gemm_work import elementwise_bytes_per_token
from sp_planner.cost.host import layer_host_ops
from sp_planner.cost.rope import (
    dsa_rope_bytes_per_token,
    has_rope,
    rope_elements_per_token,
    rope_forward_bytes_per_token,
    rope_host_ops,
    unfused_rope_bytes_per_token,
)

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


DSV3 = load_model("DeepSeek-V3")
SCOUT = load_model("Llama-4-Scout-17B-16E")


def _rope_bytes(model):
    """elementwise_bytes_per_token's RoPE part: against the same model without rotary embeddings."""
    return elementwise_bytes_per_token(model) - elementwise_bytes_per_token(
        model.model_copy(update={"position_embedding": "none", "num_nope_layers": 0}))


def test_deepseek_v3_prices_megatrons_fused_mla_rope_kernels_by_hand():
    # 128 heads, qk_nope 128, qk_rope 64, v 128. The query kernel rotates each head's 64-wide rope
    # slice in place: 2 x 128 x 64 = 16,384 elements. The key/value split reads kv (128 x (128 + 128))
    # and the shared 64, writes key (128 x (128 + 64)) and value (128 x 128):
    # 32,768 + 64 + 24,576 + 16,384 = 73,792. 90,176 elements, 2 bytes each, a token and layer forward.
    assert rope_elements_per_token(DSV3) == 16_384 + 73_792 == 90_176
    assert _rope_bytes(DSV3) == 2 * 90_176 == 180_352
    # 4 (q + kv) over the planner's 160-wide heads, 4 x 2 x 128 x 160 = 163,840 bytes, misses the
    # value's copy and counts the nope parts as rotated: 16,512 bytes short.
    assert _rope_bytes(DSV3) - 4 * (DSV3.q_size + DSV3.kv_size) == 180_352 - 163_840 == 16_512
    assert rope_host_ops(DSV3) == (2, 2)  # fused_apply_mla_rope_for_q and _for_kv, each way


def test_llama4_scout_prices_rope_on_its_36_rope_layers_by_hand():
    # 40 query heads and 8 KV heads of 128: a RoPE layer reads and writes q + kv = 5,120 + 1,024
    # elements, 4 x 6,144 = 24,576 bytes; 36 of the 48 layers (every 4th is NoPE): 18,432 on the mean layer.
    assert SCOUT.num_nope_layers == 12
    assert rope_elements_per_token(SCOUT) == 2 * 6_144 * 36 / 48 == 9_216
    assert _rope_bytes(SCOUT) == 18_432
    assert rope_host_ops(SCOUT) == (1.5, 1.5)
    args = dict(tp=1, ep=1, etp=1, low_precision=False, full_recompute=False)
    every_layer = SCOUT.model_copy(update={"num_nope_layers": 0})
    assert [float(a - b) for a, b in zip(layer_host_ops(every_layer, **args), layer_host_ops(SCOUT, **args))] == [
        0.5, 0.5]


DSV32 = load_model("deepseek-v3.2-exp")


def test_deepseek_v32_prices_the_absorbed_layers_unfused_rope_by_hand():
    # DSA asserts RoPE fusion off and runs AbsorbedMLA: apply_rotary_pos_emb (MLA-interleaved) on the
    # query's 128 x 64 rope elements and the shared key's 64, 4 + 24 = 28 bytes each (the even/odd
    # cat, then t * cos, -x2, cat, * sin, the sum, the final cat): 229,376 + 1,792; cos and sin built
    # for both calls, 2 x 44 x 64 = 5,632; the cat of the absorbed query, 128 x (512 + 64) read and
    # written, 294,912, and of the latent key, 576 x 4 = 2,304. 534,016 bytes a token and layer.
    assert DSV32.dsa is not None and DSV32.num_nope_layers == 0
    # Backward: 26 + 14 = 40 bytes a rotated element (the indexer's 26, the strided slices' zeroed
    # gradients and copies 2 x 4 and their sum 6), 327,680 + 2,560; the cats' backward are views; the
    # query split's backward cat, 128 x (128 + 64) x 4 = 98,304. 428,544, not twice the forward.
    fwd, bwd = dsa_rope_bytes_per_token(DSV32.mla, DSV32.num_heads)
    assert fwd == 229_376 + 1_792 + 5_632 + 294_912 + 2_304 == 534_016
    assert bwd == 327_680 + 2_560 + 98_304 == 428_544
    assert unfused_rope_bytes_per_token(DSV32) == (534_016, 428_544)
    # In place of the fused kernels' 180,352 forward bytes (the same MLA shape as DeepSeek-V3),
    # which the twice-the-forward elementwise work no longer holds.
    assert rope_elements_per_token(DSV32) == 0 and _rope_bytes(DSV32) == 0
    assert unfused_rope_bytes_per_token(DSV3) == (0, 0) and rope_elements_per_token(DSV3) == 90_176
    assert rope_forward_bytes_per_token(DSV32) == 534_016 and rope_forward_bytes_per_token(DSV3) == 180_352
    assert rope_host_ops(DSV32) == (2, 2)  # launches not counted (cost.host has no DSA term)


def test_gemm_work_and_the_mla_up_proj_recompute_time_dsas_rope_each_way():
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.gemm_work import gemm_work
    from sp_planner.cost.kernels import memory_pass_time_s
    from sp_planner.cost.mla_recompute import mla_up_proj_recompute_s
    from sp_planner.cost.precision import BF16

    h800 = load_hardware("h800")
    fused = DSV32.model_copy(update={"dsa": None})  # the same layer with Megatron's fused MLA RoPE
    # 4,096 tokens a rank at tp 1: forward 534,016 in place of 180,352 bytes a token, backward 428,544
    # in place of twice 180,352.
    args = dict(seq_len=4096, tp=1, micro_batch=1, cp=1, ep=1, etp=1, precision=BF16, fp8_current=False,
                gpus_per_node=8)
    dsa, dense = gemm_work(DSV32, h800, **args), gemm_work(fused, h800, **args)
    assert dsa.fwd_s[0] - dense.fwd_s[0] == pytest.approx(
        memory_pass_time_s(h800, 4096 * (534_016 - 180_352)), rel=1e-9)
    assert dsa.bwd_s[0] - dense.bwd_s[0] == pytest.approx(
        memory_pass_time_s(h800, 4096 * (428_544 - 2 * 180_352)), rel=1e-9)
    # mla_up_proj re-runs the forward's.
    extra = (mla_up_proj_recompute_s(DSV32, h800, tokens=4096, tp=1, precision=BF16)
             - mla_up_proj_recompute_s(fused, h800, tokens=4096, tp=1, precision=BF16))
    assert extra == pytest.approx(memory_pass_time_s(h800, 4096 * (534_016 - 180_352)), rel=1e-9)
