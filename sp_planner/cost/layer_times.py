"""One transformer layer's seconds per micro-batch on one rank, and the work at the pipeline's ends
beside the layers (vectorized over candidates): what cost.step multiplies by layers and
micro-batches before it adds the pipeline, data-parallel, host and optimizer terms.

Per layer: GEMMs, FP8 casts and memory-bound ops (cost.gemm_work) with the MoE dispatcher's
permutations and the busiest EP rank's extra expert GEMMs (cost.moe), core attention and its
ring/Ulysses comm (cost.attention, cost.window), TP all-gathers/reduce-scatters exposed (Megatron
without --tp-comm-overlap; overlapped with their GEMMs where a run states it, cost.tp_times),
MoE all-to-alls (less what Megatron's EP overlap hides, cost.ep_overlap) and recompute re-running
the forward it drops. Beside the layers: the logits and the embedding's and output layer's TP
collectives (cost.tp_times, cost.comm).
"""

from __future__ import annotations

from dataclasses import fields
from typing import NamedTuple

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.attention import AttentionTimes, attention_times
from sp_planner.cost.attention_kernels import kernel_head_dim
from sp_planner.cost.dropout import has_attention_dropout
from sp_planner.cost.ep_overlap import layer_ep_saving_s
from sp_planner.cost.expert_padding import NO_PADDING, padding_align_rows, router_pad_load
from sp_planner.cost.gemm_work import GemmWork, gemm_work
from sp_planner.cost.moe import (
    ETP_BACKWARD_COLLECTIVES,
    ETP_FORWARD_COLLECTIVES,
    MOE_BACKWARD_ALL_TO_ALLS,
    MOE_FORWARD_ALL_TO_ALLS,
    MoETimes,
    moe_times,
)
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.precision import gemm_peak_flops
from sp_planner.cost.ring_impl import RingImpl
from sp_planner.cost.tp_gathers import TpGathers, expert_precision
from sp_planner.cost.tp_times import LayerTP, layer_tp_times
from sp_planner.cost.dsa_times import sparse_attention_times
from sp_planner.cost.window import windowed_attention_times
from sp_planner.distinct import distinct_key, per_distinct_rows, per_key
from sp_planner.layout import CP_AXES, axis_stride, group_size
from sp_planner.cost.activations import sequence_parallel_region_tokens
from sp_planner.cost.mla_recompute import mla_up_proj_recompute_s
from sp_planner.cost.module_recompute import module_recompute_s
from sp_planner.cost.mlp_recompute import mlp_recompute_comm_s, mlp_recompute_s
from sp_planner.recompute import recomputes_mla_up_proj, recomputes_mlp, recomputes_moe_act
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_SELECTIVE
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


# The candidate columns layer_times never reads (the data-parallel and pipeline-schedule choices;
# pp it reads, LayerTimes holds it): a search chunk's ~5 x 10^4 costed candidates differ in the rest
# on a few thousand rows, each priced once (candidate_layer_times). tests/cost/test_layer_times.py
# checks that none of these is read.
UNREAD_COLUMNS = frozenset({"dp", "dp_replicate", "zero", "reshard", "vpp", "first_stage_layers",
                            "last_stage_layers", "vpp_group"})
# The columns a layer's GEMM side (its GEMMs, MoE dispatch and TP collectives, which read the
# sequence split as cp = ulysses x ring alone) and its core attention read: of the distinct layers a
# search chunk prices, about 1 in 20 and 1 in 25 differ in them (DeepSeek-V3 on 1,024 H100s: ~980
# with cp and ~830 of ~20,400), each priced once (layer_times). tests/cost/test_layer_times.py
# checks that each reads no other.
GEMM_COLUMNS = ("micro_batch", "tp", "ep", "etp", "precision", "fp8_current", "fp8_blockwise")
ATTENTION_COLUMNS = ("micro_batch", "tp", "ulysses", "ring", "zigzag", "allgather")


