"""The step's parts before the data-parallel passes (LayerParts), per candidate (vectorized): the
layers' and the pipeline ends' work, the bubble, the PP sends, the host stalls and offloading
copies, and what cost.step's data-parallel passes read of them.

cost.step.time_parts prices the rest from these; cost.step_bound sums them (the passes' parts at
0) for search_prune, and the search hands the bound's LayerParts of the rows it then times in full
to time_parts (LayerParts.take), so their layers are priced once. No part here reads a
data-parallel choice (DP_CHOICE_COLUMNS, below): tests/cost/test_step_bound_distinct.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.columns import take_rows
from sp_planner.cost.chunk_path import kinds_path_s
from sp_planner.cost.cuda_graphs import NO_GRAPHS, check_graph_scopes
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.embedding_work import embedding_work, stage_embedding_s
from sp_planner.cost.ep_overlap import paired_micro_batches
from sp_planner.cost.expert_padding import NO_PADDING
from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT
from sp_planner.cost.grad_buffer import MEGATRON_GRAD_SYNC, GradSync
from sp_planner.cost.host_stalls import pacing_host_stalls_s
from sp_planner.cost.kind_table import KindTable, kind_table, mtp_layer_times, take_kind_table
from sp_planner.cost.layer_times import LayerTimes, backward_lead_s, candidate_layer_times
from sp_planner.cost.links import p2p_time_s
from sp_planner.cost.mtp import mtp_head_s
from sp_planner.cost.offload import stage_offload_exposed_s
from sp_planner.cost.overlap import MEGATRON_OVERLAP, Overlap, pp_sends_beside_compute
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.pipeline_dp import LOSS_BACKWARD_SHARE
from sp_planner.cost.pipeline_path import compute_path_s, pipeline_bubble_s
from sp_planner.cost.pipeline_sends import edge_sends_s, kinds_edge_sends_s
from sp_planner.cost.ring_impl import TE_RING, RingImpl
from sp_planner.cost.stage_layer_times import (StageLayerTimes, pacing_layer_times, stage_layer_times,
                                               take_stage_layer_times)
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.cost.step_columns import StepParts
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.distinct import distinct_key, per_key
from sp_planner.layout import CP_AXES, axis_stride, group_size
from sp_planner.pipeline import StageLayers, stage_pace
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# The candidate columns that change only how gradients and parameters move between data-parallel
# ranks (cost.dp_times, cost.pipeline_dp), not a layer's or a pipeline end's compute.
DP_CHOICE_COLUMNS = frozenset({"zero", "reshard", "dp_replicate"})


@dataclass(frozen=True)
class LayerParts:
    """The step's parts before the data-parallel passes and what those passes read, per candidate
    (arrays, or scalars that broadcast): cost.step.time_parts' first half."""

    num_rows: int
    compute: StepParts  # the step's parts, the passes' three (dp, optimizer, host) at 0 and zero_read_terms' out
    micro_batches: np.ndarray
    layers: np.ndarray  # the pacing stage's decoder layers
    stages: StageLayers  # the first, a middle and the last stage's layers
    stage: StageLayerTimes  # each stage's average layer
    table: KindTable  # the layer kinds' times (its `walks` the rows' own ZeRO-3 walks, or None: take)
    per_layer_s: np.ndarray  # the pacing stage's average layer ...
    fwd_layer_s: np.ndarray
    bwd_layer_s: np.ndarray
    tp_all_gather_s: np.ndarray
    tp_reduce_scatter_s: np.ndarray
    bwd_lead_s: np.ndarray  # ... its TP collectives before the first backward GEMM (layer_times.backward_lead_s)
    head_s: np.ndarray  # the loss stage's work beyond its layers
    ahead_s: np.ndarray  # its backward before the last stage's first layer backward
    first_s: np.ndarray  # the first stage's beyond its layers (pp > 1)
    emb_bwd_s: np.ndarray  # the embedding's backward after the first layer's
    emb_fwd_s: np.ndarray  # the embedding's forward (its TP collective and its work)
    closed_path_s: np.ndarray  # the pipeline's compute path in closed form (cost.pipeline_path)
    edge_hop_s: np.ndarray  # one pipeline hop where the interleaved sends run beside the compute, else 0
    host_fwd_stall_s: np.ndarray  # host time per micro-batch beyond the GPU's (cost.host_stalls) ...
    host_bwd_stall_s: np.ndarray
    host_exposed_s: np.ndarray  # ... both
    # What the step's breakdown moves from recompute_s to the collectives' own parts (the recomputed
    # forward's, LayerTimes.recompute_tp_s): added after the sum, which it leaves as it was (cost.step_columns).
    recompute_comm: StepParts

    def take(self, index: np.ndarray) -> LayerParts:
        """The rows at `index`, as layer_parts prices them alone (it works row by row), but the
        kind table's ZeRO-3 walks, left None (they read the rows' ZeRO stage: cost.step)."""
        rows: dict[str, Any] = {f.name: take_rows(getattr(self, f.name), index, self.num_rows)
                                for f in fields(self) if f.name not in ("num_rows", "stage", "table")}
        return LayerParts(num_rows=len(index), stage=take_stage_layer_times(self.stage, index, self.num_rows),
                          table=take_kind_table(self.table, index), **rows)


