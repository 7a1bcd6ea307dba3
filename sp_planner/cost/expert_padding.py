"""Megatron-Core's per-expert quantization padding around the grouped expert MLP under FP8 and
MXFP8 (vectorized): whole-tensor copies in HBM that the dispatcher's permutations (cost.moe) do not
include.

Source (Megatron-Core TEGroupedMLP, megatron/core/transformer/moe/experts.py; Transformer Engine
transformer_engine/pytorch/module/fp8_padding.py and fp8_unpadding.py):
  - Under FP8 (config.fp8) TEGroupedMLP builds Fp8Padding and Fp8Unpadding over its local experts
    (core_v0.15.0 experts.py lines 817-820; b1c2006cf lines 295-301). Its forward pads the permuted
    hidden states to each expert's aligned row count before linear_fc1 and unpads the linear_fc2
    output back (core_v0.15.0 lines 859-867 and 956-958: whenever config.fp8; b1c2006cf lines
    762-775 and 902-904: unless moe_utils.skip_routed_expert_padding, lines 1447-1460, which is
    True when the router pads, --moe-router-padding-for-quantization (alias
    --moe-router-padding-for-fp8), or the flex dispatcher's HybridEP or NCCL-EP backend pads in
    its own kernels). With the router padding, every count arrives aligned and Fp8Padding returns
    its input (below), so core_v0.15.0's unconditional call copies nothing either.
  - Fp8Padding.forward (TE v2.9 lines 111-122; v2.14 lines 114-125): the alignment is 32 under
    MXFP8 and 16 under the other FP8 recipes (v2.9: `32 if recipe.mxfp8() else 16`; later
    quantization.get_align_size_for_quantization, which adds 128 for NVFP4). If every expert's
    count is already a multiple, it returns the input untouched; otherwise _Fp8Padding allocates
    the padded tensor and tex.fused_multi_row_padding copies every row (common/util/padding.cu
    multi_padding_kernel: each input row read once and written once, the pad rows written as
    zeros). Its backward unpads the gradient (fused_multi_row_unpadding, the same bytes).
    Fp8Unpadding is the mirror: forward unpads (every row read and written), backward pads.
So a layer whose counts are not all aligned moves, per token copy the rank's experts compute, one
row of the activation width read and written four times: pad and unpad forward, their gradients
backward: 2 x 2 x h x elem_bytes each way. The pad rows themselves (at most align - 1 an expert,
written as zeros) and the probs padded beside the hidden states (one fp32 per copy against h
activation elements) are left out: under 1% of the copy at the corpus' shapes.

When the counts are unaligned:
  - padded to capacity (--moe-pad-expert-input-to-capacity): every source rank sends each expert
    exactly its capacity, ceil(n x top_k / experts x F) (moe_utils.get_capacity, core_v0.15.0
    lines 147-163, called with num_tokens = n x top_k at line 687), so each local expert computes
    capacity x ep x etp rows: aligned or not, known exactly.
  - otherwise (dropless, or dropping without padding): a count is the sum of many routing choices,
    spread by far more than the alignment at the corpus' shapes (force-balanced routing draws random
    logits, moe_utils.apply_random_logits, so a count of mean c varies by about sqrt(c), 90 at
    c = 8192), so its remainder modulo the alignment is taken as uniform, independently per
    expert: all aligned with probability align^-(local experts), and the copies happen with
    1 - align^-(experts/ep): 0.9375 with one local expert under FP8, 1 - 2^-64 with 16. An
    assumption stated, not fitted; it is the expected copy.
Where the framework pads (Runtime.expert_row_padding GROUPED_MLP_PADS: Megatron-Core, whose
TEGroupedMLP is what --moe-grouped-gemm selects, at its default), the copies ride with the
permutations on the alltoall dispatcher; HybridEP pads inside its kernels (skip_routed_expert_padding)
and moves none. sp-plan emits --moe-router-padding-for-quantization for dropless alltoall plans
(flags.megatron_moe.router_pads; ROUTER_PADS, flags.release_runtime): no copies, but extra routed rows.

The router's padding (ROUTER_PADS; Megatron-LM d98e8a64 token_dispatcher.py
MoEAlltoAllTokenDispatcher.dispatch_preprocess lines 649-655, moe_utils.py pad_routing_map lines
731-764, fusions/fused_pad_routing_map.py alike): on each source rank, before permutation and the
all-to-all, the routing map [tokens, experts] gets num_to_pad = (-count) mod align more entries in
each expert's column, the first tokens not yet routed to it (its zeros flipped to ones: distinct rows,
at most the tokens not routed there). They are ordinary routing-map entries: permuted, dispatched
(tokens and probs all-to-all), etp-gathered, computed by the expert GEMMs forward and backward
(probability 0, moe_utils.topk_routing_with_score_function's dense probs), unsorted and combined.
Each local expert then receives up to align - 1 rows from each of the ep x etp source maps. With the
count's remainder uniform (as above; a source rank's count has mean n k / E, 512 at 8192 tokens and
spread ~22, near uniform modulo 32, rougher at a few hundred tokens a rank) the expected pad is
(align - 1) / 2 an expert and source rank, E (align - 1) / 2 rows a source rank of n tokens, against
its n k routed copies: E (align - 1) / (2 n k) more copies on every EP rank (router_pad_load; 1.5%
under FP8, 3% under MXFP8 for Qwen3-30B-A3B, E 128, k 8, at 8192 tokens a rank). Padded to
capacity (drop_and_pad) every expert takes exactly its capacity, pad entries included, so none
are added; the flex dispatcher's HybridEP does not pad the routing map (only the alltoall and
DeepEP paths call pad_routing_map) but pads in its kernels.
The fused grouped MLP (use_transformer_engine_op_fuser, b1c2006cf line 297) aligns to 256: not
modelled (its corpus rows run HybridEP).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from sp_planner.plan import PRECISIONS
from sp_planner.specs.model import ModelSpec

# Who pads each local expert's rows to the FP8/MXFP8 alignment (Runtime.expert_row_padding): nobody,
# the grouped MLP with whole-tensor copies, or the router with extra routed rows (module docstring).
ExpertRowPadding = Literal["none", "grouped_mlp", "router"]
EXPERT_ROW_PADDINGS: tuple[ExpertRowPadding, ...] = get_args(ExpertRowPadding)
NO_PADDING, GROUPED_MLP_PADS, ROUTER_PADS = EXPERT_ROW_PADDINGS
# Expected pad rows an expert and source rank per row of alignment: the mean of (-count) mod align
# over a uniform remainder, (align - 1) / 2 (module docstring).
MEAN_PAD_PER_ALIGN_STEP = 0.5

# Rows each expert's count is padded to, by precision code (TE Fp8Padding's default alignment,
# module docstring); bf16 pads nothing.
ALIGN_ROWS: dict[str, int] = {"fp8": 16, "mxfp8": 32}
# Whole-tensor passes per token copy each way: Fp8Padding and Fp8Unpadding forward, their
# gradients backward, each reading and writing every row (module docstring).
PADDING_PASSES_PER_DIRECTION = 2
BYTES_TOUCHED_PER_PASS = 2  # one read, one write of each element


def align_rows(precision, pads: bool):
    """The row alignment Transformer Engine pads each expert's count to, by candidate precision code
    (plan.PRECISIONS; the experts' own, cost.tp_gathers.expert_precision); 0 where nothing pads:
    bf16, or a framework that does not pad (`pads`, Runtime.expert_row_padding)."""
    precision = np.asarray(precision)
    rows = np.zeros(precision.shape, dtype=np.float64)
    if not pads:
        return rows
    for name, align in ALIGN_ROWS.items():
        rows = np.where(precision == PRECISIONS.index(name), float(align), rows)
    return rows


def padding_align_rows(precision, padding: str):
    """(grouped MLP copies' alignment, router's alignment) by candidate precision code: align_rows
    for whichever pads (`padding`, Runtime.expert_row_padding), 0 for the other."""
    if padding not in EXPERT_ROW_PADDINGS:
        raise ValueError(f"expert row padding {padding!r} is none of {EXPERT_ROW_PADDINGS}")
    align = align_rows(precision, padding != NO_PADDING)
    zero = np.zeros_like(align)
    return align if padding == GROUPED_MLP_PADS else zero, align if padding == ROUTER_PADS else zero


def router_pad_rows_per_expert(model: ModelSpec, tokens_per_tp_rank, align):
    """Expected rows the router's padding adds to one expert's column of one source rank's routing map
    of `tokens_per_tp_rank` tokens (pad_routing_map, module docstring): (align - 1) / 2, at most the
    tokens not routed to it; 0 where nothing pads (align 0), padded to capacity, under HybridEP, or
    without MoE."""
    align, tokens = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (align, tokens_per_tp_rank)))
    moe = model.moe
    if moe is None or moe.dispatcher != "alltoall" or (moe.pad_to_capacity and moe.capacity_factor is not None):
        return np.zeros(align.shape)
    unrouted = tokens * (1.0 - moe.top_k / moe.num_experts)
    return np.minimum(np.maximum(align - 1.0, 0.0) * MEAN_PAD_PER_ALIGN_STEP, unrouted)


def router_pad_load(model: ModelSpec, tokens_per_tp_rank, align):
    """The router's padding copies per routed copy, on every EP rank (module docstring): E pad rows
    over the source rank's n k copies; added to cost.moe.busiest_rank_load where the router pads."""
    if model.moe is None:
        return np.zeros_like(np.asarray(align, dtype=np.float64))
    tokens = np.maximum(np.asarray(tokens_per_tp_rank, dtype=np.float64), 1.0)
    pads = router_pad_rows_per_expert(model, tokens_per_tp_rank, align) * model.moe.num_experts
    return pads / (tokens * model.moe.top_k)


def unaligned_probability(model: ModelSpec, tokens_per_tp_rank, ep, etp, align):
    """The probability that some local expert's count is not a multiple of `align` (0: no padding),
    so the padding copies run (module docstring): exact when padded to capacity, else
    1 - align^-(experts/ep)."""
    align, tokens, ep, etp = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                  for v in (align, tokens_per_tp_rank, ep, etp)))
    on = align > 0
    if model.moe is None or not on.any():
        return np.zeros(align.shape)
    moe = model.moe
    safe_align = np.where(on, align, 1.0)
    if moe.pad_to_capacity and moe.capacity_factor is not None:  # MoESpec refuses one without the other
        # Megatron get_capacity on the rank's n x top_k routed copies, then capacity x ep x etp rows.
        capacity = np.ceil(tokens * moe.top_k / moe.num_experts * moe.capacity_factor)
        p = (np.mod(capacity * ep * etp, safe_align) != 0).astype(np.float64)
    else:
        p = 1.0 - safe_align ** -(moe.num_experts / ep)
    return np.where(on, p, 0.0)


def padding_bytes_per_token(model: ModelSpec, tokens_per_tp_rank, ep, etp, align, load, elem_bytes: int):
    """Expected HBM bytes the padding copies move per source token of one MoE layer, forward (the
    backward moves the same): the rank's k x etp x load token copies, each row of h elements read
    and written by the pad and the unpad, times the probability that they run (module docstring)."""
    if model.moe is None:
        return np.zeros_like(np.asarray(align, dtype=np.float64))
    copies = model.moe.top_k * np.asarray(etp, dtype=np.float64) * np.asarray(load, dtype=np.float64)
    per_copy = PADDING_PASSES_PER_DIRECTION * BYTES_TOUCHED_PER_PASS * model.hidden_size * elem_bytes
    return copies * per_copy * unaligned_probability(model, tokens_per_tp_rank, ep, etp, align)
