"""Step time (TimeBreakdown fields) per candidate (vectorized); throughput and MFU from it (cost.step_columns).

The slowest pipeline stage sets the pace: we time the last stage (its layers plus the logits
GEMMs). Per micro-batch, per layer: GEMMs, FP8 casts and memory-bound ops, core attention and its
ring/Ulysses comm, TP all-gathers/reduce-scatters exposed, MoE all-to-alls, recompute re-running
the forward it drops (cost.layer_times). Across micro-batches: 1F1B bubble
(pp-1) micro-batch times (Narayanan et al. 2021: bubble fraction (p-1)/m), PP sends exposed
(and a tied embedding's gradient all-reduce between the pipeline's ends, cost.tied_embedding), the
TP all-reduces at step end of the gradients of the parameters whole on every TP rank, the
sequence-parallel norms' and DSA's indexer's (cost.replicated_grads),
DP/ZeRO traffic overlapped as the framework's flags make it (cost.overlap: gradient reduce behind
the backward but the last bucket, parameter gathers behind the forward, ZeRO-3 layer by layer,
hidden traffic slowing compute; ZeRO-2/3's per-micro-batch traffic in a pipeline as the pacing
stage exposes it, cost.pipeline_dp; ZeRO-0/1's sync of the stage that ends it last,
cost.pipeline_tails), the host (CPU) time of eager PyTorch the GPU work does not hide
(cost.host_stalls, with the CUDA graphs a run states, cost.cuda_graphs), activation CPU
offloading's copies the layers do not hide (cost.offload), and an HBM-bound Adam step (the slowest
stage's). Everything before the data-parallel passes is cost.step_layers' (LayerParts); without
the passes, the same sum bounds the step from below (cost.step_bound), and the search hands the
bound's LayerParts back here for the rows it times in full, so their layers are priced once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.cost.cuda_graphs import NO_GRAPHS
from sp_planner.cost.dp_exposure import Edges
from sp_planner.cost.dp_passes import DPPasses, dp_with_host_beside_s
from sp_planner.cost.dp_times import dp_stage_tables, relay_stage_times
from sp_planner.cost.expert_padding import NO_PADDING
from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT
from sp_planner.cost.grad_buffer import MEGATRON_GRAD_SYNC, GradSync, slowest_stage_step_bytes
from sp_planner.cost.kind_passes import kind_passes
from sp_planner.cost.kind_table import with_walks
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.overlap import MEGATRON_OVERLAP, Overlap, overlap_compute_slowdown
from sp_planner.cost.ring_impl import TE_RING, RingImpl
from sp_planner.cost.stage_layer_times import first_chunks_bwd_s, middle_drain_s
from sp_planner.cost.stage_params import dp_lightest_middle_stages, dp_middle_stages, dp_ridden_middle_stages
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.cost.step_columns import StepColumns, StepParts, step_columns
from sp_planner.cost.step_layers import DP_CHOICE_COLUMNS, LayerParts, layer_parts, layer_pricer
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.cost.zero_read_terms import zero_read_terms
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sp_planner.cost.step_options import StepOptions

__all__ = ["DP_CHOICE_COLUMNS", "time_columns", "time_parts"]


def time_columns(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                 priced: LayerParts | None = None, **options: Unpack[StepOptions]) -> StepColumns:
    """StepColumns of the candidates `c`: the parts (time_parts) summed and stretched to the MFU
    ceiling (cost.step_columns); `priced` and `options` as time_parts takes them (cost.step_options)."""
    parts, lp = _time_parts(model, hardware, workload, c, priced, **options)
    whole_down = options.get("tp_gathers", TE_TP_GATHERS).whole_mla_down_projections
    return step_columns(model, hardware, workload, c, parts, moved=lp.recompute_comm,
                        whole_mla_down_projections=whole_down)


def time_parts(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
               priced: LayerParts | None = None, **options: Unpack[StepOptions]) -> StepParts:
    """The step's parts (StepParts) per candidate: those before the data-parallel passes
    (cost.step_layers.layer_parts, or `priced`: these candidates' priced already, cost.step_bound's
    taken at their rows, LayerParts.take), then the passes', the optimizer step's and the host
    time the passes leave exposed.
    `cuda_graphs`: the CUDA graph scopes a run states (cost.cuda_graphs; none for sp-plan);
    `ring_impl`: the framework's ring backward (cost.ring_impl; Megatron's Transformer Engine ring);
    `grad_sync`: its data-parallel wrapper's gradient passes (cost.grad_buffer; None: not counted);
    `loss_bytes_per_logit`: its cross entropy's HBM traffic (cost.gemm_work, cost.loss_memory);
    `sequence_parallel`: TP with Megatron's sequence parallelism (cost.gemm_work; Runtime);
    `sums_sequence_parallel_grads`: its step-end TP all-reduce of the sequence-parallel parameters'
    gradients (cost.replicated_grads; Megatron's);
    `partial_tp_grads`: its FSDP2's per-parameter TP all-reduces of Partial gradients
    (cost.partial_tp_grads; torchtitan's);
    `tp_gathers`: the recipes whose TP all-gathers it moves in low precision (cost.tp_gathers);
    `unpads_attention`: its unpad and pad passes around the attention kernel (cost.unpad_passes);
    `moe_router_dtype`: its MoE router's GEMM dtype (Megatron --moe-router-dtype, cost.router);
    `expert_row_padding`: who pads each local expert's rows for FP8 (cost.expert_padding)."""
    return _time_parts(model, hardware, workload, c, priced, **options)[0]


def _time_parts(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                priced: LayerParts | None = None, *, gpus_per_node: int, overlap: Overlap = MEGATRON_OVERLAP,
                states: TrainingStates = MEGATRON_STATES,
                cuda_graphs: frozenset[str] = NO_GRAPHS, ring_impl: RingImpl = TE_RING,
                grad_sync: GradSync | None = MEGATRON_GRAD_SYNC,
                loss_bytes_per_logit: int = LOSS_BYTES_PER_LOGIT, sequence_parallel: bool = True,
                sums_sequence_parallel_grads: bool = True, partial_tp_grads: bool = False,
                tp_gathers: TpGathers = TE_TP_GATHERS, unpads_attention: bool = False,
                moe_router_dtype: str | None = None, expert_row_padding: str = NO_PADDING
                ) -> tuple[StepParts, LayerParts]:
    """time_parts, with the LayerParts it read."""
    gpn = gpus_per_node
    if priced is None:
        lp = layer_parts(model, hardware, workload, c, gpus_per_node=gpn, overlap=overlap, states=states,
                             cuda_graphs=cuda_graphs, ring_impl=ring_impl, grad_sync=grad_sync,
                             loss_bytes_per_logit=loss_bytes_per_logit, sequence_parallel=sequence_parallel,
                             tp_gathers=tp_gathers, unpads_attention=unpads_attention,
                             moe_router_dtype=moe_router_dtype, expert_row_padding=expert_row_padding)
        table = lp.table
    else:  # the ZeRO-3 walks read the rows' own ZeRO stage (cost.kind_table.with_walks)
        lp = priced
        price = layer_pricer(hardware, workload, gpus_per_node=gpn, overlap=overlap, ring_impl=ring_impl,
                             loss_bytes_per_logit=loss_bytes_per_logit, sequence_parallel=sequence_parallel,
                             tp_gathers=tp_gathers, unpads_attention=unpads_attention,
                             moe_router_dtype=moe_router_dtype, expert_row_padding=expert_row_padding)
        table = with_walks(lp.table, model, workload.seq_len, c, lp.micro_batches, price)
    assert lp.num_rows == len(c), (lp.num_rows, len(c))
    m, layers, stages, stage_lt = lp.micro_batches, lp.layers, lp.stages, lp.stage
    head, ahead, first = lp.head_s, lp.ahead_s, lp.first_s
    fwd_layer, bwd_layer, per_layer = lp.fwd_layer_s, lp.bwd_layer_s, lp.per_layer_s
    stage_layer = tuple(s.per_layer_s for s in stage_lt.by_stage)
    stage_fwd, stage_bwd = tuple(s.fwd_s for s in stage_lt.by_stage), tuple(s.bwd_s for s in stage_lt.by_stage)
    # The three terms that read ZeRO's stage (cost.zero_read_terms: FP8 weight casts, the tied
    # embedding's gradient all-reduce between the pipeline's ends, and the step-end TP all-reduces
    # of the sequence-parallel parameters' and DSA's indexer's gradients, finalize_model_grads.py
    # _allreduce_non_tensor_model_parallel_grads, cost.replicated_grads).
    weight_cast, tied, replicated_ar = zero_read_terms(
        model, hardware, c, layers, m, gpus_per_node=gpn, seq_len=workload.seq_len, states=states,
        tp_gathers=tp_gathers, sequence_parallel=sequence_parallel,
        sums_sequence_parallel_grads=sums_sequence_parallel_grads, partial_tp_grads=partial_tp_grads,
        overlap=overlap)
    by_stage = dp_stage_tables(model, hardware, c, stages=stages, gpus_per_node=gpn, seq_len=workload.seq_len,
                               states=states, which=("first", "middle", "last"))
    # ZeRO-3 gathers again in backward only when reshard_after_forward (cost.fsdp); HSDP's
    # replica all-reduce rides with the reduce-scatter on the same stream. The expert gradients'
    # reduce-scatter over edp overlaps the backward like the dense ones. The TP collectives at a
    # layer chunk's ends overlap its first gather and last reduce-scatter (cost.dp_exposure.Edges).
    edges = Edges(fwd_lead_s=lp.tp_all_gather_s, bwd_lead_s=lp.bwd_lead_s, bwd_trail_s=lp.tp_reduce_scatter_s,
                  bwd_tail_s=lp.emb_bwd_s, fwd_head_s=lp.emb_fwd_s)
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
                      first_chunks_bwd_s=first_chunks_bwd_s(model, workload.seq_len, c, stage_lt.kinds),
                      pp_hop_s=lp.edge_hop_s)
    # Without host stalls the passes' compute path is the bubble's closed forms, priced once
    # (above), where every stage runs the model's average layer (its walked path, above, aside:
    # the passes' traffic lengthens the closed forms' blocks); where the stages' layers differ the
    # passes price their own over the same closed forms (every stage's layers as the pacing stage's).
    # A host-bound pass lasts its GPU work plus the host stall, and the data-parallel traffic runs
    # beside the stall too (the CPU waits on no collective: their waits are stream waits): priced
    # again over the passes as they last, what that hides comes off the host's exposed time, so
    # the two are not both charged (sim.simulate adds the host time so reduced as one block).
    dp_exposed, dp_hidden, host_beside_dp = dp_with_host_beside_s(
        overlap, passes, lp.host_fwd_stall_s, lp.host_bwd_stall_s, lp.host_exposed_s,
        compute_path_s=lp.closed_path_s if stage_lt.uniform else None)
    # The compute that hides the traffic runs on fewer SMs meanwhile (cost.overlap).
    dp_exposed = dp_exposed + overlap_compute_slowdown(hardware) * dp_hidden
    # Adam over the rank's shard (cost.states) and the gradient-buffer passes (cost.grad_buffer),
    # routed experts sharded over the expert-data-parallel group (cost.moe), the rest over dp x cp:
    # the slowest stage's whole, every stage syncing at the gradient norm before its own update
    # and at train_step's model-parallel all-reduces after it (cost.grad_buffer.slowest_stage_step_bytes).
    optimizer_bytes = slowest_stage_step_bytes(model, states, grad_sync, c, stages=stages, micro_batches=m, edp=c.edp,
                                               seq_len=workload.seq_len)

    compute = lp.compute
    return (compute._replace(gemm_s=compute.gemm_s + weight_cast, pp_comm_s=compute.pp_comm_s + tied,
                             tp_comm_s=compute.tp_comm_s + replicated_ar,
                             dp_comm_exposed_s=dp_exposed,
                             optimizer_s=memory_pass_time_s(hardware, optimizer_bytes),
                             host_overhead_s=m * lp.host_exposed_s - host_beside_dp), lp)