class LayerTimes(NamedTuple):
    """Seconds per micro-batch on one rank, per candidate: one average layer's parts (forward and
    backward) and the work at the pipeline's ends."""

    gemm_fwd_s: np.ndarray  # GEMMs, FP8 casts, memory-bound ops and the MoE permutations
    gemm_bwd_s: np.ndarray
    logits_s: np.ndarray  # the output layer's GEMMs and the loss (cost.gemm_work)
    attn: AttentionTimes
    tp_all_gather_s: np.ndarray  # one forward TP all-gather of a layer's activations (FP8 under FP8 and MXFP8)
    # One backward all-gather of a row-parallel output gradient (MXFP8: both usages) and of a saved
    # column-parallel input again (0 where the framework gathers none again: no sequence
    # parallelism, or torchtitan; cost.tp_gathers), as sim.step_work's LayerWork holds them.
    tp_grad_all_gather_s: np.ndarray
    tp_input_all_gather_s: np.ndarray | float
    tp_reduce_scatter_s: np.ndarray  # one TP reduce-scatter of them
    tp_fwd_s: np.ndarray  # a layer's TP collectives exposed in forward ...
    tp_bwd_s: np.ndarray  # ... and in backward
    tp_layer_s: np.ndarray
    out_tp_fwd_s: np.ndarray  # the output layer's forward TP collectives (bf16)
    out_tp_bwd_s: np.ndarray  # ... and its backward ones
    emb_tp_fwd_s: np.ndarray  # the embedding's forward TP collectives (bf16)
    emb_tp_bwd_s: np.ndarray  # the embedding's backward TP collectives (bf16, as every embedding gather)
    pp: np.ndarray  # the candidates' pipeline degrees: at pp 1 the loss stage holds the embedding
    moe_layer_s: np.ndarray  # MoE all-to-alls and etp collectives, forward and backward
    # The backward's MoE collectives before its expert GEMMs: the combine's all-to-all and etp
    # all-gather, which autograd runs first (the forward's last), off the data-parallel stream.
    moe_bwd_lead_s: np.ndarray | float
    ep_saving_s: np.ndarray | float  # what EP overlap hides per paired layer step (cost.ep_overlap)
    recompute_s: np.ndarray  # the forward recompute re-runs in backward
    per_layer_s: np.ndarray  # all of a layer's parts
    fwd_s: np.ndarray  # a layer's forward ...
    bwd_s: np.ndarray  # ... and backward (with its recompute)
    # The recompute that runs before the MLP's backward GEMMs (cost.mlp_recompute, cost.module_recompute):
    # recompute_s but for mla_up_proj's up-projections, which run after them (backward_lead_s).
    recompute_mlp_s: np.ndarray | float = 0.0
    # Of recompute_s, the collectives a full (TP, MoE dispatch/combine), mlp (TP) or selective recompute's
    # forward runs again (Ulysses' all-to-alls, exposed ring transfers): shown with their kind's
    # communication, as the docs' TP and dispatch/combine rows and sp-simulate count them (cost.step_layers).
    recompute_tp_s: np.ndarray | float = 0.0
    recompute_moe_s: np.ndarray | float = 0.0
    recompute_ulysses_s: np.ndarray | float = 0.0
    recompute_ring_s: np.ndarray | float = 0.0

    @property
    def head_tp_s(self) -> np.ndarray:
        """The loss stage's TP collectives beyond its layers: the output layer's, and at pp 1 the
        embedding's."""
        emb = self.emb_tp_fwd_s + self.emb_tp_bwd_s
        return self.out_tp_fwd_s + self.out_tp_bwd_s + np.where(self.pp == 1, emb, 0.0)

    @property
    def first_tp_s(self) -> np.ndarray:
        """The first stage's TP collectives beyond its layers: the embedding's where pp > 1."""
        return np.where(self.pp > 1, self.emb_tp_fwd_s + self.emb_tp_bwd_s, 0.0)


