"""Megatron's TP collectives under Transformer Engine userbuffers overlap (--tp-comm-overlap).

sp-plan does not emit --tp-comm-overlap, so every framework runtime keeps `Overlap.tp_comm`
False and cost.step times the sequence-parallel all-gathers and reduce-scatters fully exposed.
Runs that state it (validation corpus rows with tp_comm_overlap) are timed by this rule instead.

Which GEMM each collective hides behind, per layer (TE transformer_engine/pytorch/module/
base.py lines 346-360 at d0067d0: the default method of each userbuffers layer; module/
layernorm_linear.py lines 696-712: the backward's pairings):
- forward: the all-gather of the QKV and FC1 inputs inside those GEMMs (qkv_fprop, fc1_fprop:
  ring_exchange), the reduce-scatter of the projection and FC2 outputs inside those GEMMs
  (proj_fprop, fc2_fprop: pipeline);
- backward: the all-gathers of the output gradients inside the projection and FC2 dgrad GEMMs
  (proj_dgrad, fc2_dgrad: ring_exchange), the all-gathers of the saved QKV and FC1 inputs
  behind the QKV and FC1 dgrad GEMMs (qkv_dgrad, fc1_dgrad: bulk), and the reduce-scatters of
  the QKV and FC1 input gradients behind their wgrad GEMMs (qkv_wgrad, fc1_wgrad: bulk).
That is cost.comm's 2 + 2 forward and 4 + 2 backward collectives.

How each method hides its collective (TE common/comm_gemm_overlap/comm_gemm_overlap.cpp at
d0067d0):
- ring_exchange (split_overlap_ag, lines 1161-1196): the GEMM runs in tp chunks, the first on
  the local shard; while chunk i runs, the next shard is sent and received (copy engine,
  use_ce), and chunk i + 1 waits for it: each of the tp - 1 transfers (ag / (tp - 1)) is
  exposed where it takes longer than a chunk (gemm / tp); the GEMM keeps every SM (no margin)
  and loses the 1 SM the collective holds while it runs (num_sm 1, cost.overlap's charge);
- pipeline (split_overlap_rs, lines 719-747): the GEMM runs in num_splits 4 chunks, each chunk's
  reduce-scatter issued after it and hidden behind the next chunk, so the last chunk's is
  exposed whole and the others where longer than a chunk;
- bulk (bulk_overlap, line 444): the collective runs beside the whole GEMM, exposed only where it
  is longer (max(0, comm - gemm)).
pipeline and bulk set an SM margin: their GEMMs are launched on sm_count - num_sm SMs for their
whole length (line 143: _math_sms = sm_count - num_comm_sm under set_sm_margin; base.py lines
384-387: num_sm 16), i.e. take SMS_PER_GPU / (SMS_PER_GPU - 16) of their time, and that slower
GEMM is the window. A dgrad or wgrad GEMM takes its forward GEMM's time.

Chunk GEMMs (chunk_factors): ring_exchange and pipeline run one cuBLAS GEMM per chunk of the
tokens (M), each on compute stream i % streams (lines 1135-1138 and 1183-1186), of which there
are min(NVTE_COMM_OVERLAP_MAX_STREAMS = 3, splits) (include/.../comm_gemm_overlap.h line 20,
comm_gemm_overlap.cpp line 130); splits are tp for ring_exchange and num_splits 4 for pipeline.
So at most min(3, splits) chunks run at once: a GEMM of min(3, splits) x M / splits rows fills
the GPU as the whole GEMM of M rows does not, and each overlapped GEMM takes its time x
output_ratio(M x N) / output_ratio(min(3, splits) x M / splits x N) (cost.gemm_outputs: the XLA
table's efficiency by output size at the GEMM's K; 1 where the profile has no table). Llama-3-70B
at tp 8 on 4,096 tokens: the QKV chunks (3 x 512 rows x 1,280) run at 0.86 of the whole QKV
GEMM's rate. Dense layers' GEMMs only: an MoE layer's experts run TE's grouped GEMMs, which
userbuffers does not split.
The SMs are the GPU's own (cost.overlap.gpu_sm_count: 132 on Hopper, 148 on B200 and GB200, 160 on
B300 and GB300). Not modelled: the copy engine's bandwidth (the transfers are priced as
cost.links' rings).

Buffer copies (buffer_copies). Userbuffers gathers from, and bulk-scatters into, its own registered
buffers, so TE (f031cf87, 2026-04-06, the commit Megatron-Bridge e43a7468f pins; the same at
d0067d0, and since ce0b46c4d, 2025-05-07) moves a rank's data through them with memory passes the
NCCL path does not make, each read + write of the rank's tokens / tp x h:
- before each of the layer's 6 all-gathers, module/base.py fill_userbuffers_buffer_for_all_gather
  (line 497) copies the local shard, quantized where the gather is FP8, into the buffer's local
  chunk (lines 533 and 549: copy_into_buffer, a cudaMemcpyAsync, pytorch/csrc/extensions/
  comm_gemm_overlap.cpp lines 147-181 and 246-278): the QKV and FC1 inputs forward
  (layernorm_linear.py line 263), the projection and FC2 output gradients (base.py
  grad_output_preprocess line 1222) and the saved QKV and FC1 inputs backward (layernorm_linear.py
  line 676). A ring exchange's copy is on the current stream, before its first chunk GEMM and
  send; a bulk gather's on its communication stream, ahead of the collective there;
- after each bulk reduce-scatter (qkv_wgrad, fc1_wgrad, whose buffers are bf16: base.py lines
  325 and 469, FP8 buffers only for the all-gathers and, by choice, pipeline) the rank's reduced
  chunk is cloned out (layernorm_linear.py line 940, linear.py line 926), after the wgrad GEMM.
Each priced as a memory-bound pass (cost.kernels.memory_pass_time_s), the copy in the elements the
gather moves (cost.gathered_transpose.layer_gather_elem_bytes). TE v1.8 (3ec998e,
layernorm_linear.py lines 121-124) wrote the norm output into the buffer instead: older runs copied
less.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.attention_comm import kv_heads_per_tp_rank
from sp_planner.cost.flops import _active_ffn_width, layer_gemm_flops_per_token, mlp_gemm_flops_per_token
from sp_planner.cost.gemm_outputs import output_ratio
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.overlap import SMS_PER_GPU
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# SMs a userbuffers collective holds beside its GEMM, and the pipeline method's chunks
# (TE module/base.py lines 384-387 at d0067d0: num_sm, num_splits).
RING_EXCHANGE_SMS = 1
PIPELINE_BULK_SMS = 16
PIPELINE_SPLITS = 4
# Compute streams a userbuffers layer runs its chunk GEMMs on, at most (TE comm_gemm_overlap.h).
MAX_COMPUTE_STREAMS = 3


class LayerGemms(NamedTuple):
    """One layer's forward GEMM seconds on one rank (vectorized)."""

    qkv_s: np.ndarray | float
    proj_s: np.ndarray | float
    fc1_s: np.ndarray | float
    fc2_s: np.ndarray | float


