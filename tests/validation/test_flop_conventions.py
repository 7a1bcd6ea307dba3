"""Published FLOP counts, derived by hand from the sources' equations."""

from __future__ import annotations

import pytest

from sp_planner.cost.flops import model_flops_per_step
from sp_planner.specs.model import ModelSpec
from sp_planner.validation.flop_conventions import megatron_2021_flops_per_step

# Narayanan et al. 2021 Table 1, 1T row: h 25600, l 128, V 51200, s 2048, B 3072, 3072 GPUs,
# 163 teraFLOP/s per GPU, 502.0 petaFLOP/s aggregate.
ONE_T = dict(hidden=25600, layers=128, vocab=51200, seq_len=2048, global_batch=3072)


def test_eq3_by_hand_for_the_1t_row():
    # 96 B s l h^2 = 96 * 3072 * 2048 * 128 * 25600^2 = 5.0665e19; the bracket
    # 1 + 2048/153600 + 51200/52428800 = 1 + 0.013333 + 0.000977 = 1.014310.
    base = 96 * 3072 * 2048 * 128 * 25600**2
    assert base == pytest.approx(5.0665e19, rel=1e-4)
    flops = megatron_2021_flops_per_step(**ONE_T)
    assert flops == pytest.approx(base * 1.014310, rel=1e-6)
    assert flops == pytest.approx(5.1391e19, rel=1e-4)
    # Over the published 163 TFLOP/s on 3072 GPUs: a 102.6 s iteration, whose aggregate
    # is Table 1's 502.0 PFLOP/s within the per-GPU figure's rounding (500.7).
    step_s = flops / (163e12 * 3072)
    assert step_s == pytest.approx(102.6, abs=0.05)
    assert flops / step_s / 1e15 == pytest.approx(502.0, rel=0.005)


def test_eq3_is_the_full_square_count_plus_the_recompute_forward():
    # For a GPT layer without biases (MLP 4h, one head width per hidden unit), eq. 3 counts
    # 4 passes of the layers and 3 of the logits: the cost model's full-square model FLOPs
    # (3 passes) plus one forward of the layers, l * (24 h^2 + 4 h s) per token.
    h, layers, s, b = 25600, 128, 2048, 3072
    gpt = ModelSpec(name="1T", hidden_size=h, intermediate_size=4 * h, num_layers=layers, num_heads=160,
                    num_kv_heads=160, head_dim=160, vocab_size=51200, mlp="gelu", tie_word_embeddings=True)
    recompute_forward = layers * (24 * h**2 + 4 * h * s) * s * b
    model = model_flops_per_step(gpt, seq_len=s, global_batch=b)
    assert megatron_2021_flops_per_step(**ONE_T) == pytest.approx(model + recompute_forward, rel=1e-12)
