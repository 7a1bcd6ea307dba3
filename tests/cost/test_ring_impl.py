"""The ring backward by framework (cost.ring_impl), by hand: Transformer Engine's against yunchang's."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention import attention_times
from sp_planner.cost.attention_comm import ring_bytes_per_layer
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.links import p2p_time_s
from sp_planner.cost.ring_impl import TE_RING, YUNCHANG_RING, allgather_pass_bytes, grad_hops
from sp_planner.plan import ParallelPlan
from sp_planner.sim.attention_steps import attention_steps
from sp_planner.sim.work import LayerWork

H100 = load_hardware("h100-sxm")
# Llama-3-8B shape at 128K over ring 4 inside a node: one local K block is 32768 tokens x 8 KV
# heads x 128 = 33,554,432 elements.
SHAPE = dict(batch=1, seq_len=131072, num_heads=32, num_kv_heads=8, head_dim=128, tp=1, ulysses=1, ring=4,
             causal=True, zigzag=np.array([True]), gpus_per_node=8, elem_bytes=2)
KV_ELEMS = 32768 * 8 * 128
Q_ELEMS = 32768 * 32 * 128


def test_the_two_rings():
    # yunchang: fp32 dK/dV for R hops, the last home; fp32 accumulation (read 4 + 2, write 4).
    assert (YUNCHANG_RING.grad_elem_bytes, YUNCHANG_RING.grad_home_hop, YUNCHANG_RING.accum_bytes_per_elem) == (
        4, True, 10)
    # Transformer Engine: K, V, dK, dV in the activations' bf16, R-1 hops, bf16 add_ (read 2 + 2, write 2).
    assert (TE_RING.grad_elem_bytes, TE_RING.grad_home_hop, TE_RING.accum_bytes_per_elem) == (2, False, 6)
    # Buffers per local K element: yunchang's next K, V (2 x 2) and current and next fp32 dK, dV
    # (4 x 4); TE's two (2, [K, V]) bf16 tensors (2 x 2 x 2 x 2).
    assert (YUNCHANG_RING.buffer_bytes_per_kv_elem, TE_RING.buffer_bytes_per_kv_elem) == (20, 16)
    assert (grad_hops(YUNCHANG_RING, 4), grad_hops(TE_RING, 4)) == (4, 3)


def test_ring_bytes_by_hand():
    block = 64 * 2 * 16  # batch 1, 64 tokens per ring rank, 2 KV heads, head_dim 16
    shape = dict(batch=1, seq_len=256, num_kv_heads=2, head_dim=16, tp=1, ulysses=1, ring=4, elem_bytes=2)
    kv = 2 * 3 * block * 2  # K and V for 3 steps, bf16
    yunchang = ring_bytes_per_layer(**shape)
    te = ring_bytes_per_layer(**shape, grad_elem_bytes=2, grad_home_hop=False)
    assert int(yunchang) == 2 * kv + 2 * 4 * block * 4  # forward, backward K/V, and 4 fp32 dK/dV hops
    assert int(te) == 2 * kv + 2 * 3 * block * 2  # ... 3 bf16 hops


def test_te_backward_has_no_exposed_hop_home_and_moves_bf16_gradients():
    yun = attention_times(H100, **SHAPE)
    # TE's half-tensor copies and bf16 merges apart (the next tests), its forward is yunchang's ring.
    te = attention_times(H100, **SHAPE, ring_impl=TE_RING.model_copy(update={
        "half_copies": False, "merge_bytes_per_elem": 38, "merge_ends_bytes_per_elem": 12}))
    # The forward is the same ring.
    assert te.fwd_s[0] == pytest.approx(yun.fwd_s[0])
    # Backward compute differs only by the accumulation: 10 vs 6 bytes a step over dQ, dK, dV on
    # the 4 steps, slowed alike while transfers run (the transfers differ too: checked below).
    accum_delta = 4 * float(memory_pass_time_s(H100, 4 * (Q_ELEMS + 2 * KV_ELEMS)))
    assert yun.bwd_compute_s[0] - te.bwd_compute_s[0] >= accum_delta
    # yunchang's last fp32 hop home is exposed whole; TE's transfers hide behind its kernels here.
    home = float(p2p_time_s(H100, 2 * KV_ELEMS * 4, 4, 1, 8))
    assert yun.bwd_ring_exposed_s[0] == pytest.approx(home, rel=1e-9)
    assert te.bwd_ring_exposed_s[0] == 0.0


def test_te_up_to_1_9_zigzag_steps_copy_their_halves():
    # Llama-3-8B at 128K over ring 4 (SHAPE): with Transformer Engine up to v1.9 the 3 later steps
    # each copy (read + write, bf16) the larger of the K and V halves (one block, 8 KV heads) and
    # the Q half (32 heads), forward, and of the K and V halves and the Q, O and dO halves
    # backward; from v1.10 (TE_RING) the halves of Megatron's sbhd tensors are views, and yunchang
    # passes strided views: neither copies.
    from sp_planner.cost.ring_impl import RING_IMPLS, TE_1_9_RING, half_copy_bytes

    fwd_bytes = 2 * 2 * max(KV_ELEMS, Q_ELEMS / 2)
    bwd_bytes = 2 * 2 * max(KV_ELEMS, 3 * Q_ELEMS / 2)
    assert half_copy_bytes(TE_1_9_RING, q_elems=Q_ELEMS, kv_elems=KV_ELEMS, elem_bytes=2,
                           backward=False) == fwd_bytes
    assert half_copy_bytes(TE_1_9_RING, q_elems=Q_ELEMS, kv_elems=KV_ELEMS, elem_bytes=2,
                           backward=True) == bwd_bytes
    for ring_impl in (TE_RING, YUNCHANG_RING):
        assert half_copy_bytes(ring_impl, q_elems=Q_ELEMS, kv_elems=KV_ELEMS, elem_bytes=2, backward=True) == 0
    assert RING_IMPLS["transformer_engine_1.9"] is TE_1_9_RING
    # The same ring otherwise: widths, hops, buffers and merges.
    assert TE_1_9_RING.model_copy(update={"name": TE_RING.name, "half_copies": False, "host_ops_per_step_fwd": 6,
                                          "host_ops_per_step_bwd": 5}) == TE_RING
    plain = attention_times(H100, **SHAPE, ring_impl=TE_RING)
    te = attention_times(H100, **SHAPE, ring_impl=TE_1_9_RING)
    # Added to the 3 later steps' compute, slowed at most by NCCL's share of the SMs (cost.overlap).
    for got, nbytes in ((te.fwd_compute_s[0] - plain.fwd_compute_s[0], fwd_bytes),
                        (te.bwd_compute_s[0] - plain.bwd_compute_s[0], bwd_bytes)):
        copies_s = 3 * float(memory_pass_time_s(H100, nbytes))
        assert copies_s * (1 - 1e-12) <= got <= copies_s * (1 + 16 / 132)
    # Non-causal rings (Transformer Engine's "all" section) copy nothing.
    full = dict(SHAPE, causal=False)
    off = attention_times(H100, **full, ring_impl=TE_RING)
    assert attention_times(H100, **full, ring_impl=TE_1_9_RING).fwd_s[0] == pytest.approx(off.fwd_s[0], rel=1e-12)


def test_te_merges_the_step_outputs_in_bf16():
    # yunchang's unfused fp32 merge: 38 B an output element a later step, 12 for the ends; TE's fused
    # bf16 correction: 6 (read out and the step's output, write out) and 4 (the first step's init).
    assert (YUNCHANG_RING.merge_bytes_per_elem, YUNCHANG_RING.merge_ends_bytes_per_elem) == (38, 12)
    assert (TE_RING.merge_bytes_per_elem, TE_RING.merge_ends_bytes_per_elem) == (6, 4)
    fp32 = TE_RING.model_copy(update={"merge_bytes_per_elem": 38, "merge_ends_bytes_per_elem": 12})
    saved = attention_times(H100, **SHAPE, ring_impl=fp32).fwd_compute_s[0] - attention_times(
        H100, **SHAPE, ring_impl=TE_RING).fwd_compute_s[0]
    # 3 later steps of 32 B less, 8 B less once, over the rank's Q-sized output; the middle steps'
    # merges are slowed by NCCL's SM share while K/V move (cost.overlap).
    low = float(memory_pass_time_s(H100, (3 * 32 + 8) * Q_ELEMS))
    assert low * (1 - 1e-12) <= saved <= low * (1 + 16 / 132)


def test_simulator_steps_follow_the_ring():
    model = load_model("llama3-8b")
    kw = dict(batch=1, seq_len=131072, tp=1, ulysses=1, ring=4, causal=True, zigzag=True)
    yun = attention_steps(H100, model, **kw)
    te = attention_steps(H100, model, **kw, ring_impl=TE_RING)
    assert (yun.ring_dkv_bytes, te.ring_dkv_bytes) == (2 * KV_ELEMS * 4, 2 * KV_ELEMS * 2)
    assert (yun.ring_dkv_home, te.ring_dkv_home) == (True, False)
    assert te.ring_kv_bytes == yun.ring_kv_bytes == 2 * KV_ELEMS * 2
    assert LayerWork.model_fields["ring_dkv_home"].default is True


def test_megatron_plans_run_tes_ring_and_yunchangs_keep_theirs():
    from sp_planner.cost.comm_buffers import comm_buffer_bytes
    from sp_planner.cost.runtime import MEGATRON_RUNTIME
    from sp_planner.search import evaluate
    from sp_planner.specs import Workload

    model, workload = load_model("llama3-8b"), Workload(seq_len=131072, global_batch=2)
    plan = ParallelPlan(dp=2, ring=4, zero=1, micro_batch=1)
    te = evaluate(model, H100, workload, plan, num_nodes=1, gpus_per_node=8, runtime=MEGATRON_RUNTIME)
    # The same runtime with yunchang's ring (the USP corpus rows' Megatron-LM).
    yunchang = MEGATRON_RUNTIME.model_copy(update={"ring": YUNCHANG_RING})
    yun = evaluate(model, H100, workload, plan, num_nodes=1, gpus_per_node=8, runtime=yunchang)
    # Per layer and micro-batch the dK/dV traffic falls from 4 fp32 hops to 3 bf16 ones.
    per_layer_delta = 2 * KV_ELEMS * (4 * 4 - 3 * 2)
    assert yun.comm_bytes.ring_p2p - te.comm_bytes.ring_p2p == per_layer_delta * 32 * 1
    # The ring buffers: 20 against 16 bytes per local K element, and an fp32 against a bf16 dQ.
    buffers_delta = KV_ELEMS * (20 - 16) + 32768 * 32 * 128 * (4 - 2)
    kw = dict(tp=1, ulysses=1, ring=4, micro_batch=1)
    yun_buffers = comm_buffer_bytes(model, workload, **kw, ring_impl=YUNCHANG_RING).attention_bytes
    te_buffers = comm_buffer_bytes(model, workload, **kw, ring_impl=TE_RING).attention_bytes
    assert yun_buffers - te_buffers == pytest.approx(buffers_delta)
    # This plan peaks at the loss (32,768 tokens x 128,256 logits x 6 B, cost.memory), when the
    # ring's buffers are freed: neither runtime holds them at the peak.
    assert yun.memory.logits_bytes == te.memory.logits_bytes == 6 * 32768 * 128256
    assert yun.memory.comm_buffers_bytes == te.memory.comm_buffers_bytes == 0.0


def test_allgather_cp_reduce_scatters_in_the_rings_width():
    # All-gather CP: the backward's exposed time is the K/V gather again plus the dK and dV
    # reduce-scatters of R-1 local blocks, in fp32 (yunchang, the executor) or bf16 (TE).
    from sp_planner.cost.links import ring_collective_time_s

    kw = {**SHAPE, "allgather": np.array([True])}
    yun = attention_times(H100, **kw)
    te = attention_times(H100, **kw, ring_impl=TE_RING)
    gather = 2 * float(ring_collective_time_s(H100, "all_gather", 3 * KV_ELEMS * 2, 4, 1, 8))
    for times, grad_bytes in ((yun, 4), (te, 2)):
        scatter = 2 * float(ring_collective_time_s(H100, "reduce_scatter", 3 * KV_ELEMS * grad_bytes, 4, 1, 8))
        assert times.bwd_ring_exposed_s[0] == pytest.approx(gather + scatter, rel=1e-12)


def test_mindspeeds_ring_has_tes_backward_but_neither_its_copies_nor_its_merges():
    # MindSpeed (ring_context_parallel.py at 1ada966): bf16 dK/dV for R-1 hops as TE; its [2, s, b, h]
    # chunks are contiguous views (no half copies) and forward_update merges with fp32 scales.
    from sp_planner.cost.ring_impl import MINDSPEED_RING, RING_IMPLS

    assert RING_IMPLS["mindspeed"] is MINDSPEED_RING
    backward = ("grad_elem_bytes", "grad_home_hop", "accum_bytes_per_elem", "buffer_bytes_per_kv_elem",
                "dq_accum_bytes")
    assert all(getattr(MINDSPEED_RING, k) == getattr(TE_RING, k) for k in backward)
    assert not MINDSPEED_RING.half_copies
    assert (MINDSPEED_RING.merge_bytes_per_elem, MINDSPEED_RING.merge_ends_bytes_per_elem) == (38, 12)
    assert not MINDSPEED_RING.allgather_prefix_calls


def test_te_allgather_copies_outputs_instead_of_merging_them():
    # TE's all-gather CP (context_parallel.py at d0067d0): forward, the gathered K and V reordered
    # (read + write 2 B, R = 4 local blocks each) and the two chunks' outputs copied into O (read +
    # write the rank's O, Q-sized); no merge. The executor's (yunchang's) merges instead: 38 + 12 B
    # an output element.
    full = 4 * KV_ELEMS
    passes = dict(q_elems=Q_ELEMS, kv_elems=KV_ELEMS, ring=4, causal=True, elem_bytes=2)
    assert TE_RING.allgather_prefix_calls and not YUNCHANG_RING.allgather_prefix_calls
    assert allgather_pass_bytes(TE_RING, **passes, backward=False) == 2 * 2 * 2 * full + 2 * 2 * Q_ELEMS
    assert allgather_pass_bytes(YUNCHANG_RING, **passes, backward=False) == 2 * 2 * 2 * full + 50 * Q_ELEMS
    # Backward: K/V reordered again, dK/dV zero-filled (2 B), each chunk's dQ copied into dQ, the
    # chunks' dK/dV added into their prefix slices (read 2 + 2, write 2), which cover 9/8 of the
    # sequence at R = 4 (chunks 0 and 7 of 8 on rank 0: 1 + 8 eighths), and dK/dV reordered back.
    prefix = full * 9 / 8
    by_hand = 8 * full + 2 * 2 * full + 2 * 2 * Q_ELEMS + 2 * 6 * prefix + 8 * full
    assert allgather_pass_bytes(TE_RING, **passes, backward=True) == pytest.approx(by_hand, rel=1e-15)
    # Without a causal mask each chunk reads the whole sequence.
    unmasked = {**passes, "causal": False}
    assert allgather_pass_bytes(TE_RING, **unmasked, backward=True) == pytest.approx(
        by_hand + 2 * 6 * (2 * full - prefix), rel=1e-15)
    # Through the layer time: the forward differs by exactly those bytes, kernels alike.
    kw = {**SHAPE, "allgather": np.array([True])}
    te, yun = attention_times(H100, **kw, ring_impl=TE_RING), attention_times(H100, **kw)
    saved = float(memory_pass_time_s(H100, (50 - 4) * Q_ELEMS))
    assert yun.fwd_compute_s[0] - te.fwd_compute_s[0] == pytest.approx(saved, rel=1e-9)
