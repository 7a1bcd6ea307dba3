"""DeepSeek Sparse Attention's trained indexer's host ops (cost.dsa_loss_host), counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.cuda_graphs import NO_GRAPHS
from sp_planner.cost.dsa_loss_host import indexer_loss_host_ops
from sp_planner.cost.host_stalls import pacing_host_stalls_s
from sp_planner.cost.ring_impl import TE_RING
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.plan import ParallelPlan

V32 = load_model("deepseek-v3.2-exp")  # indexer blocks of 8,192 queries, loss chunks of 512
assert V32.dsa is not None
TRAINED = V32.model_copy(update={"dsa": V32.dsa.model_copy(update={"indexer_loss": "sparse"})})


def _ops(model=TRAINED, **kw):
    args = dict(seq_len=32768, micro_batch=1, tp=8, ring=1) | kw
    fwd, bwd = indexer_loss_host_ops(model, **args)
    return float(fwd), float(bwd)


def test_deepseek_v32_at_32k_by_hand():
    # 4 blocks of 8,192 queries, 64 chunks of 512. Forward beyond the untrained top-k: kl_sum's
    # zeros, the division and the coefficient (3); the query's head-major copy (1 more a sequence);
    # a block's 14 ops for 10, and at tp 8 the sort's 11 (4 x 15); a chunk's row mask (3), target,
    # slot copy, KL kernel and sum, kl_sum add and the all-reduce (64 x 9); the tracker's add_ and
    # copy_ (2): 3 + 1 + 60 + 576 + 2 = 642. Backward: the auto-scaler's and the loss scalars' 4;
    # per chunk the KL gradient, its slice_backward and (but the block's first) the add: 3 x 64 - 4;
    # per block the scores' masked_fill gradient, the indexer backward's 4, q's and the weights'
    # slice_backward, the sort's 3 (4 x 10) and each later block's 3 adds (9); per sequence the
    # weights' cast and three select_backward (4); the indexer's own 24: 269.
    assert _ops() == (642, 269)
    # At tp 1 no sort and no all-reduce: 3 + 1 + 16 + 512 + 2; 4 + 188 + 28 + 9 + 4 + 24.
    assert _ops(tp=1) == (534, 257)
    # The untrained indexer adds none.
    assert _ops(V32) == (0, 0)


def test_batches_context_parallelism_and_a_short_block_by_hand():
    # b 2 at 8K, tp 8: a block of 16 chunks a sequence; each sequence 1 + 1 copy more, a chunk's
    # query copy: 3 + 2 x (2 + 15 + 16 x 10) + 2 = 359; backward 4 + 24 + 3 (the second sequence's
    # adds) + 2 x (48 - 1 + 10 + 4) = 153.
    assert _ops(seq_len=8192, micro_batch=2) == (359, 153)
    # CP 2 at 32K: 16,384 local queries, 2 blocks, 32 chunks; backward the gathered indexer key's
    # reduce-scatter and index_select gradient (3): 3 + 1 + 30 + 288 + 2; 4 + 94 + 20 + 3 + 4 + 24 + 3.
    assert _ops(ring=2) == (324, 152)
    # 10,240 queries: a full block of 16 chunks and one of 2,048 queries, 4 chunks: 20 chunks, 2 blocks.
    assert _ops(seq_len=10240, tp=1) == (3 + 1 + 8 + 160 + 2, 4 + 58 + 14 + 3 + 4 + 24)
    fwd, bwd = indexer_loss_host_ops(TRAINED, seq_len=32768, micro_batch=np.array([1, 1]), tp=np.array([8, 1]),
                                     ring=np.array([1, 1]))
    assert fwd.tolist() == [642, 534] and bwd.tolist() == [269, 257]


def test_the_loss_ops_reach_the_pacing_stages_host_stall():
    # 10 layers of 1 us forward and 3 us backward GPU time on an x86 H100 host (13.48 us an op, no TE
    # module extra): DeepSeek-V3.2's MoE layers sync each forward, so each layer's forward stall is
    # its host time less 1 us, and the backward's one stretch less the ends' 0.5 ms; the trained
    # indexer adds 10 x 642 and 10 x 269 ops' host time to them.
    args = dict(fwd_layer_s=1e-6, layer_s=4e-6, layers=10, ends_s=0.5e-3, cuda_graphs=NO_GRAPHS,
                sequence_parallel=True, tp_gathers=TE_TP_GATHERS, ring_impl=TE_RING, seq_len=32768)
    hardware, c = load_hardware("h100-sxm"), Candidates.of_plan(ParallelPlan(tp=8, dp=1, ep=8))
    fwd, bwd = pacing_host_stalls_s(TRAINED, hardware, c, **args)
    fwd0, bwd0 = pacing_host_stalls_s(V32, hardware, c, **args)
    assert float(fwd[0] - fwd0[0]) == pytest.approx(10 * 642 * 13.48e-6, rel=1e-9)
    assert float(bwd[0] - bwd0[0]) == pytest.approx(10 * 269 * 13.48e-6, rel=1e-9)
