"""Parameters per rank (cost.params): hand derivations and a catalog model (DeepSeek-V3)."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.params import (
    largest_adjacent_layers_params_per_rank,
    largest_layer_params_per_rank,
    layer_params_per_rank,
)
from sp_planner.specs import ModelSpec


# h 64, q 64 (4 heads of 16), kv 32 (2 heads), SwiGLU ffn 128; at tp 2 per rank:
# QKV h*(q+2kv)/2 = 4096, output projection q*h/2 = 2048, MLP 3*h*ffn/2 = 12288, norms 2h = 128.
# qkv bias (q+2kv)/2 = 64; GPT-3 style linear bias adds the output-projection bias h = 64
# (replicated: the row-parallel layer adds it after the reduce), MLP biases (ffn+h)/2 = 96, and
# LayerNorm biases (norms 4h = 256).
@pytest.mark.parametrize("qkv_bias, linear_bias, per_rank", [
    (False, False, 4096 + 2048 + 12288 + 128),
    (True, False, 4096 + 2048 + 12288 + 128 + 64),
    (False, True, 4096 + 2048 + 12288 + 64 + 64 + 96 + 256),
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
