"""The pacing stage's host stalls per micro-batch (cost.host_stalls), by hand."""

import pytest

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel
from sp_planner.cost.ring_impl import TE_RING
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.cost.host_stalls import pacing_host_stalls_s
from sp_planner.cost.cuda_graphs import NO_GRAPHS
from sp_planner.plan import ParallelPlan

DENSE = load_model("Llama-3-70B")


def _stalls(hardware, plan, **kw):
    args = dict(fwd_layer_s=100e-6, layer_s=300e-6, layers=10, ends_s=0.5e-3, cuda_graphs=NO_GRAPHS,
                sequence_parallel=True, tp_gathers=TE_TP_GATHERS, ring_impl=TE_RING, seq_len=8192) | kw
    fwd, bwd = pacing_host_stalls_s(DENSE, hardware, Candidates.of_plan(plan), **args)
    return float(fwd[0]), float(bwd[0])


def test_dense_tp8_stalls_by_hand():
    # Llama-3-70B at tp 8, BF16 (tests/cost/test_host.py: 16 ops forward, 26 backward a layer), on
    # an x86 H100 host: 13.48 us an op, no TE module extra. A dense model does not sync, so the one
    # stall over 10 layers of 100 + 200 us GPU time, less the ends' 0.5 ms, is shared 16 : 26:
    # 10 x (42 x 13.48 - 300) us - 500 us = 2,161.6 us.
    fwd, bwd = _stalls(load_hardware("h100-sxm"), ParallelPlan(tp=8, dp=1))
    total = 10 * (42 * 13.48e-6 - 300e-6) - 0.5e-3
    assert fwd == pytest.approx(total * 16 / 42, rel=1e-12)
    assert bwd == pytest.approx(total * 26 / 42, rel=1e-12)


def test_gpu_work_above_the_host_time_leaves_no_stall():
    assert _stalls(load_hardware("h100-sxm"), ParallelPlan(tp=8, dp=1), fwd_layer_s=1e-3, layer_s=3e-3) == (0.0, 0.0)


def test_unfused_gqa_adds_its_expansion_ops_where_a_rank_expands():
    # Llama-3-70B (64 query, 8 KV heads) on TE's unfused attention at 8K keys: its own ops beyond
    # the flash kernel's, +13 forward and +4 backward (cost.unfused_host), and at tp 8, where a rank
    # holds 8 query heads and 1 KV head, K and V copied to 8 heads, +2 and +2: 16 + 15 ops forward,
    # 26 + 6 backward: 10 x (63 x 13.48 - 300) us - 500 us shared 31 : 32.
    unfused = with_attention_kernel(load_hardware("h100-sxm"), UNFUSED)
    fwd, bwd = _stalls(unfused, ParallelPlan(tp=8, dp=1))
    total = 10 * (63 * 13.48e-6 - 300e-6) - 0.5e-3
    assert fwd == pytest.approx(total * 31 / 63, rel=1e-12)
    assert bwd == pytest.approx(total * 32 / 63, rel=1e-12)
    # At tp 8 x ulysses 8 the 8 query heads spread one a rank and the KV head is replicated to each
    # (cost.attention_comm.kv_heads_for_ulysses): no expansion, the unfused path's own ops only;
    # b x heads 1, no multiple of 4, so TE's torch softmax at 8K (cost.kernels.te_torch_softmax):
    # 16 + 17 forward, 26 + 7 backward, against the flash kernel's 16 and 26.
    flash = _stalls(load_hardware("h100-sxm"), ParallelPlan(tp=8, ulysses=8, dp=1))
    assert flash == pytest.approx(((10 * (42 * 13.48e-6 - 300e-6) - 0.5e-3) * 16 / 42,
                                   (10 * (42 * 13.48e-6 - 300e-6) - 0.5e-3) * 26 / 42), rel=1e-12)
    total = 10 * (66 * 13.48e-6 - 300e-6) - 0.5e-3
    assert _stalls(unfused, ParallelPlan(tp=8, ulysses=8, dp=1)) == pytest.approx(
        (total * 33 / 66, total * 33 / 66), rel=1e-12)
    # Micro batch 4 makes b x heads 4: the fused kernel's 13 and 4, 16 + 13 forward, 26 + 4 backward.
    total = 10 * (59 * 13.48e-6 - 300e-6) - 0.5e-3
    assert _stalls(unfused, ParallelPlan(tp=8, ulysses=8, dp=1, micro_batch=4)) == pytest.approx(
        (total * 29 / 59, total * 30 / 59), rel=1e-12)
