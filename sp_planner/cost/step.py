"""Step time (TimeBreakdown fields) per candidate (vectorized); throughput and MFU from it (cost.step_columns).

The slowest pipeline stage sets the pace: we time the last stage (its layers plus the logits
GEMMs). Per micro-batch, per layer: GEMMs, FP8 casts and memory-bound ops, core attention and its
ring/Ulysses comm, TP all-gathers/reduce-scatters exposed, MoE all-to-alls, recompute re-running
the forward it drops (cost.layer_times). Across micro-batches: 1F1B bubble
(pp-1) micro-batch times (Narayanan et al. 2021: bubble fraction (p-1)/m), PP sends exposed
(and a tied embedding's gradient all-reduce between the pipeline's ends, cost.tied_embedding),
DP/ZeRO traffic overlapped as the framework's flags make it (cost.overlap: gradient reduce behind
the backward but the last bucket, parameter gathers behind the forward, ZeRO-3 layer by layer,
hidden traffic slowing compute; ZeRO-2/3's per-micro-batch traffic in a pipeline as the pacing
stage exposes it, cost.pipeline_dp; ZeRO-0/1's sync of the stage that ends it last,
cost.pipeline_tails), the host (CPU) time of eager PyTorch the GPU work does not hide
(cost.host_stalls, with the CUDA graphs a run states, cost.cuda_graphs), activation CPU
offloading's copies the layers do not hide (cost.offload), and an HBM-bound Adam step (the slowest
stage's). Without the data-parallel passes, the same sum bounds the step from below (cost.step_bound).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from sp_planner.cost.dp_times import dp_stage_tables, relay_stage_times
from sp_planner.cost.layer_times import backward_lead_s, candidate_layer_times
from sp_planner.cost.stage_layer_times import (first_chunks_bwd_s, middle_drain_s, pacing_layer_times,
                                               stage_layer_times)
from sp_planner.cost.chunk_path import kinds_path_s
from sp_planner.cost.kind_passes import kind_passes
from sp_planner.cost.ep_overlap import paired_micro_batches
from sp_planner.cost.kind_table import kind_table, mtp_layer_times
from sp_planner.cost.mtp import mtp_head_s
from sp_planner.cost.grad_buffer import MEGATRON_GRAD_SYNC, GradSync, slowest_stage_step_bytes
from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT
from sp_planner.cost.cuda_graphs import NO_GRAPHS, check_graph_scopes
from sp_planner.cost.embedding_work import embedding_work, stage_embedding_s
from sp_planner.cost.expert_padding import NO_PADDING
from sp_planner.cost.host_stalls import pacing_host_stalls_s
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.step_columns import StepColumns, step_columns
from sp_planner.cost.links import p2p_time_s
from sp_planner.cost.offload import stage_offload_exposed_s
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.dp_exposure import Edges
from sp_planner.cost.dp_passes import DPPasses, dp_with_host_beside_s
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.overlap import (
    MEGATRON_OVERLAP,
    Overlap,
    overlap_compute_slowdown,
    pp_sends_beside_compute,
)
from sp_planner.cost.ring_impl import TE_RING, RingImpl
from sp_planner.cost.pipeline_dp import LOSS_BACKWARD_SHARE
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.cost.stage_params import dp_lightest_middle_stages, dp_middle_stages, dp_ridden_middle_stages
from sp_planner.cost.zero_read_terms import zero_read_terms
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.cost.pipeline_path import compute_path_s, pipeline_bubble_s
from sp_planner.cost.pipeline_sends import edge_sends_s, kinds_edge_sends_s
from sp_planner.pipeline import stage_pace
from sp_planner.layout import CP_AXES, axis_stride, group_size
from sp_planner.distinct import distinct_key, per_key
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sp_planner.cost.step_options import StepOptions


# The candidate columns that change only how gradients and parameters move between data-parallel
# ranks (cost.dp_times, cost.pipeline_dp), not a layer's or a pipeline end's compute.
DP_CHOICE_COLUMNS = frozenset({"zero", "reshard", "dp_replicate"})


def time_columns(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                 **options: Unpack[StepOptions]) -> StepColumns:
    """StepColumns of the candidates `c`: the parts (time_parts) summed and stretched to the MFU
    ceiling (cost.step_columns); `options` as time_parts takes them (cost.step_options)."""
    return step_columns(model, hardware, workload, c, time_parts(model, hardware, workload, c, **options))


def time_parts(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *,
               gpus_per_node: int, overlap: Overlap = MEGATRON_OVERLAP,
               states: TrainingStates = MEGATRON_STATES,
               cuda_graphs: frozenset[str] = NO_GRAPHS, ring_impl: RingImpl = TE_RING,
               grad_sync: GradSync | None = MEGATRON_GRAD_SYNC,
               loss_bytes_per_logit: int = LOSS_BYTES_PER_LOGIT, sequence_parallel: bool = True,
               tp_gathers: TpGathers = TE_TP_GATHERS, unpads_attention: bool = False,
               moe_router_dtype: str | None = None, expert_row_padding: str = NO_PADDING,
               lower_bound: bool = False) -> tuple:
    """TimeColumns' fields but the last, per candidate (step_columns adds the MFU ceiling's);
    `lower_bound`: (the parts with cost.step_bound.BOUND_ZEROED_PARTS left at 0, unpriced, and
    zero_read_terms left out, the pacing stage's layers, the micro-batches) for cost.step_bound.
    `cuda_graphs`: the CUDA graph scopes a run states (cost.cuda_graphs; none for sp-plan);
    `ring_impl`: the framework's ring backward (cost.ring_impl; Megatron's Transformer Engine ring);
    `grad_sync`: its data-parallel wrapper's gradient passes (cost.grad_buffer; None: not counted);
    `loss_bytes_per_logit`: its cross entropy's HBM traffic (cost.gemm_work, cost.loss_memory);
    `sequence_parallel`: TP with Megatron's sequence parallelism (cost.gemm_work; Runtime);
    `tp_gathers`: the recipes whose TP all-gathers it moves in low precision (cost.tp_gathers);
    `unpads_attention`: its unpad and pad passes around the attention kernel (cost.unpad_passes);
    `moe_router_dtype`: its MoE router's GEMM dtype (Megatron --moe-router-dtype, cost.router);
    `expert_row_padding`: who pads each local expert's rows for FP8 (cost.expert_padding)."""
    check_graph_scopes(model, cuda_graphs)
    tp, dp, pp = c.tp, c.dp, c.pp
    b, recompute, gpn = c.micro_batch, c.recompute, gpus_per_node
    cp = group_size(c, CP_AXES)
    m = workload.global_batch / (dp * b)
    tokens = b * workload.seq_len / cp  # tokens per rank in the sequence-sharded regions

    runtime: dict[str, Any] = dict(
        gpus_per_node=gpn, overlap=overlap, ring_impl=ring_impl, loss_bytes_per_logit=loss_bytes_per_logit,
        sequence_parallel=sequence_parallel, tp_gathers=tp_gathers, unpads_attention=unpads_attention,
        moe_router_dtype=moe_router_dtype, expert_row_padding=expert_row_padding)
    average = candidate_layer_times(model, hardware, workload, c, **runtime)
    # Where the model's layers differ, each kind's layer priced once on the rows its readers need
    # (cost.kind_table); each stage's average layer from its own kinds (cost.stage_layer_times).
    table = kind_table(model, workload.seq_len, c, m,
                       lambda kind, rows: candidate_layer_times(kind, hardware, workload, rows, **runtime),
                       walked=not lower_bound)  # the bound prices no ZeRO-3 walk (cost.kind_passes)
    stage_lt = stage_layer_times(model, workload.seq_len, c, average, table)
    logits, out_tp_bwd = average.logits_s, average.out_tp_bwd_s
    head_tp, first_tp = average.head_tp_s, average.first_tp_s
    # The embedding's work each micro-batch (cost.embedding_work: the tables' gradient passes, a
    # learned position table's add, the embedding dropout): the one stage's at pp 1, the first
    # stage's beyond its layers with pp > 1, as the embedding's TP collectives.
    emb = embedding_work(model, hardware, tp=tp, pp=pp, tokens=tokens, seq_len=workload.seq_len,
                         grad_bytes=states.grad_bytes, wrapper=None if grad_sync is None else grad_sync.wrapper,
                         sequence_parallel=sequence_parallel)
    head_emb, first_emb = stage_embedding_s(emb, pp)
    # Multi-token prediction's depths on the last stage, after its layers (cost.mtp): the loss
    # stage's work beyond its layers, as the logits are; each depth's layer of its own kind.
    mtp_lt = mtp_layer_times(table, model, workload.seq_len, average)
    mtp_s, mtp_bwd = mtp_head_s(model, hardware, tokens=tokens, tp=tp, layer_total_s=mtp_lt.per_layer_s,
                                layer_bwd_s=mtp_lt.bwd_s, logits_s=logits, logits_bwd_share=LOSS_BACKWARD_SHARE,
                                emb_fwd_s=emb.fwd_s, emb_bwd_s=emb.bwd_s, out_tp_fwd_s=average.out_tp_fwd_s,
                                out_tp_bwd_s=out_tp_bwd, emb_tp_fwd_s=average.emb_tp_fwd_s,
                                emb_tp_bwd_s=average.emb_tp_bwd_s)
    output_logits, logits = logits, logits + mtp_s
    # The slowest stage sets the pace: the last (its layers plus the logits) or, with an uneven
    # split, possibly the first or a middle one (sp_planner.pipeline.stage_pace).
    stages = candidate_stage_layers(model, c)
    head = logits + head_tp + head_emb  # the loss stage's work beyond its layers
    first = first_tp + first_emb  # the first stage's (pp > 1)
    stage_layer = tuple(s.per_layer_s for s in stage_lt.by_stage)
    pace = stage_pace(stages, per_layer_s=stage_layer, last_extra_s=head, first_extra_s=first)
    layers = pace.layers
    # The pacing stage's average layer times its layers and micro-batches below.
    lt = pacing_layer_times(stage_lt, pace)
    gemm_fwd, gemm_bwd, attn, recompute_layer = lt.gemm_fwd_s, lt.gemm_bwd_s, lt.attn, lt.recompute_s
    per_layer = lt.per_layer_s
    ag, rs, tp_layer = lt.tp_all_gather_s, lt.tp_reduce_scatter_s, lt.tp_layer_s
    paced_logits = np.where(pace.last_paces, logits, 0.0)
    paced_emb = np.where(pace.last_paces, head_emb, np.where(pace.first_paces, first_emb, 0.0))
    paced_tp = np.where(pace.last_paces, head_tp, np.where(pace.first_paces, first_tp, 0.0))
    fwd_layer, bwd_layer = lt.fwd_s, lt.bwd_s
    # The embedding's backward after the first layer's (its TP all-gather, bf16 under FP8 too, and
    # its gradient passes): the first stage's beyond its layers with pp > 1, with its chunk 0
    # (cost.pipeline_dp reads it from Edges.bwd_tail_s below); before the last stage's first layer
    # backward, the loss and output layer's.
    emb_bwd = lt.emb_tp_bwd_s + emb.bwd_s
    first_bwd = np.where(pp > 1, emb_bwd, 0.0)
    ahead = LOSS_BACKWARD_SHARE * output_logits + out_tp_bwd + mtp_bwd
    # The bubble: the pipeline's critical path over the stages' compute blocks beyond the pacing
    # stage's m micro-batches (cost.pipeline_path): with equal stages (pp - 1)/vpp micro-batches
    # (Narayanan 2021 sections 2.2.1-2.2.2), the fill and drain through the other stages, the
    # interleaved drain's embedding backward whole and piled up, a pacing first or middle stage's
    # waits for the first and last micro-batches' turns. ZeRO-2/3's traffic lengthens the same
    # path's blocks (cost.pipeline_dp).
    stage_s = (stages.first * stage_layer[0] + first, stages.middle * stage_layer[1],
               stages.last * stage_layer[2] + head)
    stage_fwd, stage_bwd = tuple(s.fwd_s for s in stage_lt.by_stage), tuple(s.bwd_s for s in stage_lt.by_stage)
    # Its blocks are the layers' and the ends' work, which no data-parallel choice changes: priced
    # once per distinct rest of the candidate's columns (~6x fewer rows in a search chunk), as are
    # the fill's and drain's sends below (tests/cost/test_step.py checks both bit for bit).
    compute_key = distinct_key(c, [f.name for f in fields(c) if f.name not in DP_CHOICE_COLUMNS])
    path = closed_path = per_key(compute_path_s, compute_key, stages, pp, c.vpp, m, compute_s=stage_s,
                                 bwd_extra_s=(first_bwd, 0.0, ahead), fwd_layer_s=stage_fwd, bwd_layer_s=stage_bwd)
    if stage_lt.kinds is not None:
        # Where the stages' layers differ, so do their chunks, and an explicit split's interleaved
        # chunks: the path walked over each chunk's own layers in Megatron's order (cost.chunk_path).
        walked = kinds_path_s(model, workload.seq_len, c, m, stage_lt.kinds, first_s=first, first_bwd_s=first_bwd,
                              head_s=head, head_bwd_s=ahead)
        path = np.where(np.isnan(walked), path, walked)
    bubble = pipeline_bubble_s(path, pp, m, pace_s=pace.micro_s)

    # Host time per micro-batch beyond the GPU's (cost.host_stalls): the layers' GPU time split
    # forward (fwd_layer) and backward as the CPU issues it.
    host_fwd_stall, host_bwd_stall = pacing_host_stalls_s(
        model, hardware, c, fwd_layer_s=fwd_layer, layer_s=per_layer, layers=layers,
        ends_s=paced_logits + paced_tp + paced_emb, cuda_graphs=cuda_graphs, sequence_parallel=sequence_parallel,
        tp_gathers=tp_gathers, ring_impl=ring_impl)
    host_exposed = host_fwd_stall + host_bwd_stall

    # Activation CPU offloading's copies each way beyond what the layers hide (cost.offload).
    offload_exposed = stage_offload_exposed_s(model, hardware, workload, c, fwd_layer_s=fwd_layer,
                                              bwd_layer_s=bwd_layer, layers=layers,
                                              sequence_parallel=sequence_parallel, tp_gathers=tp_gathers,
                                              expert_row_padding=expert_row_padding)

    pp_step = p2p_time_s(hardware, tokens / tp * model.hidden_size * BF16_BYTES, pp, axis_stride(c, "pp"), gpn)
    # Interleaving sends at every chunk's boundary (Narayanan 2021 s2.2.2), each micro-batch's
    # activation forward and its gradient backward; with overlap_p2p_comm on the interleaved
    # schedule each hides behind one chunk's forward (cost.overlap), but the fill's and drain's.
    beside = pp_sends_beside_compute(overlap, c.vpp)
    pp_sends = m * 2 * c.vpp * np.where(beside, np.maximum(0.0, pp_step - layers / c.vpp * fwd_layer), pp_step)
    # The fill's and drain's hops, less the slack of the wraps beside longer chunks (cost.pipeline_sends).
    edge = per_key(edge_sends_s, compute_key, beside, stages, pp, c.vpp, pp_step, compute_s=stage_s,
                   bwd_extra_s=(first_bwd, 0.0, ahead), fwd_layer_s=stage_fwd, bwd_layer_s=stage_bwd)
    if stage_lt.kinds is not None:
        # Where the stages' layers differ, the wraps' slack from each chunk's own layers (cost.pipeline_sends).
        kind_sends = kinds_edge_sends_s(model, workload.seq_len, c, stage_lt.kinds, beside, pp_step, first_s=first,
                                        first_bwd_s=first_bwd, head_s=head, head_bwd_s=ahead)
        edge = np.where(np.isnan(kind_sends), edge, kind_sends)
    pp_sends = pp_sends + edge
    # The two terms that read ZeRO's stage (zero_read_terms); the bound leaves them to
    # cost.step_bound, which adds them row by row (x + -0.0 is x bit for bit).
    weight_cast, tied = (-0.0, -0.0) if lower_bound else zero_read_terms(
        model, hardware, c, layers, m, gpus_per_node=gpn, states=states, tp_gathers=tp_gathers)
    pp_sends = pp_sends + tied

    def parts(dp_exposed, optimizer_s, host_s) -> tuple:
        """TimeColumns' fields in their order, but the ceiling's."""
        return (
            m * (layers * (gemm_fwd + gemm_bwd) + paced_logits + paced_emb) + weight_cast,
            m * layers * (attn.fwd_compute_s + attn.bwd_compute_s),
            m * layers * recompute_layer,
            m * (layers * tp_layer + paced_tp),
            m * layers * (attn.fwd_ulysses_s + attn.bwd_ulysses_s),
            m * layers * (attn.fwd_ring_exposed_s + attn.bwd_ring_exposed_s),
            pp_sends,
            dp_exposed,
            bubble,
            optimizer_s,
            m * layers * lt.moe_layer_s - paired_micro_batches(m, pp, c.vpp) * layers * lt.ep_saving_s,
            host_s,
            m * offload_exposed,
        )

    if lower_bound:
        return parts(0.0, 0.0, 0.0), layers, m
    by_stage = dp_stage_tables(model, hardware, c, stages=stages, gpus_per_node=gpn, seq_len=workload.seq_len,
                               states=states, which=("first", "middle", "last"))
    # ZeRO-3 gathers again in backward only when reshard_after_forward (cost.fsdp); HSDP's
    # replica all-reduce rides with the reduce-scatter on the same stream. The expert gradients'
    # reduce-scatter over edp overlaps the backward like the dense ones. The TP collectives at a
    # layer chunk's ends overlap its first gather and last reduce-scatter (cost.dp_exposure.Edges).
    edges = Edges(fwd_lead_s=ag, bwd_lead_s=backward_lead_s(lt, recompute), bwd_trail_s=rs, bwd_tail_s=emb_bwd,
                  fwd_head_s=average.emb_tp_fwd_s + emb.fwd_s)
    # ZeRO-2/3's traffic of every micro-batch lengthens the pipeline's critical path (cost.pipeline_dp);
    # a single stage's loss backward hides its first gather in backward.

    # ZeRO-3 on a single stage whose layers differ: its passes walked layer by layer (cost.kind_passes).
    kinds = kind_passes(model, hardware, c, table, seq_len=workload.seq_len, gpus_per_node=gpn, states=states)
    middle_rank = dp_middle_stages(model, c)[0]
    # ZeRO-2/3 middle stages of two kinds (Maverick's): the lightest one's calls beside the heaviest's.
    relay_share = np.where(np.asarray(c.zero) >= 2, dp_lightest_middle_stages(model, c)[2], 0.0)
    relay_times = relay_rank = None
    if np.any(relay_share > 0):
        relay_times = relay_stage_times(model, hardware, c, relay_share > 0, stages=stages, gpus_per_node=gpn,
                                        seq_len=workload.seq_len, states=states)
        # The middle path rides the heaviest middle stage at its own rank (cost.pipeline_path).
        relay_rank = np.where(relay_share > 0, dp_ridden_middle_stages(model, c), np.asarray(c.pp) - 2)
    passes = DPPasses(c, stages, by_stage, layers, per_layer, head, ahead, first, fwd_layer, bwd_layer, m, edges,
                      kinds, overlap_compute_slowdown(hardware),
                      stage_layers=None if stage_lt.uniform else (stage_layer, stage_fwd, stage_bwd), tied_s=tied,
                      middle_rank=middle_rank,
                      middle_drain_s=middle_drain_s(model, workload.seq_len, c, stage_lt.kinds, middle_rank),
                      relay_times=relay_times, relay_share=relay_share, relay_rank=relay_rank,
                      first_chunks_bwd_s=first_chunks_bwd_s(model, workload.seq_len, c, stage_lt.kinds))
    # Without host stalls the passes' compute path is the bubble's closed forms, priced once
    # (above), where every stage runs the model's average layer (its walked path, above, aside:
    # the passes' traffic lengthens the closed forms' blocks); where the stages' layers differ the
    # passes price their own over the same closed forms (every stage's layers as the pacing stage's).
    # A host-bound pass lasts its GPU work plus the host stall, and the data-parallel traffic runs
    # beside the stall too (the CPU waits on no collective: their waits are stream waits): priced
    # again over the passes as they last, what that hides comes off the host's exposed time, so
    # the two are not both charged (sim.simulate adds the host time so reduced as one block).
    dp_exposed, dp_hidden, host_beside_dp = dp_with_host_beside_s(
        overlap, passes, host_fwd_stall, host_bwd_stall, host_exposed,
        compute_path_s=closed_path if stage_lt.uniform else None)
    # The compute that hides the traffic runs on fewer SMs meanwhile (cost.overlap).
    dp_exposed = dp_exposed + overlap_compute_slowdown(hardware) * dp_hidden
    # Adam over the rank's shard (cost.states) and the gradient-buffer passes (cost.grad_buffer),
    # routed experts sharded over the expert-data-parallel group (cost.moe), the rest over dp x cp:
    # the slowest stage's whole, every stage syncing at the gradient norm before its own update
    # and at train_step's model-parallel all-reduces after it (cost.grad_buffer.slowest_stage_step_bytes).
    optimizer_bytes = slowest_stage_step_bytes(model, states, grad_sync, c, stages=stages, micro_batches=m, edp=c.edp,
                                               seq_len=workload.seq_len)

    return parts(dp_exposed, memory_pass_time_s(hardware, optimizer_bytes), m * host_exposed - host_beside_dp)
