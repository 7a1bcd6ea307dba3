"""Megatron's expert-parallel all-to-all overlap (--overlap-moe-expert-parallel-comm), vectorized.

With the flag Megatron runs a combined 1F1B schedule: each step pairs one micro-batch's forward
of a layer with another micro-batch's backward of a layer and splits each into attention, MoE
dispatch, expert MLP and MoE combine nodes, the all-to-alls on a communication stream and the rest
on the compute stream (Megatron-LM dev d48bd6be, megatron/core/models/common/
model_chunk_schedule_plan.py, TransformerLayerSchedulePlan.run, lines 505-600):
  comm stream:    combine_bwd | dispatch_fwd -> dispatch_bwd              | combine_fwd
  compute stream: attn_fwd    | mlp_bwd -> mlp_bwd_dw -> mlp_fwd          | attn_bwd
issued in the order combine_bwd, attn_fwd, mlp_bwd, dispatch_fwd, mlp_bwd_dw, dispatch_bwd,
mlp_fwd, combine_fwd, attn_bwd, each waiting for its input: mlp_bwd for combine_bwd's gradient,
dispatch_fwd for attn_fwd's output, dispatch_bwd for mlp_bwd's, mlp_fwd for dispatch_fwd's,
combine_fwd for mlp_fwd's, attn_bwd for dispatch_bwd's. The next pair's attn_fwd takes this
pair's combine_fwd output and its combine_bwd this pair's attn_bwd gradient, so pairs follow each
other. pair_s below times one pair on the two streams with those dependencies (every all-to-all
one dispatch or combine, cost.moe); the sequential layer runs the same work on one stream.

Which work is paired (schedules.py lines 895-930 and combined_1f1b_schedule_for_no_pipelining):
without pipelining the first forward and the last backward run alone, m - 1 of m micro-batches
pair; with interleaved pipelining (Megatron requires it for the overlap with pp > 1) a stage's
warmup chunk-steps, 2 (pp - rank - 1) + (vpp - 1) pp + 1 (one extra for the overlap), run alone
and as many cooldown backwards, the rest pair. The pacing stage is taken as the last (rank pp - 1),
whose warmup is (vpp - 1) pp + 1 chunk-steps of m vpp. The pipeline bubble (the other stages'
micro-batches, cost.step) is still timed from the layers' time without the overlap: slightly long.

The hidden all-to-all is not free: its kernels hold SMs the paired compute loses while it runs,
as for hidden data-parallel traffic (cost.overlap.overlap_compute_slowdown, NCCL's 16 SMs; HybridEP
its own). And not all of a HybridEP call hides: its copies of the received rows and its
synchronization and flag updates (cost.hybridep.hybridep_unhidden_share, from HybridEP's
kernel-only against whole-call rates) run outside the overlap, added to the pair as exposed time.
(HybridEP's per-forward metadata preprocessing is in neither rate and not timed: cost.hybridep.)
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.deepep import deepep_sms
from sp_planner.cost.hybridep import hybridep_sms, hybridep_unhidden_share
from sp_planner.cost.overlap import NCCL_SMS_WHILE_OVERLAPPED, overlap_compute_slowdown
from sp_planner.cost.tp_overlap import gemm_shares
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def pair_s(*, attn_fwd_s, mlp_fwd_s, mlp_dgrad_s, mlp_wgrad_s, attn_bwd_s, all_to_all_s):
    """One combined 1F1B step of a layer (a forward paired with another micro-batch's backward)
    on the two streams (module docstring)."""
    af, mf, mb, mw, ab, c = (np.asarray(v, dtype=np.float64) for v in (
        attn_fwd_s, mlp_fwd_s, mlp_dgrad_s, mlp_wgrad_s, attn_bwd_s, all_to_all_s))
    # combine_bwd [0, c] on comm; attn_fwd [0, af] on compute.
    mlp_bwd_end = np.maximum(af, c) + mb  # after attn_fwd (stream) and combine_bwd (its gradient)
    dispatch_fwd_end = np.maximum(c, af) + c  # after combine_bwd (stream) and attn_fwd (its input)
    dispatch_bwd_end = np.maximum(dispatch_fwd_end, mlp_bwd_end) + c
    mlp_fwd_end = np.maximum(mlp_bwd_end + mw, dispatch_fwd_end) + mf
    combine_fwd_end = np.maximum(dispatch_bwd_end, mlp_fwd_end) + c
    attn_bwd_end = np.maximum(mlp_fwd_end, dispatch_bwd_end) + ab
    return np.maximum(combine_fwd_end, attn_bwd_end)


def paired_micro_batches(micro_batches, pp, vpp):
    """Micro-batches' worth of a stage's layer work that runs paired (module docstring): m - 1
    without pipelining, (m vpp - ((vpp - 1) pp + 1)) / vpp on the last stage of an interleaved
    pipeline, never below 0."""
    m, pp, vpp = (np.asarray(v, dtype=np.float64) for v in (micro_batches, pp, vpp))
    warmup = np.where(pp > 1, (vpp - 1) * pp + 1, 1.0)
    return np.maximum(m * vpp - warmup, 0.0) / vpp


def ep_overlap_saving_s(*, attn_fwd_s, mlp_fwd_s, mlp_dgrad_s, mlp_wgrad_s, attn_bwd_s, all_to_all_s,
                        slowdown, unhidden_share=0.0):
    """Seconds one paired layer step saves over running its forward and backward one after the
    other with the four all-to-alls exposed, less the compute the hidden all-to-alls slow
    (`slowdown`: the share of the GPU their kernels hold) and the share of each call that runs
    outside the overlap (`unhidden_share`, module docstring)."""
    c = np.asarray(all_to_all_s, dtype=np.float64)
    unhidden = np.asarray(unhidden_share, dtype=np.float64) * c
    parts = dict(attn_fwd_s=attn_fwd_s, mlp_fwd_s=mlp_fwd_s, mlp_dgrad_s=mlp_dgrad_s, mlp_wgrad_s=mlp_wgrad_s,
                 attn_bwd_s=attn_bwd_s, all_to_all_s=c - unhidden)
    sequential = np.asarray(attn_fwd_s) + mlp_fwd_s + mlp_dgrad_s + mlp_wgrad_s + attn_bwd_s + 4 * c
    hidden = np.maximum(sequential - (pair_s(**parts) + 4 * unhidden), 0.0)
    return hidden * (1.0 - np.asarray(slowdown, dtype=np.float64))


def layer_ep_saving_s(hardware: HardwareProfile, model: ModelSpec, *, gemm_fwd_s, gemm_bwd_s, attn_fwd_s,
                      attn_bwd_s, tp_fwd_s, tp_bwd_s, all_to_all_s, ep, ep_stride, gpus_per_node: int):
    """ep_overlap_saving_s of the model's average layer from cost.step's parts: its GEMM-side time
    (GEMMs with their casts and elementwise passes) split between the attention and the MLP nodes
    by their GEMMs' FLOP shares (cost.tp_overlap.gemm_shares: QKV and projection against FC1 and
    FC2), the MLP backward half dgrad and half wgrad; the hidden calls hold HybridEP's SMs
    (cost.hybridep), DeepEP's (cost.deepep: Megatron's 20 unless set) or NCCL's 16 (cost.overlap)."""
    mlp = sum(gemm_shares(model)[2:])
    dispatcher = model.moe.dispatcher if model.moe is not None else "alltoall"
    sms = (hybridep_sms(model, ep, ep_stride, gpus_per_node) if dispatcher == "hybridep"
           else deepep_sms(model) if dispatcher == "deepep" else NCCL_SMS_WHILE_OVERLAPPED)
    return ep_overlap_saving_s(
        attn_fwd_s=(1 - mlp) * gemm_fwd_s + attn_fwd_s + tp_fwd_s, mlp_fwd_s=mlp * gemm_fwd_s,
        mlp_dgrad_s=mlp * gemm_bwd_s / 2, mlp_wgrad_s=mlp * gemm_bwd_s / 2,
        attn_bwd_s=(1 - mlp) * gemm_bwd_s + attn_bwd_s + tp_bwd_s, all_to_all_s=all_to_all_s,
        slowdown=overlap_compute_slowdown(hardware) * np.asarray(sms, dtype=np.float64) / NCCL_SMS_WHILE_OVERLAPPED,
        unhidden_share=hybridep_unhidden_share(hardware, model, ep, ep_stride, gpus_per_node))