def layer_times(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *,
                gpus_per_node: int, overlap: Overlap, ring_impl: RingImpl, loss_bytes_per_logit: int,
                sequence_parallel: bool, tp_gathers: TpGathers, unpads_attention: bool = False,
                moe_router_dtype: str | None = None, expert_row_padding: str = NO_PADDING) -> LayerTimes:
    """`tp_gathers`: the recipes whose TP all-gathers the framework moves in low precision, and
    whether it gathers the saved inputs again (cost.tp_gathers); `unpads_attention`: the
    framework's unpad and pad passes around the attention kernel (cost.unpad_passes);
    `moe_router_dtype`: Megatron's --moe-router-dtype (cost.router); `expert_row_padding`: who
    pads each local expert's rows for FP8, its grouped MLP or its router (cost.expert_padding); the rest as
    cost.step.time_columns. The GEMM side and core attention are priced once per row distinct in
    what each reads (GEMM_COLUMNS and cp, ATTENTION_COLUMNS) and spread back: both work row by row."""
    tp, gpn = c.tp, gpus_per_node
    cp = group_size(c, CP_AXES)
    tokens = c.micro_batch * workload.seq_len / cp  # a rank's tokens per micro-batch in the sequence-sharded regions
    _, router_align = padding_align_rows(expert_precision(c.precision, tp_gathers), expert_row_padding)
    moe, work, tp_times = per_key(layer_gemm_side, distinct_key(c, GEMM_COLUMNS, cp), model, hardware, workload, c,
                                  cp=cp, tokens=tokens, gpus_per_node=gpn, overlap=overlap,
                                  loss_bytes_per_logit=loss_bytes_per_logit, sequence_parallel=sequence_parallel,
                                  tp_gathers=tp_gathers, unpads_attention=unpads_attention,
                                  moe_router_dtype=moe_router_dtype, expert_row_padding=expert_row_padding)
    gemm_fwd, gemm_bwd, gemm_only, logits = work
    layer_gemm_fwd = gemm_fwd  # the layer's GEMMs alone, which the mlp recompute re-runs a share of
    # The MoE dispatcher's permutations, forward and their mirror in backward (cost.moe).
    gemm_fwd, gemm_bwd = gemm_fwd + moe.permute_s, gemm_bwd + moe.permute_s
    attn = per_distinct_rows(lambda rows: layer_attention(model, hardware, workload, rows, gpus_per_node=gpn,
                                                          ring_impl=ring_impl), c, ATTENTION_COLUMNS)
    ag, rs, tp_fwd, tp_bwd = tp_times.all_gather_s, tp_times.reduce_scatter_s, tp_times.fwd_s, tp_times.bwd_s
    tp_layer = tp_fwd + tp_bwd
    moe_fwd = MOE_FORWARD_ALL_TO_ALLS * moe.all_to_all_s + ETP_FORWARD_COLLECTIVES * moe.etp_collective_s
    moe_bwd = MOE_BACKWARD_ALL_TO_ALLS * moe.all_to_all_s + ETP_BACKWARD_COLLECTIVES * moe.etp_collective_s
    moe_layer = moe_fwd + moe_bwd
    # Megatron's EP all-to-all overlap, where a run states it (cost.ep_overlap): the paired layer
    # steps hide part of the dispatch/combine behind the other micro-batch's compute.
    ep_saving = 0.0  # per paired layer step
    if overlap.ep_comm:
        ep_saving = layer_ep_saving_s(hardware, model, gemm_fwd_s=gemm_fwd, gemm_bwd_s=gemm_bwd,
                                      attn_fwd_s=attn.fwd_s, attn_bwd_s=attn.bwd_s, tp_fwd_s=tp_fwd,
                                      tp_bwd_s=tp_bwd, all_to_all_s=moe.all_to_all_s, ep=c.ep,
                                      ep_stride=axis_stride(c, "ep"), gpus_per_node=gpn)
    recompute = c.recompute
    full, selective = recompute == RECOMPUTE_FULL, recompute == RECOMPUTE_SELECTIVE
    recompute_layer = np.select(
        [full, selective],
        [gemm_fwd + attn.fwd_s + tp_fwd + moe_fwd, attn.fwd_s],
        0.0,
    )
    if model.mla is not None:  # MLA's up-projections and RoPE again (cost.mla_recompute)
        up_proj = mla_up_proj_recompute_s(model, hardware, tokens=tokens, tp=tp, precision=c.precision,
                                          fp8_blockwise=c.fp8_blockwise)
        recompute_layer = np.where(recomputes_mla_up_proj(recompute), up_proj, recompute_layer)
    # The dense layers' MLP forward again, with its TP all-gather and reduce-scatter (cost.mlp_recompute).
    mlp_again = mlp_recompute_s(model, gemm_fwd_s=layer_gemm_fwd, tp_all_gather_s=ag, tp_reduce_scatter_s=rs,
                                recompute=recompute)
    recompute_layer = recompute_layer + mlp_again
    if model.moe is not None:  # the MoE activation and the standalone norms again (cost.module_recompute)
        recompute_layer = recompute_layer + module_recompute_s(
            model, hardware, tokens=tokens, region=sequence_parallel_region_tokens(tokens, tp, sequence_parallel),
            tp=tp, ep=c.ep, recompute=recompute, pad_load=router_pad_load(model, tokens / tp, router_align))
    per_layer = (
        gemm_fwd + gemm_bwd + attn.fwd_compute_s + attn.bwd_compute_s + attn.fwd_ring_exposed_s
        + attn.bwd_ring_exposed_s + attn.fwd_ulysses_s + attn.bwd_ulysses_s + tp_layer + recompute_layer
        + moe_layer
    )
    return LayerTimes(
        gemm_fwd_s=gemm_fwd, gemm_bwd_s=gemm_bwd, logits_s=logits, attn=attn,
        tp_all_gather_s=ag, tp_grad_all_gather_s=tp_times.grad_all_gather_s,
        tp_input_all_gather_s=tp_times.input_all_gather_s,
        tp_reduce_scatter_s=rs, tp_fwd_s=tp_fwd, tp_bwd_s=tp_bwd, tp_layer_s=tp_layer,
        out_tp_fwd_s=tp_times.out_fwd_s, out_tp_bwd_s=tp_times.out_bwd_s, emb_tp_fwd_s=tp_times.emb_fwd_s,
        emb_tp_bwd_s=tp_times.emb_bwd_s, pp=c.pp, moe_layer_s=moe_layer,
        moe_bwd_lead_s=moe.all_to_all_s + moe.etp_collective_s,
        ep_saving_s=ep_saving, recompute_s=recompute_layer, per_layer_s=per_layer,
        recompute_mlp_s=np.where(recomputes_mla_up_proj(recompute), mlp_again, recompute_layer),
        fwd_s=gemm_fwd + attn.fwd_s + tp_fwd + moe_fwd,
        bwd_s=gemm_bwd + attn.bwd_s + tp_bwd + recompute_layer + moe_bwd,
        recompute_tp_s=np.where(full, tp_fwd, 0.0) + mlp_recompute_comm_s(
            model, tp_all_gather_s=ag, tp_reduce_scatter_s=rs, recompute=recompute),
        recompute_moe_s=np.where(full, moe_fwd, 0.0),
        recompute_ulysses_s=np.where(full | selective, attn.fwd_ulysses_s, 0.0),
        recompute_ring_s=np.where(full | selective, attn.fwd_ring_exposed_s, 0.0),
    )


