"""Parameters per rank (cost.params): hand derivations and a catalog model (DeepSeek-V3)."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.moe_params import mean_mlp_params_per_rank
from sp_planner.cost.params import (
    largest_adjacent_layers_params_per_rank,
    largest_layer_params_per_rank,
    layer_params_per_rank,
    mla_tp_duplicated_params,
    stage_params_per_rank,
)
from sp_planner.specs import ModelSpec
from sp_planner.specs.attention import MLASpec


# h 64, q 64 (4 heads of 16), kv 32 (2 heads), SwiGLU ffn 128; at tp 2 per rank:
# QKV h*(q+2kv)/2 = 4096, output projection q*h/2 = 2048, MLP 3*h*ffn/2 = 12288, norms 2h = 128.
# qkv bias (q+2kv)/2 = 64; GPT-3 style linear bias adds the output-projection bias h = 64
# (replicated: the row-parallel layer adds it after the reduce), MLP biases ffn/2 + h = 128 (fc2's
# replicated likewise), and LayerNorm biases (norms 4h = 256).
@pytest.mark.parametrize("qkv_bias, linear_bias, per_rank", [
    (False, False, 4096 + 2048 + 12288 + 128),
    (True, False, 4096 + 2048 + 12288 + 128 + 64),
    (False, True, 4096 + 2048 + 12288 + 64 + 64 + 128 + 256),
])
def test_bias_parameters_per_rank_by_hand(qkv_bias, linear_bias, per_rank):
    model = ModelSpec(name="b", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=16, vocab_size=100, qkv_bias=qkv_bias, linear_bias=linear_bias)
    assert layer_params_per_rank(model, 2) == per_rank
    # One rank of tp 1 holds the whole layer, as ModelSpec counts it.
    assert layer_params_per_rank(model, 1) == model.params_per_layer


def test_zero3_gathers_two_moe_layers_where_they_are_neighbours():
    # DeepSeek-V3: 3 dense first layers, then MoE on every layer: the largest pair is two MoE layers.
    dsv3 = load_model("DeepSeek-V3")
    pair = float(largest_adjacent_layers_params_per_rank(dsv3, 1, 8, 1))
    assert pair == pytest.approx(2 * float(largest_layer_params_per_rank(dsv3, 1, 8, 1)), rel=1e-12)


def test_deepseek_v3s_mla_down_projections_are_whole_on_every_tp_rank():
    # h 7168, q_lora 1536, kv_lora 512, rope 64: linear_q_down_proj 7168 x 1536 with q_layernorm
    # 1536, linear_kv_down_proj 7168 x (512 + 64) with kv_layernorm 512: 11,011,584 + 4,129,280
    # (TELinear "duplicated", Megatron-LM d98e8a6 multi_latent_attention.py lines 526-527, 573-574).
    dsv3 = load_model("DeepSeek-V3")
    assert mla_tp_duplicated_params(dsv3) == 15_140_864
    # At tp 8 a rank holds them whole and 1/8 of MLA's other 187,107,328 - 15,140,864 =
    # 171,966,464: 21,495,808 + 15,140,864 = 36,636,672 a layer (not 187,107,328 / 8 = 23,388,416).
    attention = layer_params_per_rank(dsv3, 8) - mean_mlp_params_per_rank(dsv3, 8, 1, 1) - dsv3.norm_params_per_layer
    assert attention == pytest.approx(36_636_672, rel=1e-12)
    # A pp-1 rank at ep 8: 61 layers of that MLA and norms (2 x 7168), 3 dense MLPs
    # (3 x 7168 x 18432 / 8), 58 MoE layers' routed experts (256 x 3 x 7168 x 2048 / 8), shared
    # expert (3 x 7168 x 2048 / 8) and router (7168 x 256), the untied embedding and output layer
    # (2 x 129,280 x 7168 / 8) and the final norm (7168): 84,780,342,272, of which 61 x 7/8 x
    # 15,140,864 = 808,143,616 the down projections' copies beyond an eighth.
    first, _ = stage_params_per_rank(dsv3, 8, 1, ep=8)
    by_hand = (61 * (36_636_672 + 2 * 7168) + 3 * 3 * 7168 * 18432 / 8
               + 58 * (256 * 3 * 7168 * 2048 / 8 + 3 * 7168 * 2048 / 8 + 7168 * 256) + 2 * 129_280 * 7168 / 8 + 7168)
    assert by_hand == 84_780_342_272
    assert float(first) == pytest.approx(by_hand, rel=1e-12)


def test_mla_without_query_compression_keeps_only_the_kv_down_projection_whole():
    # h 64, 2 heads, kv_lora 16, nope 8, rope 4, v 8, no q_lora_rank: linear_q_proj 64 x 2 x 12 =
    # 1536 (column-parallel), linear_kv_down_proj 64 x 20 = 1280 and kv_layernorm 16 (whole),
    # linear_kv_up_proj 16 x 2 x 16 = 512, linear_proj 2 x 8 x 64 = 1024: 4368 in all.
    model = ModelSpec(name="m", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                      head_dim=10, vocab_size=100,
                      mla=MLASpec(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8))
    assert model.mla_params_per_layer == 4368
    assert mla_tp_duplicated_params(model) == 1296
    # tp 2: (4368 - 1296) / 2 + 1296 = 2832, the MLP 3 x 64 x 128 / 2 = 12288, norms 2 x 64 = 128.
    assert layer_params_per_rank(model, 2) == 2832 + 12288 + 128
    assert layer_params_per_rank(model, 1) == model.params_per_layer


def test_models_without_mla_duplicate_nothing_of_it():
    assert mla_tp_duplicated_params(load_model("Llama-2-7B")) == 0
