"""Per-ring-step compute and per-collective bytes of one attention layer, for the timeline.

The analytic model (sp_planner.cost.attention) folds the ring steps into a closed form; the
simulator needs them one by one to overlap each with its transfer. The kernels, merge and
accumulation passes are the cost model's (cost.ring_steps), so with no contention the two agree
step for step:
- forward step 0 runs the causal diagonal block; steps 1..R-1 run the later blocks plus the
  online-softmax merge; the last step also converts the fp32 accumulator back (`ends`);
- backward steps also accumulate dQ/dK/dV (`accum`, in the ring's width: cost.ring_impl) when ring > 1.
Bytes follow sp_planner.cost.attention_comm (the contract with the executor). Under all-gather CP
the ring axis has no steps: one compute entry each way (cost.attention.allgather_times) and the
K/V all-gather (forward and backward) and dK/dV reduce-scatter (backward) around it. A DeepSeek
Sparse Attention layer is cost.dsa_times' one entry each way, its gathers forward only (dsa_phases).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.attention import AttentionTimes, allgather_times
from sp_planner.cost.attention_comm import (
    allgather_kv_block_elems,
    kv_heads_for_ulysses,
    ring_bytes_per_layer,
    ulysses_all_to_all_bytes,
    ulysses_layout_copy_bytes,
)
from sp_planner.cost.attention_kernels import kernel_head_dim
from sp_planner.cost.dropout import has_attention_dropout
from sp_planner.cost.dsa_loss import indexer_loss_bytes
from sp_planner.cost.dsa_times import dsa_comm_bytes, dsa_times, latent_gather_share
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.ring_impl import YUNCHANG_RING, RingImpl, grad_hops
from sp_planner.cost.ring_steps import ring_step_compute
from sp_planner.cost.window import local_window, windowed_attention_times
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class AttentionSteps(NamedTuple):
    fwd_steps_s: tuple[float, ...]
    bwd_steps_s: tuple[float, ...]
    # Bytes one rank sends in one occurrence of each collective.
    ulysses_q_bytes: float  # one all-to-all of Q (or O, dO, dQ)
    ulysses_kv_bytes: float  # one all-to-all of K (or V, dK, dV)
    ring_kv_bytes: int  # one K + V block
    ring_dkv_bytes: int  # one dK + dV accumulator
    ring_dkv_home: bool = True  # the accumulators' last hop home after the last step (cost.ring_impl)
    cp_gather_bytes: float = 0.0  # all-gather CP: one all-gather of K (or V)
    cp_scatter_bytes: float = 0.0  # all-gather CP: one reduce-scatter of dK (or dV)
    # The layout copies around one all-to-all of Q (or O, dO, dQ) / of K (or V, dK, dV), in seconds
    # (cost.attention_comm.ULYSSES_LAYOUT_COPIES).
    ulysses_q_copy_s: float = 0.0
    ulysses_kv_copy_s: float = 0.0
    # DeepSeek Sparse Attention (cost.dsa_times): cp_gather_bytes are its latent and indexer keys'
    # (forward only), cp_scatter_bytes the latent gradient's, and this its indexer's inputs over TP.
    dsa_tp_gather_bytes: float | None = None
    # The trained indexer's key gradient, reduce-scattered over the ring axis backward (cost.dsa_loss).
    dsa_indexer_scatter_bytes: float = 0.0


def attention_steps(hardware: HardwareProfile, model: ModelSpec, *, batch: int, seq_len: int, tp: int,
                    ulysses: int, ring: int, causal: bool, zigzag: bool, elem_bytes: int = 2,
                    allgather: bool = False, ring_impl: RingImpl = YUNCHANG_RING,
                    gpus_per_node: int = 1) -> AttentionSteps:
    if model.dsa is not None:  # DeepSeek Sparse Attention (plan rule dsa_cp: all-gather CP, no ulysses)
        return _dsa_steps(hardware, model, batch=batch, seq_len=seq_len, tp=tp, ring=ring,
                          gpus_per_node=gpus_per_node)
    heads = model.num_heads / (tp * ulysses)
    kv_sent = int(kv_heads_for_ulysses(model.num_kv_heads, tp, ulysses))
    block = seq_len / ring
    tile = kernel_head_dim(hardware, model)
    drop = has_attention_dropout(model)  # unfused attention's dropout passes (cost.kernels)
    # The cost model's passes of one ring step (cost.ring_steps), one by one.
    passes = ring_step_compute(hardware, batch=batch, heads=heads, kv_heads=kv_sent / ulysses,
                               head_dim=model.head_dim, block=block, causal=causal, zigzag=zigzag,
                               elem_bytes=elem_bytes, ring_impl=ring_impl, kernel_head_dim=tile,
                               attention_dropout=drop)
    q_elems, kv_elems = float(passes.q_elems), float(passes.kv_elems)
    c0_f, c1_f = float(passes.first_fwd_s), float(passes.later_fwd_s + passes.copy_fwd_s)
    c0_b, c1_b = float(passes.first_bwd_s), float(passes.later_bwd_s + passes.copy_bwd_s)
    fwd: tuple[float, ...]
    bwd: tuple[float, ...]
    if ring == 1:
        fwd, bwd = (c0_f,), (c0_b,)
    else:
        merge, ends, accum = float(passes.merge_s), float(passes.ends_s), float(passes.accum_s)
        fwd = (c0_f,) + (c1_f + merge,) * (ring - 2) + (c1_f + merge + ends,)
        bwd = (c0_b + accum,) + (c1_b + accum,) * (ring - 1)

    common = dict(batch=batch, seq_len=seq_len, num_kv_heads=model.num_kv_heads, head_dim=model.head_dim,
                  tp=tp, ulysses=ulysses, ring=ring, elem_bytes=elem_bytes)
    a2a = dict(batch=batch, seq_len=seq_len, head_dim=model.head_dim, ulysses=ulysses, ring=ring,
               elem_bytes=elem_bytes)
    # The Ulysses all-to-alls of a Q-sized and a K-sized tensor and their layout copies, either way.
    q_heads = model.num_heads // tp
    uly_q_bytes, uly_kv_bytes = (float(ulysses_all_to_all_bytes(heads=h, **a2a)) for h in (q_heads, kv_sent))
    uly_q_copy_s, uly_kv_copy_s = (float(memory_pass_time_s(hardware, ulysses_layout_copy_bytes(heads=h, **a2a)))
                                   for h in (q_heads, kv_sent))
    if allgather and ring > 1:
        ag = allgather_times(hardware, batch=batch, seq_len=seq_len, heads=heads, head_dim=model.head_dim,
                             kv_elems=kv_elems, q_elems=q_elems, ring=ring, ring_stride=1, causal=causal,
                             zigzag=zigzag, gpus_per_node=1, elem_bytes=elem_bytes, ring_impl=ring_impl,
                             kernel_head_dim=tile, attention_dropout=drop)
        kv_block = allgather_kv_block_elems(**{k: v for k, v in common.items() if k != "elem_bytes"})
        return AttentionSteps(
            fwd_steps_s=(float(ag.fwd_compute_s),), bwd_steps_s=(float(ag.bwd_compute_s),),
            ulysses_q_bytes=uly_q_bytes, ulysses_kv_bytes=uly_kv_bytes,
            ulysses_q_copy_s=uly_q_copy_s, ulysses_kv_copy_s=uly_kv_copy_s,
            ring_kv_bytes=0, ring_dkv_bytes=0,
            cp_gather_bytes=float((ring - 1) * kv_block * elem_bytes),
            cp_scatter_bytes=float((ring - 1) * kv_block * ring_impl.grad_elem_bytes),
        )
    # ring_bytes_per_layer = 2(R-1) K/V blocks forward + backward, plus R (R-1 without the hop
    # home, cost.ring_impl) dK/dV accumulators.
    kv_only = int(ring_bytes_per_layer(grad_elem_bytes=0, **common))
    ring_total = int(ring_bytes_per_layer(grad_elem_bytes=ring_impl.grad_elem_bytes,
                                          grad_home_hop=ring_impl.grad_home_hop, **common))
    dkv_hops = grad_hops(ring_impl, ring)
    return AttentionSteps(
        fwd_steps_s=fwd,
        bwd_steps_s=bwd,
        ulysses_q_bytes=uly_q_bytes, ulysses_kv_bytes=uly_kv_bytes,
        ulysses_q_copy_s=uly_q_copy_s, ulysses_kv_copy_s=uly_kv_copy_s,
        ring_kv_bytes=kv_only // (2 * (ring - 1)) if ring > 1 else 0,
        ring_dkv_bytes=(ring_total - kv_only) // dkv_hops if ring > 1 else 0,
        ring_dkv_home=ring_impl.grad_home_hop,
    )


def ulysses_work_s(steps: AttentionSteps, q_s: float, kv_s: float) -> tuple[float, float]:
    """(Q, K, V in, O out) seconds of one layer's Ulysses exchanges, forward (dO in, dQ, dK, dV out
    backward): `q_s`, `kv_s` the all-to-all of one Q-sized and one K-sized tensor, plus each
    tensor's layout copies."""
    q, kv = q_s + steps.ulysses_q_copy_s, kv_s + steps.ulysses_kv_copy_s
    return q + 2 * kv, q


