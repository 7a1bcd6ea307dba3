"""One transformer layer's TP collectives per micro-batch on one rank (vectorized over
candidates): its all-gathers and reduce-scatters, exposed (Megatron without --tp-comm-overlap) or
overlapped with their GEMMs where a run states it (cost.tp_overlap), and the embedding's and the
output layer's beside the layers (cost.tp_calls counts them); cost.layer_times adds them to the
layer's GEMMs, attention and MoE collectives.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.gathered_transpose import fp8_share, layer_gather_bytes, mx_gathers, ub_gather_elem_bytes
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.overlap import Overlap, gpu_sm_count
from sp_planner.cost.precision import BF16
from sp_planner.cost.tp_calls import (
    EMBEDDING_TP_ALL_GATHERS,
    EMBEDDING_TP_REDUCE_SCATTERS,
    OUTPUT_TP_BACKWARD_REDUCE_SCATTERS,
    TP_BACKWARD_REDUCE_SCATTERS,
    TP_FORWARD_ALL_GATHERS,
    TP_FORWARD_REDUCE_SCATTERS,
    TP_GRAD_ALL_GATHERS,
    embedding_tp_forward_all_gathers,
    output_tp_backward_all_gathers,
    output_tp_forward_all_gathers,
    tp_input_all_gathers,
)
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.cost.tp_overlap import LayerGemms, gemm_shares, tp_overlap_times
from sp_planner.cost.tp_overlap_buffers import NO_MX, buffer_copies, fp8_buf_rs_elem_bytes, mx_side_traffic
from sp_planner.cost.tp_overlap_cfg import UB_CONFIGS
from sp_planner.cost.tp_overlap_chunks import chunk_factors, last_chunk_factors
from sp_planner.cost.tp_overlap_multicast import multicast_bytes_factor
from sp_planner.layout import axis_stride
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class LayerTP(NamedTuple):
    """Seconds per micro-batch on one rank, per candidate: a layer's TP collectives (as
    cost.layer_times.LayerTimes' tp_* fields) and the embedding's and output layer's."""

    all_gather_s: np.ndarray  # one forward all-gather of a layer's activations
    grad_all_gather_s: np.ndarray  # one backward all-gather of a row-parallel output gradient
    input_all_gather_s: np.ndarray | float  # one of a saved input again (0: the framework gathers none)
    reduce_scatter_s: np.ndarray  # one reduce-scatter
    fwd_s: np.ndarray  # a layer's exposed in forward ...
    bwd_s: np.ndarray  # ... and in backward
    out_fwd_s: np.ndarray  # the output layer's forward ones (bf16) ...
    out_bwd_s: np.ndarray  # ... and backward ones
    emb_fwd_s: np.ndarray  # the embedding's forward ones (bf16) ...
    emb_bwd_s: np.ndarray  # ... and backward ones (bf16, as every embedding gather)