def candidate_layer_times(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *,
                          gpus_per_node: int, **runtime) -> LayerTimes:
    """layer_times of the candidates `c`, priced once per row distinct in the columns it reads (every
    column but UNREAD_COLUMNS); `runtime`: layer_times' other keywords."""
    return per_distinct_rows(lambda rows: layer_times(model, hardware, workload, rows, gpus_per_node=gpus_per_node,
                                                      **runtime),
                             c, [f.name for f in fields(c) if f.name not in UNREAD_COLUMNS])


def layer_gemm_side(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *, cp, tokens,
                    gpus_per_node: int, overlap: Overlap, loss_bytes_per_logit: int, sequence_parallel: bool,
                    tp_gathers: TpGathers, unpads_attention: bool, moe_router_dtype: str | None,
                    expert_row_padding: str) -> tuple[MoETimes, GemmWork, LayerTP]:
    """A layer's MoE dispatch and busiest-rank expert GEMMs (cost.moe), its GEMMs, FP8 casts and
    memory-bound ops and the logits (cost.gemm_work), and its TP collectives, exposed or overlapped
    with its GEMMs, with the embedding's and the output layer's (cost.tp_times), of the candidates
    `c`: GEMM_COLUMNS and `cp` (their ulysses x ring) alone are read, `tokens` (a rank's per
    micro-batch) computed from them; the options as layer_times'."""
    tp, gpn = c.tp, gpus_per_node
    experts = expert_precision(c.precision, tp_gathers)
    copies_align, router_align = padding_align_rows(experts, expert_row_padding)
    moe = moe_times(hardware, model, tokens_per_tp_rank=tokens / tp, ep=c.ep, etp=c.etp,
                    ep_stride=axis_stride(c, "ep"), elem_bytes=BF16_BYTES, gpus_per_node=gpn,
                    gemm_flops_per_s=gemm_peak_flops(hardware, experts, c.fp8_blockwise),
                    pad_align_rows=copies_align, router_pad_align_rows=router_align)
    # The layers' GEMMs, FP8 casts and memory-bound ops, and the logits (cost.gemm_work), with the
    # busiest EP rank's extra expert GEMMs (cost.moe: its load over the mean and the small-M
    # grouped-GEMM slowdown of cost.grouped_gemm; 0 for dense models; layer_gemm_flops_per_token
    # holds the active experts' GEMMs already).
    work = gemm_work(model, hardware, seq_len=workload.seq_len, tp=tp, micro_batch=c.micro_batch, cp=cp, ep=c.ep,
                     etp=c.etp, precision=c.precision, fp8_current=c.fp8_current, gpus_per_node=gpn,
                     extra_fwd_s=moe.extra_expert_gemm_fwd_s,
                     loss_bytes_per_logit=loss_bytes_per_logit, fp8_blockwise=c.fp8_blockwise,
                     sequence_parallel=sequence_parallel, tp_gathers=tp_gathers,
                     unpads_attention=unpads_attention, moe_router_dtype=moe_router_dtype)
    # A layer's TP collectives, exposed or overlapped with its GEMMs, and the embedding's and
    # the output layer's (cost.tp_times).
    tp_times = layer_tp_times(model, hardware, c, tokens=tokens, gpus_per_node=gpn, overlap=overlap,
                              sequence_parallel=sequence_parallel, tp_gathers=tp_gathers, gemm_only_s=work.gemm_only_s)
    return moe, work, tp_times