def windowed(steps: AttentionSteps, hardware: HardwareProfile, model: ModelSpec, *, batch: int, seq_len: int,
             tp: int, ulysses: int) -> AttentionSteps:
    """A local-attention model's attention (sliding windows, or Llama 4's chunks) averaged over its
    layers as the analytic model does (cost.window: the local layers' band or chunk kernel blended
    with the global layers' full one); the simulator passes a model of one layer kind
    (sim.kind_work), all local or all global. The plan rule window_ring keeps the ring at 1 there,
    so the layer has one step each way."""
    if local_window(model, seq_len) is None:
        return steps
    assert len(steps.fwd_steps_s) == 1, "local-attention layers run without a ring (plan rule window_ring)"
    full = AttentionTimes(*(np.array([v]) for v in (steps.fwd_steps_s[0], steps.bwd_steps_s[0], 0.0, 0.0, 0.0, 0.0)))
    blend = windowed_attention_times(full, hardware, model, seq_len=seq_len, batch=batch, tp=np.array([tp]),
                                     ulysses=ulysses, ring=1)
    return steps._replace(fwd_steps_s=(float(blend.fwd_compute_s[0]),), bwd_steps_s=(float(blend.bwd_compute_s[0]),))


def _dsa_steps(hardware: HardwareProfile, model: ModelSpec, *, batch: int, seq_len: int, tp: int, ring: int,
               gpus_per_node: int) -> AttentionSteps:
    """A DSA layer (cost.dsa_times) as one compute entry each way: the indexer, top-k and sparse MLA
    forward, sparse MLA's backward; its gathers' bytes (sim.step_work runs them forward only)."""
    tps, ones, rings = np.array([tp]), np.array([1]), np.array([ring])
    times = dsa_times(hardware, model, seq_len=seq_len, batch=batch, tp=tps, ulysses=ones, ring=rings,
                      gpus_per_node=gpus_per_node).attention_times()
    sent = dsa_comm_bytes(model, seq_len=seq_len, batch=batch, tp=tps, ulysses=ones, ring=rings)
    loss = indexer_loss_bytes(model, seq_len=seq_len, batch=batch, tp=tps, ring=rings)
    return AttentionSteps(
        fwd_steps_s=(float(times.fwd_compute_s[0]),), bwd_steps_s=(float(times.bwd_compute_s[0]),),
        ulysses_q_bytes=0.0, ulysses_kv_bytes=0.0, ring_kv_bytes=0, ring_dkv_bytes=0,
        cp_gather_bytes=float(sent.cp_gather[0]), cp_scatter_bytes=float(sent.cp_scatter[0]),
        dsa_tp_gather_bytes=float(sent.tp_gather[0]),
        dsa_indexer_scatter_bytes=float(loss.cp_scatter[0]),
    )


