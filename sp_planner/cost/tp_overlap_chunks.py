"""The chunk GEMMs of Megatron's TP collectives under Transformer Engine userbuffers overlap: how
much slower an overlapped GEMM runs split into chunks, and how long an all-gather ring exchange's
last chunk takes alone. cost.tp_overlap pairs each collective with its GEMM and charges these.

Chunk GEMMs (chunk_factors): ring_exchange and pipeline run one cuBLAS GEMM per chunk of the
tokens (M), each on compute stream i % streams (TE common/comm_gemm_overlap/comm_gemm_overlap.cpp
lines 1135-1138 and 1183-1186 at d0067d0), of which there are min(NVTE_COMM_OVERLAP_MAX_STREAMS =
3, splits) (include/.../comm_gemm_overlap.h line 20, comm_gemm_overlap.cpp line 130); splits are tp
for ring_exchange (tp / 2 with aggregate) and num_splits 4 for pipeline.
So at most min(3, splits) chunks run at once: a GEMM of min(3, splits) x M / splits rows fills
the GPU as the whole GEMM of M rows does not, and each overlapped GEMM takes its time x
output_ratio(M x N) / output_ratio(min(3, splits) x M / splits x N) (cost.gemm_outputs: the XLA
table's efficiency by output size at the GEMM's K; 1 where the profile has no table). Llama-3-70B
at tp 8 on 4,096 tokens: the QKV chunks (3 x 512 rows x 1,280) run at 0.86 of the whole QKV
GEMM's rate. Dense layers' GEMMs only: an MoE layer's experts run TE's grouped GEMMs, which
userbuffers does not split.
An all-gather's ring exchange cannot end before its last shard has arrived and its chunk has run:
chunk i + 1 waits on the receive of step i, and each send waits on the receive before it
(split_overlap_ag, comm_gemm_overlap.cpp lines 1033-1040 at v2.14.1, 986-993 aggregated: the waits of
_stream_send[0] and of _stream_compute[(i + 1) % streams] on _stop_recv), so the last chunk starts
after all tp - 1 transfers, and no concurrent chunk makes it faster than it runs alone. Where the
transfers outlast their chunks, that GEMM of M / splits rows (2 shards aggregated) is the tail:
the ring exchange takes at least ag + its time alone (`last_chunk_factors`: the whole GEMM's
output-size efficiency over that of the one chunk, times the whole's time / splits), not the
concurrent chunks' share cost.tp_overlap's ring_exchange_s charges. Llama-3-70B at tp 8 on 4,096
tokens (H100, FP8): the QKV's last 512 x 1,280 chunk runs alone at 0.30 of the whole GEMM's rate.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.attention_comm import kv_heads_per_tp_rank
from sp_planner.cost.gemm_outputs import output_ratio
from sp_planner.cost.tp_overlap_cfg import RING_EXCHANGE, TE_DEFAULT, UbConfig, UbGemm
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Compute streams a userbuffers layer runs its chunk GEMMs on, at most (TE comm_gemm_overlap.h).
MAX_COMPUTE_STREAMS = 3


class ChunkFactors(NamedTuple):
    """Each overlapped GEMM's time chunked over its time whole (>= 1; module docstring)."""

    qkv: np.ndarray | float  # forward, ring_exchange
    proj: np.ndarray | float  # forward, pipeline (or ring_exchange)
    fc1: np.ndarray | float  # forward, ring_exchange
    fc2: np.ndarray | float  # forward, pipeline (or ring_exchange)
    proj_dgrad: np.ndarray | float  # backward, ring_exchange
    fc2_dgrad: np.ndarray | float  # backward, ring_exchange