def layer_attention(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *,
                    gpus_per_node: int, ring_impl: RingImpl) -> AttentionTimes:
    """A layer's core attention and its ring/Ulysses comm (cost.attention, cost.window, cost.dsa_times) of the
    candidates `c`: ATTENTION_COLUMNS alone are read."""
    attn = attention_times(
        hardware, batch=c.micro_batch, seq_len=workload.seq_len, num_heads=model.num_heads,
        num_kv_heads=model.num_kv_heads, head_dim=model.head_dim, tp=c.tp, ulysses=c.ulysses, ring=c.ring,
        causal=workload.causal, zigzag=c.zigzag, gpus_per_node=gpus_per_node, elem_bytes=BF16_BYTES,
        allgather=c.allgather, ring_impl=ring_impl, kernel_head_dim=kernel_head_dim(hardware, model),
        attention_dropout=has_attention_dropout(model),
    )
    attn = windowed_attention_times(attn, hardware, model, seq_len=workload.seq_len, batch=c.micro_batch, tp=c.tp,
                                    ulysses=c.ulysses, ring=c.ring)
    # DeepSeek Sparse Attention's indexer, top-k and sparse MLA in place of dense MLA (cost.dsa_times).
    return sparse_attention_times(attn, hardware, model, seq_len=workload.seq_len, batch=c.micro_batch, tp=c.tp,
                                  ulysses=c.ulysses, ring=c.ring, gpus_per_node=gpus_per_node)


def backward_lead_s(lt: LayerTimes, recompute) -> np.ndarray:
    """Seconds on the compute stream before a layer's first backward GEMM, per candidate
    (cost.dp_exposure.Edges.bwd_lead_s), in sim.layer_program's order: the output gradient's TP
    all-gather (MXFP8: both usages, cost.gathered_transpose) and the saved input's again where the
    framework gathers it again (cost.tp_gathers), then an MoE layer's combine all-to-all and etp
    all-gather (its first backward GEMM is the experts', sim.layer_program._backward_layer: ZeRO-3's
    backward gathers hide behind that all-to-all in both models), after the
    recomputed core attention under selective recompute (the up-projections under mla_up_proj: their
    hook runs before core attention's backward, after the MLP's); under full recompute the
    recomputed forward's first (input) all-gather; under moe_act (and layernorm) the re-run activation
    and norms (cost.module_recompute: their hooks fire as the MLP's gradient arrives, before its GEMMs);
    under mlp the dense MLP's re-run forward, before the MLP's backward (cost.mlp_recompute; with
    mla_up_proj too, the up-projections' part comes after the MLP's backward and is left out)."""
    gathers = lt.tp_grad_all_gather_s + lt.tp_input_all_gather_s + lt.moe_bwd_lead_s
    return np.select([recompute == RECOMPUTE_FULL, recompute == RECOMPUTE_SELECTIVE,
                      recomputes_moe_act(recompute) | recomputes_mlp(recompute)],
                     [lt.tp_all_gather_s, gathers + lt.attn.fwd_s, gathers + lt.recompute_mlp_s], gathers)