def dsa_phases(phase, model: ModelSpec, steps: AttentionSteps, groups) -> tuple[float, float]:
    """(forward gathers, backward scatter) seconds of a DSA layer as `phase` runs them on the
    cluster (sim.step_work): the latent key's and the indexer key's all-gathers over the ring axis
    and the indexer's inputs over tp, forward only; the latent gradient's reduce-scatter backward.
    The analytic model's terms (cost.dsa_times), call for call, with the trained indexer's key
    gradient's reduce-scatter (cost.dsa_loss; its target's TP all-reduce is inside the compute entry,
    which dsa_times overlaps with the loss's kernels)."""
    assert model.dsa is not None and steps.dsa_tp_gather_bytes is not None
    share = latent_gather_share(model)
    gather = (phase("cp latent key all-gather (dsa)", groups["ring"], steps.cp_gather_bytes * share, "ring",
                    "all_gather")
              + phase("cp indexer key all-gather (dsa)", groups["ring"], steps.cp_gather_bytes * (1 - share), "ring",
                      "all_gather")
              + phase("tp indexer input all-gather (dsa)", groups["tp"], steps.dsa_tp_gather_bytes, "ring",
                      "all_gather"))
    scatter = phase("cp dlatent reduce-scatter (dsa)", groups["ring"], steps.cp_scatter_bytes, "ring",
                    "reduce_scatter")
    if steps.dsa_indexer_scatter_bytes:  # the trained indexer's key gradient (cost.dsa_loss)
        scatter += phase("cp dindexer-key reduce-scatter (dsa)", groups["ring"], steps.dsa_indexer_scatter_bytes,
                         "ring", "reduce_scatter")
    return gather, scatter
