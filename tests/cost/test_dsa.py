"""cost.dsa: the FLOPs of DeepSeek Sparse Attention's indexer and sparse MLA, its saved and transient
bytes, by hand, and the line that refuses to time it where no sparse MLA rate is published."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dsa import (dsa_hardware_flops_per_token, dsa_saved_attention_bytes, dsa_transient_bytes,
                                 dsa_untimed, indexer_projection_flops_per_token, indexer_score_flops_per_token,
                                 mean_selected_keys, sparse_mla_bwd_flops_per_token, sparse_mla_flops_per_token)
from sp_planner.cost.flops import hardware_flops_per_step, model_flops_per_step
from sp_planner.cost.params import layer_params_per_rank
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


def test_sparse_mla_backward_and_the_indexer_projections_by_hand():
    # Backward a kept key: 2 heads x 2 x (2 x 16 + 3 x 20) = 368; 2.625 keys on average (top 3 of 8).
    assert sparse_mla_bwd_flops_per_token(_small(topk=3), 8) == 368 * (6 + 5 * 3) / 8
    # No q_lora_rank: wq_b reads the hidden state, 64 x 4 x 8, wk 64 x 8, weights_proj 64 x 4.
    assert indexer_projection_flops_per_token(_small(topk=3)) == 2 * (64 * 32 + 64 * 8 + 64 * 4) == 5632
    # DeepSeek-V3.2: 1536 x 8192 + 7168 x 128 + 7168 x 64 weights.
    assert indexer_projection_flops_per_token(V32) == 2 * 13_959_168


def test_hardware_flops_count_what_dsa_runs_and_model_flops_the_dense_mla_megatron_counts():
    s, v3 = 131072, load_model("DeepSeek-V3")
    # Megatron's num_floating_point_operations has no DSA term: V3.2's model FLOPs are V3's.
    assert model_flops_per_step(V32, seq_len=s, global_batch=1) == model_flops_per_step(v3, seq_len=s, global_batch=1)
    none = np.array([0])  # plan.RECOMPUTE codes: none
    dense = hardware_flops_per_step(v3, seq_len=s, global_batch=1, causal=True, recompute=none)[0]
    sparse = hardware_flops_per_step(V32, seq_len=s, global_batch=1, causal=True, recompute=none)[0]
    # A layer trades dense causal MLA's 3 x 4 x q x s/2 for the indexer forward, sparse MLA forward
    # twice (backward recomputes it) and its backward.
    swap = dsa_hardware_flops_per_token(V32, s) - 3 * 4.0 * V32.q_size * s / 2
    assert sparse - dense == pytest.approx(V32.num_layers * swap * s, rel=1e-9)
    per_token = (2 * 13_959_168 + 64 * 128 * s + 2 * sparse_mla_flops_per_token(V32, s)
                 + sparse_mla_bwd_flops_per_token(V32, s))
    assert dsa_hardware_flops_per_token(V32, s) == pytest.approx(per_token, rel=1e-12)


def test_the_indexer_weights_are_whole_on_every_tensor_parallel_rank():
    v3 = load_model("DeepSeek-V3")
    tp = np.array([1, 8])
    assert (layer_params_per_rank(V32, tp) - layer_params_per_rank(v3, tp) == 13_959_424).all()


def test_saved_bytes_by_hand():
    # 4 local queries of 8 keys on 1 head: query 4 x 20 x 2 B, the gathered latent 8 x 20 x 2 B,
    # the absorbed output 4 x 16 x 2 B and the int32 indices 4 x 3 x 4 B; no output of sparse MLA
    # nor lse (Megatron's SparseMLA recomputes them).
    assert dsa_saved_attention_bytes(_small(topk=3), queries=4, keys=8, heads=1) == 160 + 320 + 128 + 48
    # DeepSeek-V3.2 at 128K on 32 CP ranks, tp 1: 4,096 queries of 128 heads.
    saved = dsa_saved_attention_bytes(V32, queries=4096, keys=131072, heads=128)
    assert saved == 2 * 4096 * 128 * 576 + 2 * 131072 * 576 + 2 * 4096 * 128 * 512 + 4 * 4096 * 2048 == 1_325_400_064


def test_the_transient_is_the_indexer_logits_block_or_the_latent_gradient():
    # 4,096 local queries (under the 8,192 block) over 131,072 keys in fp32, with the top-k values.
    q = np.array([4096.0, 65536.0, 16.0])
    got = dsa_transient_bytes(V32, queries=q, keys=131072)
    assert got[0] == 4 * 4096 * (131072 + 2048) == 2_181_038_080
    assert got[1] == 4 * 8192 * (131072 + 2048)  # scored 8,192 queries at a time
    assert got[2] == 2 * 131072 * 576  # the full latent key's bf16 gradient before its reduce-scatter


def test_only_a_dsa_model_off_the_published_gpus_is_refused_and_the_line_names_what_is_missing():
    h800 = load_hardware("h800")
    assert dsa_untimed(load_model("DeepSeek-V3"), load_hardware("a800")) is None
    assert dsa_untimed(V32, h800) is None and dsa_untimed(V32, load_hardware("h200")) is None
    line = dsa_untimed(V32, load_hardware("b200"))
    assert "\n" not in line
    assert line.startswith("DeepSeek-V3.2-Exp uses DeepSeek Sparse Attention (indexer 64 heads x 128, top 2048 keys)")
    assert "on B200 none is published for sparse MLA's backward" in line and "use --hardware h800" in line
    assert "sparse MLA's forward and backward" in dsa_untimed(V32, load_hardware("a800"))
