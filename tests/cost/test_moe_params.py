"""cost.moe_params by hand: a layer's MLP parameters on one rank by kind, and the largest pair of
neighbouring layers a ZeRO-3 buffer holds (the layer and the next one prefetched)."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.moe_params import (
    dense_mlp_tp_duplicated_params,
    largest_adjacent_mlp_params_per_rank,
    largest_mlp_params_per_rank,
    layer_mlp_params_per_rank,
    mean_mlp_params_per_rank,
)

DEEPSEEK, MAVERICK = load_model("deepseek-v3"), load_model("Llama-4-Maverick-17B-128E")


def test_deepseek_layers_at_tp_2_ep_8_by_hand():
    # hidden 7168, SwiGLU (3 matrices); dense FFN 18432 / tp 2; MoE: 256 routed experts of 2048
    # over ep 8, one shared expert / tp 2, the 7168 x 256 router whole on every rank.
    dense, moe = layer_mlp_params_per_rank(DEEPSEEK, 2, 8, 1)
    assert dense == 3 * 7168 * 18432 / 2 == 198_180_864
    assert moe == 256 * 3 * 7168 * 2048 / 8 + 3 * 7168 * 2048 / 2 + 7168 * 256 == 1_433_141_248
    # 3 dense layers then 58 MoE layers: the largest layer and neighbouring pair are MoE's.
    assert largest_mlp_params_per_rank(DEEPSEEK, 2, 8, 1) == moe
    assert largest_adjacent_mlp_params_per_rank(DEEPSEEK, 2, 8, 1) == 2 * moe


def test_maverick_alternating_layers_pair_a_dense_and_a_moe_layer_by_hand():
    # hidden 5120, dense FFN 16384 / tp 2; 128 routed experts of 8192 / ep 8, one shared / tp 2, the
    # router whole; every 2nd layer MoE, so neighbours are one of each.
    dense, moe = layer_mlp_params_per_rank(MAVERICK, 2, 8, 1)
    assert dense == 3 * 5120 * 16384 / 2 == 125_829_120
    assert moe == 128 * 3 * 5120 * 8192 / 8 + 3 * 5120 * 8192 / 2 + 5120 * 128 == 2_076_835_840
    assert largest_adjacent_mlp_params_per_rank(MAVERICK, 2, 8, 1) == pytest.approx(dense + moe, rel=0, abs=0)


def test_a_dense_mlps_fc2_bias_is_whole_on_every_tp_rank():
    # GPT-3 175B (hidden 12288, GeLU ffn 49152, linear_bias): fc1 12288 x 49152 + its bias 49152 split
    # over tp 8, fc2 49152 x 12288 split and its bias 12288 whole (RowParallelLinear's output_size).
    gpt3 = load_model("GPT-3-175B")
    dense, moe = layer_mlp_params_per_rank(gpt3, 8, 1, 1)
    assert dense == pytest.approx((2 * 12288 * 49152 + 49152) / 8 + 12288, rel=1e-12)
    assert moe == 0
    assert float(mean_mlp_params_per_rank(gpt3, 8, 1, 1)) == pytest.approx(float(dense), rel=1e-12)
    assert dense_mlp_tp_duplicated_params(DEEPSEEK) == 0  # no linear bias
