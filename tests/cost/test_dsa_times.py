"""cost.dsa_times: one DeepSeek Sparse Attention layer's parts on a rank, by hand at a small shape, and
in the step model in place of dense MLA."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dsa_times import dsa_times, sparse_attention_times
from sp_planner.cost.links import ring_collective_time_s
from tests.cost.test_dsa import _small

H800 = load_hardware("h800")


def _rates():
    e = H800.efficiency
    gemm = H800.peak_bf16_flops * e.gemm * e.sustained_fraction
    memory = H800.hbm_bandwidth_bytes_per_s * e.memory_bound
    return gemm, memory, e.sustained_fraction


def test_a_small_layer_by_hand():
    # 8 tokens, tp 2, ring 2 (all-gather CP): 4 local queries. Indexer 4 heads x 8, top 3; MLA 2 heads,
    # latent 16 + rope 4; hidden 64 and no q_lora_rank (wq_b reads the hidden state).
    gemm, memory, sustained = _rates()
    t = dsa_times(H800, _small(topk=3), seq_len=8, batch=1, tp=np.array([2]), ulysses=np.array([1]),
                  ring=np.array([2]), gpus_per_node=8)
    assert t.indexer_projection_s[0] == pytest.approx(4 * 2 * (64 * 32 + 64 * 8 + 64 * 4) / gemm, rel=1e-12)
    # Scores: 2 x 4 x 8 FLOPs a pair, 8 / 2 keys a query on average, not split by tp.
    assert t.indexer_score_s[0] == pytest.approx(4 * 64 * 4 / gemm, rel=1e-12)
    # Top-k: 1 write + 5 reads of each query's fp32 row of 8 keys.
    assert t.topk_s[0] == pytest.approx(6 * 4 * 4 * 8 / memory, rel=1e-12)
    # Sparse MLA over 1 head a rank, 21/8 kept keys a query: forward 144 FLOPs a key at 600 TFLOPS;
    # backward the forward again, the delta pass (O and dO, 16 wide bf16) and 368 a key at 100 TFLOPS.
    fwd = 4 * 144 * 21 / 8 / 2 / (600e12 * sustained)
    assert t.sparse_fwd_s[0] == pytest.approx(fwd, rel=1e-12)
    bwd = fwd + 2 * 2 * 4 * 1 * 16 / memory + 4 * 368 * 21 / 8 / 2 / (100e12 * sustained)
    assert t.sparse_bwd_s[0] == pytest.approx(bwd, rel=1e-12)
    # The indexer's inputs (hidden 64 + 64) of the other TP rank's 2 queries; CP sends the other
    # rank's 4 latent keys (20 wide) and indexer keys (8 wide) forward, the latent gradient backward.
    assert t.indexer_tp_gather_s[0] == ring_collective_time_s(H800, "all_gather", 1 * 2 * 128 * 2, 2, 1, 8)
    gather = (ring_collective_time_s(H800, "all_gather", 4 * 20 * 2, 2, 2, 8)
              + ring_collective_time_s(H800, "all_gather", 4 * 8 * 2, 2, 2, 8))
    assert t.cp_gather_s[0] == pytest.approx(gather, rel=1e-12)
    assert t.cp_scatter_s[0] == pytest.approx(ring_collective_time_s(H800, "reduce_scatter", 160, 2, 2, 8), rel=1e-12)
    # The indexer's element-wise work (cost.dsa_elementwise), per local query: q's unfused RoPE
    # (24 x 4), cat and Hadamard (2 x 4 x 8) on 4 heads, 640; cos and sin for two calls, 2 x 44 x 4,
    # 352; k's norm (32 + 8), RoPE (96), cat and Hadamard (64), 200; the weights 14 x 4, 56; the
    # top-k's 56 bytes on 3 slots, 168: 1,416 x 4 queries. The 8 gathered keys' reorder (32 + 8 a
    # key): 320. No backward without the indexer's loss.
    assert t.elementwise_fwd_s[0] == pytest.approx((1416 * 4 + 320) / memory, rel=1e-12)
    assert t.elementwise_bwd_s[0] == 0.0
    # The main attention's 8 gathered latent keys (20 wide) reordered: a copy (20 x 4) and the int64
    # index a key, 704; backward a zeroed gradient and index_add (20 x 8 a key), 1,280.
    assert t.latent_reorder_fwd_s[0] == pytest.approx(8 * (20 * 4 + 8) / memory, rel=1e-12)
    assert t.latent_reorder_bwd_s[0] == pytest.approx(8 * 20 * 8 / memory, rel=1e-12)
    assert t.up_v_copy_s[0] == 0.0  # 1 head a rank: the weight's slice is contiguous, no copy
    times = t.attention_times()
    assert times.fwd_compute_s[0] == pytest.approx(t.indexer_projection_s[0] + t.indexer_score_s[0] + t.topk_s[0]
                                                   + t.elementwise_fwd_s[0] + t.latent_reorder_fwd_s[0] + fwd,
                                                   rel=1e-12)
    # No indexer backward; the latent key's reorder has one.
    assert times.bwd_s[0] == pytest.approx(bwd + t.latent_reorder_bwd_s[0] + t.cp_scatter_s[0], rel=1e-12)
    assert times.fwd_ring_exposed_s[0] == t.indexer_tp_gather_s[0] + t.cp_gather_s[0]


def test_no_comm_without_tp_and_cp_and_the_dense_model_is_left_alone():
    t = dsa_times(H800, _small(topk=3), seq_len=8, batch=1, tp=np.array([1]), ulysses=np.array([1]),
                  ring=np.array([1]), gpus_per_node=8)
    assert t.indexer_tp_gather_s[0] == t.cp_gather_s[0] == t.cp_scatter_s[0] == 0.0
    assert t.latent_reorder_fwd_s[0] == t.latent_reorder_bwd_s[0] == 0.0  # nothing gathered, nothing reordered
    # Both heads on the rank: the V up-projection weight is copied, 2 x 8 x 16 bf16 read and written.
    assert t.up_v_copy_s[0] == pytest.approx(2 * 2 * 8 * 16 * 2 / _rates()[1], rel=1e-12)
    v3 = load_model("DeepSeek-V3")
    dense = t.attention_times()  # any AttentionTimes
    assert sparse_attention_times(dense, H800, v3, seq_len=8, batch=1, tp=1, ulysses=1, ring=1,
                                  gpus_per_node=8) is dense


def test_deepseek_v32_at_128k_backward_dominates_and_tp_splits_only_sparse_mla():
    v32 = load_model("deepseek-v3.2-exp")
    t = dsa_times(H800, v32, seq_len=131072, batch=1, tp=np.array([1, 8]), ulysses=np.array([1, 1]),
                  ring=np.array([32, 32]), gpus_per_node=8)
    # The indexer is duplicated over TP: its scores and top-k do not shrink; sparse MLA does, 8x.
    assert t.indexer_score_s[0] == t.indexer_score_s[1] and t.topk_s[0] == t.topk_s[1]
    assert t.sparse_fwd_s[0] == pytest.approx(8 * t.sparse_fwd_s[1], rel=1e-12)
    # 4,096 queries x 64 x 128 x 2 x 65,536 = 4.40e12 FLOPs of scores; sparse MLA's backward at
    # 100 TFLOPS: 4,096 x 2 x 128 x (1,024 + 1,728) x ~2,032 mean keys = 5.87e12 FLOPs.
    assert 4096 * 64 * 128 * 131072 == pytest.approx(4.40e12, rel=1e-3)
    assert t.sparse_bwd_s[0] > 5 * (t.indexer_score_s[0] + t.topk_s[0])


def test_the_v_up_weight_copy_by_hand():
    # DeepSeek-V3.2 (128 heads, v_head_dim 128, kv_lora_rank 512): at tp 8 a rank's 16 heads of the
    # weight, 16 x 128 x 512 bf16 = 2 MiB, read and written once a forward; at tp 128 one head, a view.
    _, memory, _ = _rates()
    v32 = load_model("deepseek-v3.2-exp")
    t = dsa_times(H800, v32, seq_len=32768, batch=1, tp=np.array([8, 128]), ulysses=np.array([1, 1]),
                  ring=np.array([1, 1]), gpus_per_node=8)
    assert t.up_v_copy_s[0] == pytest.approx(2 * 16 * 128 * 512 * 2 / memory, rel=1e-12)
    assert t.up_v_copy_s[1] == 0.0
    times = t.attention_times()
    parts = (t.indexer_projection_s + t.indexer_score_s + t.topk_s + t.elementwise_fwd_s + t.latent_reorder_fwd_s
             + t.sparse_fwd_s)
    assert times.fwd_compute_s[0] == pytest.approx(parts[0] + t.up_v_copy_s[0], rel=1e-12)
    assert times.bwd_compute_s[0] == t.sparse_bwd_s[0]  # no backward kernel: CloneBackward0 passes it on


def test_the_step_model_times_dsa_in_place_of_dense_mla():
    from sp_planner.cost.layer_times import layer_attention
    from sp_planner.cost.ring_impl import TE_RING
    from sp_planner.candidates import Candidates
    from sp_planner.plan import ParallelPlan
    from sp_planner.specs import Workload

    v32, v3 = load_model("deepseek-v3.2-exp"), load_model("DeepSeek-V3")
    plan = ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=1, ep=8)
    c, w = Candidates.of_plan(plan), Workload(seq_len=32768, global_batch=1)
    sparse = layer_attention(v32, H800, w, c, gpus_per_node=8, ring_impl=TE_RING)
    expected = dsa_times(H800, v32, seq_len=32768, batch=1, tp=2, ulysses=1, ring=4, gpus_per_node=8).attention_times()
    assert sparse.fwd_s[0] == pytest.approx(float(expected.fwd_s), rel=1e-12)
    assert sparse.bwd_s[0] == pytest.approx(float(expected.bwd_s), rel=1e-12)
    dense = layer_attention(v3, H800, w, c, gpus_per_node=8, ring_impl=TE_RING)
    assert dense.fwd_s[0] != sparse.fwd_s[0]


def test_the_comm_model_counts_dsa_gathers_in_place_of_k_and_v():
    from sp_planner.candidates import Candidates
    from sp_planner.cost.comm import comm_columns
    from sp_planner.cost.dsa_times import dsa_comm_bytes
    from sp_planner.plan import ParallelPlan
    from sp_planner.specs import Workload

    v32, v3 = load_model("deepseek-v3.2-exp"), load_model("DeepSeek-V3")
    w = Workload(seq_len=32768, global_batch=8)
    # 8,192 local queries on 4 all-gather CP ranks, tp 2: forward sends 3 ranks' latent (576) and
    # indexer (128) keys, backward the latent gradient; the indexer gathers hidden + q_lora inputs.
    sent = dsa_comm_bytes(v32, seq_len=32768, batch=1, tp=2, ulysses=1, ring=4)
    assert (sent.cp_gather, sent.cp_scatter, sent.tp_gather) == (3 * 8192 * 704 * 2, 3 * 8192 * 576 * 2,
                                                                 4096 * (7168 + 1536) * 2)
    c = Candidates.of_plan(ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=1, pp=1, ep=8, recompute="none"))
    sparse = comm_columns(v32, w, c, gpus_per_node=8).sent_bytes
    dense = comm_columns(v3, w, c, gpus_per_node=8).sent_bytes
    per_stage = 61 * 8  # layers x micro-batches
    assert sparse.cp_all_gather[0] == sent.cp_gather * per_stage
    assert sparse.cp_reduce_scatter[0] == sent.cp_scatter * per_stage
    assert sparse.tp_all_gather[0] - dense.tp_all_gather[0] == sent.tp_gather * per_stage


def test_deepseek_v32_reorders_its_gathered_latent_key_over_cp_only():
    from sp_planner.cost.dsa_times import latent_reorder_bytes

    v32 = load_model("deepseek-v3.2-exp")
    # 128K keys gathered whole over CP, 512 + 64 = 576 bf16 a key: index_select copies them and reads
    # an int64 index, 576 x 4 + 8 = 2,312 bytes a key; backward a zeroed gradient (2), index_add reads
    # the gradient (2) and updates the zeroed one (2 + 2): 576 x 8 = 4,608. Micro batch 2 doubles it;
    # no CP, no gather, no reorder.
    fwd, bwd = latent_reorder_bytes(v32, seq_len=131072, batch=np.array([1, 2, 1]), ring=np.array([32, 32, 1]))
    assert list(fwd) == [131072 * 2312, 2 * 131072 * 2312, 0.0] and 131072 * 2312 == 303_038_464
    assert list(bwd) == [131072 * 4608, 2 * 131072 * 4608, 0.0]
    t = dsa_times(H800, v32, seq_len=131072, batch=1, tp=np.array([1]), ulysses=np.array([1]), ring=np.array([32]),
                  gpus_per_node=8)
    _, memory, _ = _rates()
    assert t.latent_reorder_fwd_s[0] == pytest.approx(303_038_464 / memory, rel=1e-12)  # 0.119 ms on H800
    assert t.latent_reorder_bwd_s[0] == pytest.approx(131072 * 4608 / memory, rel=1e-12)