def layer_tp_times(model: ModelSpec, hardware: HardwareProfile, c: Candidates, *, tokens, gpus_per_node: int,
                   overlap: Overlap, sequence_parallel: bool, tp_gathers: TpGathers, gemm_only_s) -> LayerTP:
    """`tokens`: a rank's tokens per micro-batch in the sequence-sharded regions; `gemm_only_s`: the
    layer's forward GEMMs alone, which --tp-comm-overlap pairs with the collectives
    (cost.gemm_work); the rest as cost.layer_times.layer_times."""
    tp, gpn = c.tp, gpus_per_node
    low = c.precision != BF16
    gathered = tokens * model.hidden_size * BF16_BYTES
    tp_stride = axis_stride(c, "tp")
    # A layer's gathers move FP8 under per-tensor FP8, MXFP8 data and scales under MXFP8, by tensor,
    # where the framework gathers them so (cost.tp_gathers, cost.gathered_transpose); the embedding's
    # and the output layer's (bf16_ag) and every reduce-scatter move bf16.
    gathers: dict[str, Any] = dict(tp=tp, precision=c.precision, gathers=tp_gathers,
                                   sequence_parallel=sequence_parallel)
    elem = layer_gather_bytes(model, **gathers, fp8_blockwise=c.fp8_blockwise)
    bf16_ag = ring_collective_time_s(hardware, "all_gather", gathered * (tp - 1) / tp, tp, tp_stride, gpn)

    def gather_s(elem_bytes, known_bytes, known_s):
        """One gather of `elem_bytes` an element, priced again only where some row differs from
        the `known_bytes` priced as `known_s` (the search's bf16 chunks reuse bf16_ag)."""
        return known_s if np.array_equal(elem_bytes, known_bytes) else ring_collective_time_s(
            hardware, "all_gather", gathered * elem_bytes / BF16_BYTES * (tp - 1) / tp, tp, tp_stride, gpn)

    ag = gather_s(elem.fwd, np.full(np.shape(elem.fwd), float(BF16_BYTES)), bf16_ag)
    ag_grad = gather_s(elem.grad, elem.fwd, ag)  # the input gathers are the forward's (elem.input)
    rs = ring_collective_time_s(hardware, "reduce_scatter", gathered * (tp - 1) / tp, tp, tp_stride, gpn)
    tp_fwd = TP_FORWARD_ALL_GATHERS * ag + TP_FORWARD_REDUCE_SCATTERS * rs
    regathers = tp_gathers.regathers_saved_inputs
    tp_bwd = TP_GRAD_ALL_GATHERS * ag_grad + tp_input_all_gathers(sequence_parallel, regathers) * ag \
        + TP_BACKWARD_REDUCE_SCATTERS * rs
    if overlap.tp_comm:  # only runs that state --tp-comm-overlap (cost.tp_overlap)
        # Userbuffers moves the FP8 data alone; MXFP8's scales and second gathers beside it.
        ub_elem = ub_gather_elem_bytes(model, **gathers, fp8_blockwise=c.fp8_blockwise)
        ub_ag = gather_s(ub_elem, elem.fwd, ag)
        shard = tokens * model.hidden_size / tp
        mx_on = mx_gathers(**gathers)
        mx = NO_MX if not np.any(mx_on) else mx_side_traffic(
            hardware, shard_elements=shard, tp=tp, tp_stride=tp_stride, gpus_per_node=gpn, mx=mx_on,
            share=fp8_share(model))
        cfg = UB_CONFIGS[overlap.tp_comm_cfg]
        copies = buffer_copies(hardware, shard_elements=shard, gather_elem_bytes=ub_elem, tp=tp)
        fp8_rs = rs  # a pipeline's FP8 reduce-scatter where its config sets fp8_buf (cost.tp_overlap_buffers)
        if any(g.fp8_buf for g in cfg):
            rs_elem = fp8_buf_rs_elem_bytes(model, **gathers, fp8_blockwise=c.fp8_blockwise)
            fp8_rs = ring_collective_time_s(hardware, "reduce_scatter", gathered * rs_elem / BF16_BYTES * (tp - 1) / tp,
                                            tp, tp_stride, gpn)
        paired = tp_overlap_times(ub_ag, rs, LayerGemms(*(share * gemm_only_s for share in gemm_shares(model))), tp,
                                  chunk_factors(hardware, model, tokens=tokens, tp=tp, fp8=low, cfg=cfg),
                                  gpu_sm_count(hardware), copies, cfg, mx, fp8_rs,
                                  last=last_chunk_factors(hardware, model, tokens=tokens, tp=tp, fp8=low, cfg=cfg),
                                  multicast=multicast_bytes_factor(hardware, tp))
        # At tp 1 there is no TP collective to overlap, and no userbuffers copy or GEMM split:
        # Megatron turns sequence parallelism off there and asserts it for --tp-comm-overlap
        # (megatron/training/arguments.py at d98e8a6, lines 1431-1442).
        single = np.asarray(tp) == 1
        tp_fwd, tp_bwd = np.where(single, tp_fwd, paired.fwd_s), np.where(single, tp_bwd, paired.bwd_s)
    # The embedding's and the output layer's TP collectives, once per micro-batch (cost.tp_calls),
    # exposed as the layers' are: the output layer's on the loss stage, the embedding's on the
    # first stage (the same one at pp 1: LayerTimes.head_tp_s, first_tp_s).
    # A learned position table's all-reduce forward: its second half, an all-gather (cost.tp_calls).
    emb_tp_fwd = EMBEDDING_TP_REDUCE_SCATTERS * rs \
        + embedding_tp_forward_all_gathers(model.position_embedding, sequence_parallel) * bf16_ag
    out_tp_fwd = output_tp_forward_all_gathers(sequence_parallel) * bf16_ag
    out_tp_bwd = output_tp_backward_all_gathers(sequence_parallel, regathers) * bf16_ag \
        + OUTPUT_TP_BACKWARD_REDUCE_SCATTERS * rs
    return LayerTP(all_gather_s=ag, grad_all_gather_s=ag_grad,
                   input_all_gather_s=ag if tp_input_all_gathers(sequence_parallel, regathers) else 0.0,
                   reduce_scatter_s=rs, fwd_s=tp_fwd, bwd_s=tp_bwd, out_fwd_s=out_tp_fwd, out_bwd_s=out_tp_bwd,
                   emb_fwd_s=emb_tp_fwd, emb_bwd_s=EMBEDDING_TP_ALL_GATHERS * bf16_ag)