class ChunkFactors(NamedTuple):
    """Each overlapped GEMM's time chunked over its time whole (>= 1; module docstring)."""

    qkv: np.ndarray | float  # forward, ring_exchange
    proj: np.ndarray | float  # forward, pipeline
    fc1: np.ndarray | float  # forward, ring_exchange
    fc2: np.ndarray | float  # forward, pipeline
    proj_dgrad: np.ndarray | float  # backward, ring_exchange
    fc2_dgrad: np.ndarray | float  # backward, ring_exchange


WHOLE = ChunkFactors(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


class BufferCopies(NamedTuple):
    """Userbuffers' memory passes on one rank (module docstring), seconds each."""

    gather_s: np.ndarray | float  # the local shard copied into an all-gather's buffer
    scatter_s: np.ndarray | float  # a bulk reduce-scatter's chunk cloned out of its bf16 buffer


NO_COPIES = BufferCopies(0.0, 0.0)


class TPOverlapTimes(NamedTuple):
    """One layer's TP cost under userbuffers overlap: exposed communication plus the compute the
    collectives take from the GEMMs they hide behind, forward and backward."""

    fwd_s: np.ndarray
    bwd_s: np.ndarray


def gemm_shares(model: ModelSpec) -> tuple[float, float, float, float]:
    """The QKV, output projection, FC1 and FC2 shares of cost.flops.layer_gemm_flops_per_token
    (the projection: 2hq of the attention's FLOPs; FC2: one h x ffn matrix of the MLP's)."""
    total = layer_gemm_flops_per_token(model)
    h = model.hidden_size
    proj = 2.0 * h * model.q_size
    fc2 = 2.0 * h * _active_ffn_width(model)
    mlp = mlp_gemm_flops_per_token(model)
    qkv = total - mlp - proj
    return qkv / total, proj / total, (mlp - fc2) / total, fc2 / total


def _chunk_factor(hardware: HardwareProfile, tokens, n, k, splits, fp8=False):
    """A GEMM's time run in `splits` chunks of its tokens, min(streams, splits) at once, over its
    time whole: the output-size efficiency of the whole over that of the concurrent chunks (`fp8`:
    an FP8/MXFP8 GEMM's, cost.gemm_outputs)."""
    concurrent = np.minimum(MAX_COMPUTE_STREAMS, splits) * np.asarray(tokens, dtype=np.float64) / splits
    whole = output_ratio(hardware, np.asarray(tokens, dtype=np.float64) * n, k, fp8)
    return np.maximum(whole / output_ratio(hardware, concurrent * n, k, fp8), 1.0)


def qkv_width_per_rank(model: ModelSpec, tp):
    """Output width of a rank's QKV GEMM: its query heads and its K and V heads, replicated where
    tp exceeds the KV heads (cost.attention_comm.kv_heads_per_tp_rank)."""
    return model.q_size / tp + 2 * kv_heads_per_tp_rank(model.num_kv_heads, tp) * model.head_dim


def chunk_factors(hardware: HardwareProfile, model: ModelSpec, *, tokens, tp, fp8=False) -> ChunkFactors:
    """The overlapped GEMMs' chunking slowdowns on one rank (module docstring): `tokens` the rows
    of the all-gathered input (the micro-batch's tokens on the TP group), per-rank widths; `fp8`
    (bool per candidate): FP8/MXFP8 GEMMs."""
    tp = np.asarray(tp, dtype=np.float64)
    one = np.ones(np.broadcast(np.asarray(tokens), tp, np.asarray(fp8)).shape)
    if model.mla is not None:
        return ChunkFactors(one, one, one, one, one, one)  # MLA's projections are not Q/K/V
    h, q = model.hidden_size, model.q_size
    ring = tp  # ring_exchange: one chunk per TP rank
    qkv = _chunk_factor(hardware, tokens, qkv_width_per_rank(model, tp), h, ring, fp8)
    proj = _chunk_factor(hardware, tokens, h, q / tp, PIPELINE_SPLITS, fp8)
    proj_dgrad = _chunk_factor(hardware, tokens, q / tp, h, ring, fp8)
    if model.moe is not None:
        return ChunkFactors(qkv, proj, one, one, proj_dgrad, one)  # grouped experts are not split
    ffn = model.intermediate_size / tp
    return ChunkFactors(
        qkv=qkv, proj=proj,
        fc1=_chunk_factor(hardware, tokens, (model.num_mlp_matrices - 1) * ffn, h, ring, fp8),
        fc2=_chunk_factor(hardware, tokens, h, ffn, PIPELINE_SPLITS, fp8),
        proj_dgrad=proj_dgrad, fc2_dgrad=_chunk_factor(hardware, tokens, ffn, h, ring, fp8))


def buffer_copies(hardware: HardwareProfile, *, shard_elements, gather_elem_bytes) -> BufferCopies:
    """The copies of `shard_elements` (a rank's tokens / tp x h) into an all-gather buffer, in the
    gather's `gather_elem_bytes`, and out of a bulk reduce-scatter's bf16 one: read + write each."""
    shard = np.asarray(shard_elements, dtype=np.float64)
    return BufferCopies(gather_s=memory_pass_time_s(hardware, 2.0 * shard * np.asarray(gather_elem_bytes)),
                        scatter_s=memory_pass_time_s(hardware, 2.0 * shard * BF16_BYTES))


def ring_exchange_s(ag_s, gemm_s, tp, chunking=1.0, sms=SMS_PER_GPU):
    """Seconds a ring_exchange all-gather adds to its GEMM (module docstring): the GEMM's chunking
    slowdown, the tp - 1 transfers beyond the tp chunks they feed, and the 1 SM of the GPU's
    `sms` it holds while it runs."""
    ag_s, whole = np.asarray(ag_s, dtype=np.float64), np.asarray(gemm_s, dtype=np.float64)
    gemm_s = whole * chunking
    steps = np.maximum(tp - 1, 1)
    exposed = steps * np.maximum(0.0, ag_s / steps - gemm_s / tp)
    return gemm_s - whole + exposed + RING_EXCHANGE_SMS / sms * np.minimum(ag_s, gemm_s)


def margin_gemm_s(gemm_s, sms=SMS_PER_GPU):
    """A GEMM launched with TE's SM margin: on the GPU's `sms` - PIPELINE_BULK_SMS SMs."""
    return np.asarray(gemm_s, dtype=np.float64) * sms / (sms - PIPELINE_BULK_SMS)


def pipeline_s(rs_s, gemm_s, chunking=1.0, sms=SMS_PER_GPU):
    """Seconds a pipeline reduce-scatter adds to its GEMM: its chunking and the margin's slowdown,
    the last chunk's reduce-scatter, and each other chunk's beyond the next chunk's GEMM."""
    rs_s, whole = np.asarray(rs_s, dtype=np.float64), np.asarray(gemm_s, dtype=np.float64)
    slow = margin_gemm_s(whole * chunking, sms)
    chunk_rs, chunk_gemm = rs_s / PIPELINE_SPLITS, slow / PIPELINE_SPLITS
    exposed = chunk_rs + (PIPELINE_SPLITS - 1) * np.maximum(0.0, chunk_rs - chunk_gemm)
    return slow - whole + exposed


def bulk_s(comm_s, gemm_s, sms=SMS_PER_GPU):
    """Seconds a bulk collective adds to its GEMM: the margin's slowdown and what it takes
    beyond the slowed GEMM."""
    slow = margin_gemm_s(gemm_s, sms)
    return slow - gemm_s + np.maximum(0.0, np.asarray(comm_s, dtype=np.float64) - slow)


def tp_overlap_times(ag_s, rs_s, gemms: LayerGemms, tp, chunks: ChunkFactors = WHOLE,
                     sms: int = SMS_PER_GPU, copies: BufferCopies = NO_COPIES) -> TPOverlapTimes:
    """One layer's TP all-gathers (ag_s each) and reduce-scatters (rs_s each) at TP degree `tp`
    overlapped with their GEMMs as TE userbuffers pairs them, the split GEMMs slowed by `chunks`,
    on a GPU of `sms` SMs, with the buffers' `copies` (module docstring): a ring exchange's
    before it, a bulk gather's ahead of it on the communication stream, a bulk scatter's after it."""
    g, c, copy = gemms, chunks, copies.gather_s
    fwd = (ring_exchange_s(ag_s, g.qkv_s, tp, c.qkv, sms) + pipeline_s(rs_s, g.proj_s, c.proj, sms)
           + ring_exchange_s(ag_s, g.fc1_s, tp, c.fc1, sms) + pipeline_s(rs_s, g.fc2_s, c.fc2, sms) + 2 * copy)
    bwd = (ring_exchange_s(ag_s, g.proj_s, tp, c.proj_dgrad, sms)
           + ring_exchange_s(ag_s, g.fc2_s, tp, c.fc2_dgrad, sms) + 2 * copy
           + bulk_s(ag_s + copy, g.qkv_s, sms) + bulk_s(ag_s + copy, g.fc1_s, sms) + bulk_s(rs_s, g.qkv_s, sms)
           + bulk_s(rs_s, g.fc1_s, sms) + 2 * copies.scatter_s)
    return TPOverlapTimes(fwd_s=fwd, bwd_s=bwd)