WHOLE = ChunkFactors(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


class LastChunks(NamedTuple):
    """Each all-gather ring exchange's last chunk GEMM run alone over its even share of the whole
    GEMM's time (>= 1; module docstring)."""

    qkv: np.ndarray | float  # forward
    fc1: np.ndarray | float  # forward
    proj_dgrad: np.ndarray | float  # backward
    fc2_dgrad: np.ndarray | float  # backward


EVEN = LastChunks(1.0, 1.0, 1.0, 1.0)  # no tail beyond the rule's (ring_exchange_s)


def _chunk_factor(hardware: HardwareProfile, tokens, n, k, splits, fp8=False):
    """A GEMM's time run in `splits` chunks of its tokens, min(streams, splits) at once, over its
    time whole: the output-size efficiency of the whole over that of the concurrent chunks (`fp8`:
    an FP8/MXFP8 GEMM's, cost.gemm_outputs)."""
    concurrent = np.minimum(MAX_COMPUTE_STREAMS, splits) * np.asarray(tokens, dtype=np.float64) / splits
    whole = output_ratio(hardware, np.asarray(tokens, dtype=np.float64) * n, k, fp8)
    return np.maximum(whole / output_ratio(hardware, concurrent * n, k, fp8), 1.0)


def _alone_factor(hardware: HardwareProfile, tokens, n, k, splits, fp8=False):
    """One chunk of tokens / splits rows run alone over its even share of the whole GEMM's time."""
    tokens = np.asarray(tokens, dtype=np.float64)
    return np.maximum(output_ratio(hardware, tokens * n, k, fp8) / output_ratio(hardware, tokens / splits * n, k, fp8),
                      1.0)


def qkv_width_per_rank(model: ModelSpec, tp):
    """Output width of a rank's QKV GEMM: its query heads and its K and V heads, replicated where
    tp exceeds the KV heads (cost.attention_comm.kv_heads_per_tp_rank)."""
    return model.q_size / tp + 2 * kv_heads_per_tp_rank(model.num_kv_heads, tp) * model.head_dim


def _splits(g: UbGemm, tp):
    """A split GEMM's chunks: tp for a ring exchange (tp / 2 aggregated), num_splits for a pipeline."""
    if g.method == RING_EXCHANGE:
        return tp / 2 if g.aggregate else tp
    return g.num_splits


def chunk_factors(hardware: HardwareProfile, model: ModelSpec, *, tokens, tp, fp8=False,
                  cfg: UbConfig = TE_DEFAULT) -> ChunkFactors:
    """The overlapped GEMMs' chunking slowdowns on one rank (module docstring): `tokens` the rows
    of the all-gathered input (the micro-batch's tokens on the TP group), per-rank widths; `fp8`
    (bool per candidate): FP8/MXFP8 GEMMs; `cfg`: the userbuffers configuration."""
    tp = np.asarray(tp, dtype=np.float64)
    one = np.ones(np.broadcast(np.asarray(tokens), tp, np.asarray(fp8)).shape)
    if model.mla is not None:
        return ChunkFactors(one, one, one, one, one, one)  # MLA's projections are not Q/K/V
    h, q = model.hidden_size, model.q_size
    qkv = _chunk_factor(hardware, tokens, qkv_width_per_rank(model, tp), h, _splits(cfg.qkv_fprop, tp), fp8)
    proj = _chunk_factor(hardware, tokens, h, q / tp, _splits(cfg.proj_fprop, tp), fp8)
    proj_dgrad = _chunk_factor(hardware, tokens, q / tp, h, _splits(cfg.proj_dgrad, tp), fp8)
    if model.moe is not None:
        return ChunkFactors(qkv, proj, one, one, proj_dgrad, one)  # grouped experts are not split
    ffn = model.intermediate_size / tp
    return ChunkFactors(
        qkv=qkv, proj=proj,
        fc1=_chunk_factor(hardware, tokens, (model.num_mlp_matrices - 1) * ffn, h, _splits(cfg.fc1_fprop, tp), fp8),
        fc2=_chunk_factor(hardware, tokens, h, ffn, _splits(cfg.fc2_fprop, tp), fp8),
        proj_dgrad=proj_dgrad, fc2_dgrad=_chunk_factor(hardware, tokens, ffn, h, _splits(cfg.fc2_dgrad, tp), fp8))


def last_chunk_factors(hardware: HardwareProfile, model: ModelSpec, *, tokens, tp, fp8=False,
                       cfg: UbConfig = TE_DEFAULT) -> LastChunks:
    """The all-gather ring exchanges' last chunks run alone (module docstring), arguments as
    chunk_factors'; 1 where a GEMM is not split (MLA, MoE experts)."""
    tp = np.asarray(tp, dtype=np.float64)
    one = np.ones(np.broadcast(np.asarray(tokens), tp, np.asarray(fp8)).shape)
    if model.mla is not None:
        return LastChunks(one, one, one, one)
    h, q = model.hidden_size, model.q_size
    qkv = _alone_factor(hardware, tokens, qkv_width_per_rank(model, tp), h, _splits(cfg.qkv_fprop, tp), fp8)
    proj_dgrad = _alone_factor(hardware, tokens, q / tp, h, _splits(cfg.proj_dgrad, tp), fp8)
    if model.moe is not None:
        return LastChunks(qkv, one, proj_dgrad, one)
    ffn = model.intermediate_size / tp
    return LastChunks(
        qkv=qkv, fc1=_alone_factor(hardware, tokens, (model.num_mlp_matrices - 1) * ffn, h,
                                   _splits(cfg.fc1_fprop, tp), fp8),
        proj_dgrad=proj_dgrad, fc2_dgrad=_alone_factor(hardware, tokens, ffn, h, _splits(cfg.fc2_dgrad, tp), fp8))
