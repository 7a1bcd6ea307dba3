"""cost.dsa_loss: the DSA indexer's sparse KL loss on a rank, by hand at a small shape, and in the
layer times, comm bytes, saved bytes and hardware FLOPs only where the indexer trains."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dsa import dsa_forward_flops_per_token, dsa_hardware_flops_per_token, indexer_loss_problem
from sp_planner.cost.dsa_loss import indexer_loss_bytes, indexer_loss_saved_bytes, indexer_loss_times
from sp_planner.cost.dsa_times import dsa_times
from sp_planner.cost.links import ring_collective_time_s
from tests.cost.test_dsa import _small
from tests.cost.test_dsa_times import _rates

H800 = load_hardware("h800")


def _trained(model):
    return model.model_copy(update={"dsa": model.dsa.model_copy(update={"indexer_loss": "sparse"})})


def test_a_small_layer_by_hand():
    # 8 tokens, tp 2, ring 2: 4 local queries, 8 gathered keys. Top 3 (21/8 kept keys a query on
    # average); MLA 2 heads (1 a TP rank), latent 16 + rope 4; indexer 4 heads x 8; hidden 64 and no
    # q_lora_rank (wq_b reads the hidden state).
    gemm, memory, _ = _rates()
    t = indexer_loss_times(H800, _trained(_small(topk=3)), seq_len=8, batch=1, tp=np.array([2]), ring=np.array([2]),
                           cp_stride=2, gpus_per_node=8)
    # Target: 2 passes x 2 x 1 head x 20 x 21/8 keys = 210 FLOPs a query. Passes: 3 slots a query x
    # (46 + 121 for the sort tp > 1 needs) bytes, and the absorbed query's head-major copy, 1 head x
    # 20 x 4 bytes. Its all-reduce (fp32 4 x 3 a query, 2 x 1/2 of it sent), one chunk, overlaps
    # them; at this size its latency is the longer.
    fwd = 4 * 210 / gemm + (4 * 3 * 167 + 4 * 80) / memory
    all_reduce = ring_collective_time_s(H800, "all_reduce", 48, 2, 1, 8)
    assert all_reduce > fwd and t.fwd_s[0] == all_reduce
    # Without TP: both heads' target and query copy, no sort, no all-reduce.
    alone = indexer_loss_times(H800, _trained(_small(topk=3)), seq_len=8, batch=1, tp=np.array([1]),
                               ring=np.array([2]), cp_stride=1, gpus_per_node=8)
    assert alone.fwd_s[0] == pytest.approx(4 * 420 / gemm + (4 * 3 * 46 + 4 * 2 * 80) / memory, rel=1e-12)
    # Two sequences a micro-batch: each sequence's query copy, and its 512-query chunks' (2 x 8 x 160),
    # and the latent keys' (16 gathered keys x 20 x 4).
    two = indexer_loss_times(H800, _trained(_small(topk=3)), seq_len=8, batch=2, tp=np.array([1]),
                             ring=np.array([2]), cp_stride=1, gpus_per_node=8)
    assert two.fwd_s[0] == pytest.approx(8 * 420 / gemm + (8 * 3 * 46 + 2 * 8 * 160 + 16 * 80) / memory, rel=1e-12)
    # Backward: the indexer kernel's 3 GEMMs (2 x 4 x 8 each) over 21/8 keys = 504 and the
    # projections' weight gradients 2 x (64 x 32 + 64 x 8 + 64 x 4) = 5,632 FLOPs a query; bytes:
    # 3 slots x (8 + 29), one chunk's slice gradient 3 x 16, and 8 keys x 8 x (4 + 4 + 2).
    bwd = 4 * (504 + 5632) / gemm + (4 * 3 * 37 + 4 * 3 * 16 + 8 * 8 * 10) / memory
    assert t.bwd_s[0] == pytest.approx(bwd, rel=1e-12)
    # The other CP rank's 4 indexer-key gradients, 8 wide bf16.
    assert t.cp_scatter_s[0] == ring_collective_time_s(H800, "reduce_scatter", 64, 2, 2, 8)
    sent = indexer_loss_bytes(_trained(_small(topk=3)), seq_len=8, batch=1, tp=2, ring=2)
    assert (sent.tp_all_reduce, sent.cp_scatter) == (48, 64)
    # Saved a query: index_q 64, weights 16, indices 12, logits gradient 12, x and qr 256, k_norm
    # input 16; a gathered key 16.
    assert indexer_loss_saved_bytes(_trained(_small(topk=3)), queries=4, keys=8, seq_len=8) == 4 * 376 + 8 * 16


def test_each_8192_query_block_zeroes_casts_and_adds_a_whole_key_gradient():
    from sp_planner.cost.dsa import indexer_bwd_flops_per_token

    gemm, memory, _ = _rates()
    model = _trained(_small(topk=3))
    t = indexer_loss_times(H800, model, seq_len=32768, batch=1, tp=np.array([1]), ring=np.array([2]), cp_stride=1,
                           gpus_per_node=8)
    # 16,384 local queries, two 8,192-query blocks: each block's backward zeros an fp32 gradient of
    # all 32,768 gathered 8-wide keys and casts it to bf16 (4 + 4 + 2), and autograd adds the second
    # into the first (2 + 2 read, 2 written): 8 x (2 x 10 + 6) a key. Beside them 3 slots x 8 bytes
    # a query and 16 chunks' slice gradients (3 x 16) a query.
    moved = 16384 * 3 * 8 + 16384 * 16 * 3 * 16 + 32768 * 8 * (2 * 10 + 6)
    assert t.bwd_s[0] == pytest.approx(16384 * indexer_bwd_flops_per_token(model, 32768) / gemm + moved / memory,
                                       rel=1e-12)


def test_without_the_loss_nothing_changes():
    small = _small(topk=3)
    t = indexer_loss_times(H800, small, seq_len=8, batch=1, tp=np.array([2]), ring=np.array([2]), cp_stride=2,
                           gpus_per_node=8)
    assert t.fwd_s[0] == t.bwd_s[0] == t.cp_scatter_s[0] == 0.0
    assert indexer_loss_saved_bytes(small, queries=4, keys=8, seq_len=8) == 0.0
    # Hardware FLOPs: the target over both heads forward (420 a token) and the backward's 6,136.
    assert dsa_forward_flops_per_token(_trained(small), 8) - dsa_forward_flops_per_token(small, 8) == 420
    assert dsa_hardware_flops_per_token(_trained(small), 8) - dsa_hardware_flops_per_token(small, 8) == 420 + 6136


def test_the_layer_times_add_the_loss():
    args = dict(seq_len=8, batch=1, tp=np.array([2]), ulysses=np.array([1]), ring=np.array([2]), gpus_per_node=8)
    plain, trained = dsa_times(H800, _small(topk=3), **args), dsa_times(H800, _trained(_small(topk=3)), **args)
    a, b = plain.attention_times(), trained.attention_times()
    # The trained top-k's bookkeeping, 79 bytes a slot instead of 56 (cost.dsa_elementwise): 23 x 3
    # slots x 4 queries more forward; the element-wise ops' backward.
    memory = H800.hbm_bandwidth_bytes_per_s * H800.efficiency.memory_bound
    assert trained.elementwise_fwd_s[0] == pytest.approx(plain.elementwise_fwd_s[0] + 23 * 3 * 4 / memory, rel=1e-12)
    assert b.fwd_compute_s[0] == pytest.approx(a.fwd_compute_s[0] + trained.loss.fwd_s[0] + 23 * 3 * 4 / memory,
                                               rel=1e-12)
    assert b.bwd_compute_s[0] == pytest.approx(a.bwd_compute_s[0] + trained.loss.bwd_s[0]
                                               + trained.elementwise_bwd_s[0], rel=1e-12)
    assert trained.elementwise_bwd_s[0] > 0.0 == plain.elementwise_bwd_s[0]
    assert b.bwd_ring_exposed_s[0] == pytest.approx(a.bwd_ring_exposed_s[0] + trained.loss.cp_scatter_s[0], rel=1e-12)


def test_deepseek_v32_at_128k_on_32_cp_ranks():
    v32 = _trained(load_model("deepseek-v3.2-exp"))
    t = dsa_times(H800, v32, seq_len=131072, batch=1, tp=np.array([1, 8]), ulysses=np.array([1, 1]),
                  ring=np.array([32, 32]), gpus_per_node=8)
    # 4,096 queries: the target's 2 x 2 x 128 x 576 x ~2,032 keys = 6.0e8 FLOPs a query split by tp,
    # the indexer backward's 6 x 64 x 128 x ~2,032 + 2 x 13,959,168 = 1.28e8 not.
    assert t.loss.fwd_s[0] > 3 * t.loss.fwd_s[1]
    assert t.loss.bwd_s[1] > t.loss.bwd_s[0]  # tp 8 adds the sort's backward
    assert t.loss.fwd_s[0] + t.loss.bwd_s[0] < 0.1 * t.sparse_bwd_s[0]


def test_the_comm_model_counts_the_key_gradients_scatter():
    from sp_planner.candidates import Candidates
    from sp_planner.cost.comm import comm_columns
    from sp_planner.plan import ParallelPlan
    from sp_planner.specs import Workload

    v32 = load_model("deepseek-v3.2-exp")
    w = Workload(seq_len=32768, global_batch=8)
    c = Candidates.of_plan(ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=1, pp=1, ep=8, recompute="none"))
    plain = comm_columns(v32, w, c, gpus_per_node=8).sent_bytes
    trained = comm_columns(_trained(v32), w, c, gpus_per_node=8).sent_bytes
    loss = indexer_loss_bytes(_trained(v32), seq_len=32768, batch=1, tp=2, ring=4)
    # 8,192 queries: the target (fp32 x 2,048) half sent each way over tp 2; 3 ranks' 128-wide keys.
    assert (loss.tp_all_reduce, loss.cp_scatter) == (8192 * 2048 * 4, 3 * 8192 * 128 * 2)
    per_stage = 61 * 8
    assert trained.cp_reduce_scatter[0] - plain.cp_reduce_scatter[0] == loss.cp_scatter * per_stage
    # The target's all-reduce is inside the loss's forward, not the TP columns the simulator sizes
    # its per-layer TP calls from.
    assert trained.tp_all_gather[0] == plain.tp_all_gather[0]
    assert trained.tp_reduce_scatter[0] == plain.tp_reduce_scatter[0]


@pytest.mark.parametrize(("model", "choice", "message"), [
    ("deepseek-v3.2-exp", "none", None), ("deepseek-v3.2-exp", "sparse", None), ("DeepSeek-V3", "none", None),
    ("deepseek-v3.2-exp", "dense", "has no tilelang kernel"), ("DeepSeek-V3", "sparse", "has no DeepSeek Sparse"),
])
def test_which_losses_are_timed(model, choice, message):
    problem = indexer_loss_problem(load_model(model), choice)
    assert problem == message if message is None else message in problem


def test_a_layers_saved_bytes_grow_by_the_indexers():
    from sp_planner.cost.activations import activation_bytes_per_layer
    from sp_planner.specs import Workload

    v32 = load_model("deepseek-v3.2-exp")
    w = Workload(seq_len=131072, global_batch=8)
    shape = dict(tp=np.array([1]), ulysses=np.array([1]), ring=np.array([32]), micro_batch=np.array([1]),
                 recompute=np.array(["none"]), ep=16, allgather=np.array([True]))
    plain, _ = activation_bytes_per_layer(v32, w, **shape)
    trained, _ = activation_bytes_per_layer(_trained(v32), w, **shape)
    # 4,096 queries: index_q 16,384 + weights 256 + indices 8,192 + logits gradient 8,192 + x and qr
    # 2 x (7,168 + 1,536) + k_norm 256 = 50,688 B a query; 131,072 gathered keys x 256 B.
    assert trained[0] - plain[0] == 4096 * 50688 + 131072 * 256 == 241_172_480