def layer_pricer(hardware: HardwareProfile, workload: Workload, **runtime: Any
                 ) -> Callable[[ModelSpec, Candidates], LayerTimes]:
    """cost.layer_times.candidate_layer_times of a model (the one priced, or one of its layer
    kinds: cost.kind_table) on some candidates, under the framework's `runtime` options."""
    return lambda model, rows: candidate_layer_times(model, hardware, workload, rows, **runtime)


def layer_parts(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *,
                gpus_per_node: int, overlap: Overlap = MEGATRON_OVERLAP, states: TrainingStates = MEGATRON_STATES,
                cuda_graphs: frozenset[str] = NO_GRAPHS, ring_impl: RingImpl = TE_RING,
                grad_sync: GradSync | None = MEGATRON_GRAD_SYNC, loss_bytes_per_logit: int = LOSS_BYTES_PER_LOGIT,
                sequence_parallel: bool = True, tp_gathers: TpGathers = TE_TP_GATHERS, unpads_attention: bool = False,
                moe_router_dtype: str | None = None, expert_row_padding: str = NO_PADDING,
                walked: bool = True) -> LayerParts:
    """LayerParts of the candidates `c`; the options as cost.step.time_parts takes them; `walked`
    False: the kind table without the ZeRO-3 walks (cost.kind_table; cost.step_bound's, which
    cost.step adds for the rows it takes: kind_table.with_walks)."""
    check_graph_scopes(model, cuda_graphs)
    tp, dp, pp = c.tp, c.dp, c.pp
    b, gpn = c.micro_batch, gpus_per_node
    cp = group_size(c, CP_AXES)
    m = workload.global_batch / (dp * b)
    tokens = b * workload.seq_len / cp  # tokens per rank in the sequence-sharded regions

    price = layer_pricer(hardware, workload, gpus_per_node=gpn, overlap=overlap, ring_impl=ring_impl,
                         loss_bytes_per_logit=loss_bytes_per_logit, sequence_parallel=sequence_parallel,
                         tp_gathers=tp_gathers, unpads_attention=unpads_attention,
                         moe_router_dtype=moe_router_dtype, expert_row_padding=expert_row_padding)
    average = price(model, c)
    # Where the model's layers differ, each kind's layer priced once on the rows its readers need
    # (cost.kind_table); each stage's average layer from its own kinds (cost.stage_layer_times).
    table = kind_table(model, workload.seq_len, c, m, price, walked=walked)
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
    attn = lt.attn
    paced_logits = np.where(pace.last_paces, logits, 0.0)
    paced_emb = np.where(pace.last_paces, head_emb, np.where(pace.first_paces, first_emb, 0.0))
    paced_tp = np.where(pace.last_paces, head_tp, np.where(pace.first_paces, first_tp, 0.0))
    fwd_layer, bwd_layer = lt.fwd_s, lt.bwd_s
    # The embedding's backward after the first layer's (its TP all-gather, bf16 under FP8 too, and
    # its gradient passes): the first stage's beyond its layers with pp > 1, with its chunk 0
    # (cost.pipeline_dp reads it from Edges.bwd_tail_s); before the last stage's first layer
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
                                 bwd_extra_s=(first_bwd, 0.0, ahead), fwd_layer_s=stage_fwd, bwd_layer_s=stage_bwd,
                                 vpp_group=c.vpp_group)
    if stage_lt.kinds is not None:
        # Where the stages' layers differ, so do their chunks, and an explicit split's interleaved
        # chunks: the path walked over each chunk's own layers in Megatron's order (cost.chunk_path).
        walked_path = kinds_path_s(model, workload.seq_len, c, m, stage_lt.kinds, first_s=first,
                                   first_bwd_s=first_bwd, head_s=head, head_bwd_s=ahead)
        path = np.where(np.isnan(walked_path), path, walked_path)
    bubble = pipeline_bubble_s(path, pp, m, pace_s=pace.micro_s)

    # Host time per micro-batch beyond the GPU's (cost.host_stalls): the layers' GPU time split
    # forward (fwd_layer) and backward as the CPU issues it.
    host_fwd_stall, host_bwd_stall = pacing_host_stalls_s(
        model, hardware, c, fwd_layer_s=fwd_layer, layer_s=lt.per_layer_s, layers=layers,
        ends_s=paced_logits + paced_tp + paced_emb, cuda_graphs=cuda_graphs, sequence_parallel=sequence_parallel,
        tp_gathers=tp_gathers, ring_impl=ring_impl, seq_len=workload.seq_len)

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
                   bwd_extra_s=(first_bwd, 0.0, ahead), fwd_layer_s=stage_fwd, bwd_layer_s=stage_bwd,
                   micro_batches=m, vpp_group=c.vpp_group)
    if stage_lt.kinds is not None:
        # Where the stages' layers differ, the wraps' slack from each chunk's own layers (cost.pipeline_sends).
        kind_sends = kinds_edge_sends_s(model, workload.seq_len, c, stage_lt.kinds, beside, pp_step, first_s=first,
                                        first_bwd_s=first_bwd, head_s=head, head_bwd_s=ahead, micro_batches=m)
        edge = np.where(np.isnan(kind_sends), edge, kind_sends)

    compute = StepParts(
        gemm_s=m * (layers * (lt.gemm_fwd_s + lt.gemm_bwd_s) + paced_logits + paced_emb),
        attention_s=m * layers * (attn.fwd_compute_s + attn.bwd_compute_s),
        recompute_s=m * layers * lt.recompute_s,
        tp_comm_s=m * (layers * lt.tp_layer_s + paced_tp),
        ulysses_comm_s=m * layers * (attn.fwd_ulysses_s + attn.bwd_ulysses_s),
        ring_comm_exposed_s=m * layers * (attn.fwd_ring_exposed_s + attn.bwd_ring_exposed_s),
        pp_comm_s=pp_sends + edge,
        dp_comm_exposed_s=0.0,
        bubble_s=bubble,
        optimizer_s=0.0,
        moe_comm_s=m * layers * lt.moe_layer_s - paired_micro_batches(m, pp, c.vpp) * layers * lt.ep_saving_s,
        host_overhead_s=0.0,
        offload_s=m * offload_exposed)
    return LayerParts(
        num_rows=len(c), compute=compute, micro_batches=m, layers=layers, stages=stages, stage=stage_lt, table=table,
        per_layer_s=lt.per_layer_s, fwd_layer_s=fwd_layer, bwd_layer_s=bwd_layer, tp_all_gather_s=lt.tp_all_gather_s,
        tp_reduce_scatter_s=lt.tp_reduce_scatter_s, bwd_lead_s=backward_lead_s(lt, c.recompute), head_s=head,
        ahead_s=ahead, first_s=first, emb_bwd_s=emb_bwd, emb_fwd_s=average.emb_tp_fwd_s + emb.fwd_s,
        closed_path_s=closed_path, edge_hop_s=np.where(beside, pp_step, 0.0), host_fwd_stall_s=host_fwd_stall,
        host_bwd_stall_s=host_bwd_stall, host_exposed_s=host_fwd_stall + host_bwd_stall,
        recompute_comm=recompute_comm_parts(lt, m * layers))


def recompute_comm_parts(lt: LayerTimes, layer_steps) -> StepParts:
    """The recomputed forward's collectives over a step's `layer_steps` (micro-batches x layers),
    taken from recomputation and given to their kinds, every other part 0."""
    tp, moe = layer_steps * lt.recompute_tp_s, layer_steps * lt.recompute_moe_s
    ulysses, ring = layer_steps * lt.recompute_ulysses_s, layer_steps * lt.recompute_ring_s
    return StepParts(gemm_s=0.0, attention_s=0.0, recompute_s=-(tp + moe + ulysses + ring), tp_comm_s=tp,
                     ulysses_comm_s=ulysses, ring_comm_exposed_s=ring, pp_comm_s=0.0, dp_comm_exposed_s=0.0,
                     bubble_s=0.0, optimizer_s=0.0, moe_comm_s=moe, host_overhead_s=0.0, offload_s=0.0)
