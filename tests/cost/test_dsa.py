"""cost.dsa: the forward FLOPs of DeepSeek Sparse Attention's indexer and sparse MLA, by hand, and the
line that refuses to time it."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.dsa import (dsa_untimed, indexer_score_flops_per_token, mean_selected_keys,
                                 sparse_mla_flops_per_token)
from sp_planner.specs.attention import DSASpec, MLASpec
from sp_planner.specs.model import ModelSpec

V32 = load_model("DeepSeek-V3").model_copy(update={
    "name": "DeepSeek-V3.2-Exp", "dsa": DSASpec(index_n_heads=64, index_head_dim=128, index_topk=2048)})


def _small(topk: int) -> ModelSpec:
    # 2 heads, latent 16, rope 4, nope 8, v 8: head_dim (8 + 4 + 8) / 2 = 10.
    return ModelSpec(name="tiny", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                     head_dim=10, vocab_size=100, mla=MLASpec(kv_lora_rank=16, qk_nope_head_dim=8,
                                                              qk_rope_head_dim=4, v_head_dim=8),
                     dsa=DSASpec(index_n_heads=4, index_head_dim=8, index_topk=topk))


def test_the_indexer_scores_half_the_square_on_average():
    # 4 heads x 8 dims: 2 * 4 * 8 = 64 FLOPs a (query, key) pair; 6 tokens, 3 earlier keys on average.
    assert indexer_score_flops_per_token(DSASpec(index_n_heads=4, index_head_dim=8, index_topk=3), 6) == 64 * 3


@pytest.mark.parametrize("topk, seq_len, keys", [
    (3, 6, [1, 2, 3, 3, 3, 3]),  # capped at top 3 from the fourth query on
    (10, 4, [1, 2, 3, 4]),  # top-k beyond the sequence: plain causal, (s + 1) / 2
    (1, 5, [1, 1, 1, 1, 1]),
])
def test_a_causal_query_keeps_min_t_plus_1_topk_keys(topk, seq_len, keys):
    assert mean_selected_keys(topk, seq_len) == sum(keys) / seq_len


def test_sparse_mla_runs_qk_over_latent_plus_rope_and_pv_over_the_latent():
    # 2 heads x (QK^T over 16 + 4, PV over 16) x 2 FLOPs = 144 a kept key; 2.5 keys on average.
    assert sparse_mla_flops_per_token(_small(topk=3), 6) == 144 * 2.5


def test_deepseek_v32_at_128k_matches_the_kernels_own_flop_count():
    s = 131072
    # tilelang examples/deepseek_v32/sparse_mla_fwd_pipelined.py counts 2 * H * (DQK 576 + DV 512) * topk a
    # query: DeepSeek-V3.2's 128 heads over latent 512 + rope 64 keep 2048 keys from query 2048 on.
    per_full_query = 2 * 128 * (576 + 512) * 2048
    kept = 2048 * 2049 // 2 + (s - 2048) * 2048
    assert sparse_mla_flops_per_token(V32, s) * s == pytest.approx(per_full_query / 2048 * kept, rel=1e-12)
    assert sparse_mla_flops_per_token(V32, s) * s == pytest.approx(7.418e13, rel=1e-3)
    # The indexer: 64 x 128 x 2 FLOPs a pair over s^2 / 2 pairs, twice the sparse attention's at 128K.
    assert indexer_score_flops_per_token(V32.dsa, s) * s == 64 * 128 * s * s == pytest.approx(1.407e14, rel=1e-3)


def test_only_a_dsa_model_is_refused_and_the_line_gives_its_figures():
    assert dsa_untimed(load_model("DeepSeek-V3"), 131072) is None
    line = dsa_untimed(V32, 131072)
    assert "\n" not in line
    assert line.startswith("DeepSeek-V3.2-Exp uses DeepSeek Sparse Attention (indexer 64 heads x 128, top 2048 keys)")
    assert "1.41e+14 FLOPs of indexer scoring" in line and "7.42e+13 of sparse MLA" in line
    assert "all-gather CP only" in line and "--model DeepSeek-V3" in line
