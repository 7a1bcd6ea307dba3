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
That is cost.tp_calls' 2 + 2 forward and 4 + 2 backward collectives.

How each method hides its collective (TE common/comm_gemm_overlap/comm_gemm_overlap.cpp at
d0067d0):
- ring_exchange (split_overlap_ag, lines 1161-1196): the GEMM runs in tp chunks, the first on
  the local shard; while chunk i runs, the next shard is sent and received (copy engine,
  use_ce), and chunk i + 1 waits for it: each of the tp - 1 transfers (ag / (tp - 1)) is
  exposed where it takes longer than a chunk (gemm / tp); the GEMM keeps every SM (no margin)
  and loses the 1 SM the collective holds while it runs (cost.overlap's charge): with use_ce
  its kernels only signal the peers, on one block whatever num_sm is (userbuffers.cu
  userbuffers_sendrecv, SETUP_LAUNCH_CONFIG(signalonly ? 1 : comm->sms, ..), signalonly where
  use_ce: lines 2347 and 2365 at v2.14.1, 2273 and 2290 at v1.8), so TE 1.8's default num_sm 16
  costs what TE 2.x's num_sm 1 does. A
  reduce-scatter run as a ring exchange (split_overlap_rs of CommOverlapP2PBase, lines
  1295-1405; a tuned config's choice) sends each chunk's partial output to its rank while the
  next chunk runs, the last chunk kept, and sums the tp chunks after them
  (cost.tp_overlap_buffers' reduce_s). With aggregate (TE 1.x comm_gemm_overlap.h lines 869-933 at
  v1.8, cost.tp_overlap_cfg) the ranks of each pair first swap their shards, exposed whole since
  the first GEMM waits for it, then run tp / 2 GEMMs of 2 shards each, while each but the last
  sends the next 2 shards: each of those tp / 2 - 1 transfers exposed where longer than its GEMM;
- pipeline (split_overlap_rs, lines 719-747): the GEMM runs in num_splits 4 chunks, each chunk's
  reduce-scatter issued after it and hidden behind the next chunk, so the last chunk's is
  exposed whole and the others where longer than a chunk. With fp8_buf (cost.tp_overlap_cfg) the
  chunks are FP8 and the reduce-scatter moves 1 byte an element (`fp8_rs_s`);
- bulk (bulk_overlap, line 444): the collective runs beside the whole GEMM, exposed only where it
  is longer (max(0, comm - gemm)).
A GEMM with set_sm_margin is launched on sm_count - num_sm SMs for its whole length (line 143:
_math_sms = sm_count - num_comm_sm under set_sm_margin; TE's defaults, base.py lines 384-387:
num_sm 16 and the margin for pipeline and bulk), i.e. takes sms / (sms - num_sm) of its time, and
that slower GEMM is the window; without it the collective's kernel holds its num_sm SMs beside the
GEMM while it runs (cost.overlap's charge: num_sm / sms of the overlapped time; a ring exchange's 1,
above). A dgrad or wgrad GEMM takes its forward GEMM's time. Each GEMM's method, num_sm, margin and
splits are the run's userbuffers configuration's (cost.tp_overlap_cfg: TE 2.x's defaults, TE 1.8's
where a row names them, or a tuned one a Megatron-Bridge or NeMo recipe passes, Overlap.tp_comm_cfg).

Chunk GEMMs' slowdowns and a ring exchange's last chunk alone (`chunks`, `last`): cost.tp_overlap_chunks.
The SMs are the GPU's own (cost.overlap.gpu_sm_count: 132 on Hopper, 148 on B200 and GB200, 160 on
B300 and GB300). On multicast nodes the bulk collectives and a pipeline's bf16 reduce-scatter move
tp / (tp - 1) of a ring's bytes (`multicast`, cost.tp_overlap_multicast). Not modelled: the copy
engine's bandwidth (the transfers are priced as cost.links' rings), and a collective kernel's speed
on its num_sm SMs.

Userbuffers' buffer copies and MXFP8's scales and second, column-wise gather of the output
gradients: cost.tp_overlap_buffers. Under FP8 and MXFP8 the buffers hold FP8 data alone, 1 byte an
element (cost.gathered_transpose.ub_gather_elem_bytes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.flops import _active_ffn_width, layer_gemm_flops_per_token, mlp_gemm_flops_per_token
from sp_planner.cost.overlap import SMS_PER_GPU
from sp_planner.cost.tp_overlap_buffers import NO_COPIES, NO_MX, BufferCopies, MxSideTraffic, external_gather_s
from sp_planner.cost.tp_overlap_cfg import RING_EXCHANGE, TE_DEFAULT, UbConfig, UbGemm
from sp_planner.cost.tp_overlap_chunks import EVEN, WHOLE, ChunkFactors, LastChunks
from sp_planner.specs.model import ModelSpec

# SMs a ring exchange's copy-engine transfers hold beside its GEMM: their one-block signal kernels
# (module docstring).
RING_EXCHANGE_SMS = 1


class LayerGemms(NamedTuple):
    """One layer's forward GEMM seconds on one rank (vectorized)."""

    qkv_s: np.ndarray | float
    proj_s: np.ndarray | float
    fc1_s: np.ndarray | float
    fc2_s: np.ndarray | float


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


def ring_exchange_s(ag_s, gemm_s, tp, chunking=1.0, sms=SMS_PER_GPU, g: UbGemm = TE_DEFAULT.qkv_fprop, last=1.0):
    """Seconds a ring_exchange collective (`ag_s`: its tp - 1 transfers) adds to its GEMM (module
    docstring): the GEMM's chunking slowdown, the transfers beyond the tp chunks beside them, and
    the GPU's `sms` its settings `g` take: its margin, or the SM its signals hold while it runs;
    `last`: its last chunk alone over its even share (cost.tp_overlap_chunks), after all transfers."""
    ag_s, whole = np.asarray(ag_s, dtype=np.float64), np.asarray(gemm_s, dtype=np.float64)
    gemm_s = whole * chunking
    tail_s = whole * last
    if g.set_sm_margin:
        gemm_s, tail_s = margin_gemm_s(gemm_s, sms, g.num_sm), margin_gemm_s(tail_s, sms, g.num_sm)
    steps = np.maximum(tp - 1, 1)
    if g.aggregate:  # the pair swap, then tp / 2 GEMMs beside 2-shard sends (module docstring)
        pairs = np.asarray(tp, dtype=np.float64) / 2
        exposed = ag_s / steps + (pairs - 1) * np.maximum(0.0, 2 * ag_s / steps - gemm_s / pairs)
        tail_s = tail_s / pairs
    else:
        exposed = steps * np.maximum(0.0, ag_s / steps - gemm_s / tp)
        tail_s = tail_s / tp
    # No end before every transfer and then the last chunk alone (cost.tp_overlap_chunks); with last 1
    # the rule above already meets it.
    exposed = np.where(np.asarray(last) > 1.0, np.maximum(exposed, ag_s + tail_s - gemm_s), exposed)
    if g.set_sm_margin:
        return gemm_s - whole + exposed
    return gemm_s - whole + exposed + RING_EXCHANGE_SMS / sms * np.minimum(ag_s, gemm_s)


def margin_gemm_s(gemm_s, sms=SMS_PER_GPU, num_sm=TE_DEFAULT.proj_fprop.num_sm):
    """A GEMM launched with TE's SM margin: on the GPU's `sms` - `num_sm` SMs."""
    return np.asarray(gemm_s, dtype=np.float64) * sms / (sms - num_sm)


def pipeline_s(rs_s, gemm_s, chunking=1.0, sms=SMS_PER_GPU, g: UbGemm = TE_DEFAULT.proj_fprop):
    """Seconds a pipeline reduce-scatter adds to its GEMM: its chunking and the margin's slowdown
    (or the SMs it holds), the last chunk's reduce-scatter, and each other chunk's beyond the next
    chunk's GEMM."""
    rs_s, whole = np.asarray(rs_s, dtype=np.float64), np.asarray(gemm_s, dtype=np.float64)
    slow = margin_gemm_s(whole * chunking, sms, g.num_sm) if g.set_sm_margin else whole * chunking
    splits = g.num_splits
    chunk_rs, chunk_gemm = rs_s / splits, slow / splits
    exposed = chunk_rs + (splits - 1) * np.maximum(0.0, chunk_rs - chunk_gemm)
    if g.set_sm_margin:
        return slow - whole + exposed
    return slow - whole + exposed + g.num_sm / sms * np.minimum(rs_s, slow)


def bulk_s(comm_s, gemm_s, sms=SMS_PER_GPU, g: UbGemm = TE_DEFAULT.qkv_dgrad):
    """Seconds a bulk collective adds to its GEMM: the margin's slowdown and what it takes beyond
    the slowed GEMM; without the margin, the SMs it holds and what it takes beyond the GEMM."""
    comm_s = np.asarray(comm_s, dtype=np.float64)
    if not g.set_sm_margin:
        gemm_s = np.asarray(gemm_s, dtype=np.float64)
        return np.maximum(0.0, comm_s - gemm_s) + g.num_sm / sms * np.minimum(comm_s, gemm_s)
    slow = margin_gemm_s(gemm_s, sms, g.num_sm)
    return slow - gemm_s + np.maximum(0.0, comm_s - slow)


def _reduce_scatter_s(rs_s, fp8_rs_s, gemm_s, tp, chunking, sms, g: UbGemm, copies: BufferCopies, multicast=1.0):
    """A forward reduce-scatter's seconds by its method: pipeline (of FP8 chunks where fp8_buf; of
    bf16 chunks on multicast where the node has it), or a ring exchange and its sum."""
    if g.method == RING_EXCHANGE:
        return ring_exchange_s(rs_s, gemm_s, tp, chunking, sms, g) + copies.reduce_s
    return pipeline_s(fp8_rs_s if g.fp8_buf else multicast * rs_s, gemm_s, chunking, sms, g)


def tp_overlap_times(ag_s, rs_s, gemms: LayerGemms, tp, chunks: ChunkFactors = WHOLE,
                     sms: int = SMS_PER_GPU, copies: BufferCopies = NO_COPIES, cfg: UbConfig = TE_DEFAULT,
                     mx: MxSideTraffic = NO_MX, fp8_rs_s=None, last: LastChunks = EVEN,
                     multicast=1.0) -> TPOverlapTimes:
    """One layer's TP all-gathers (ag_s each) and reduce-scatters (rs_s each) at TP degree `tp`
    overlapped with their GEMMs as the userbuffers configuration `cfg` pairs them, the split GEMMs
    slowed by `chunks`, on a GPU of `sms` SMs, with the buffers' `copies` (a ring exchange's before
    it, a bulk gather's ahead of it on the communication stream, a bulk scatter's after it) and,
    under MXFP8, `mx`: each gather's scales before it, and the output gradients' column-wise gathers
    after their dgrad ring exchanges (cost.tp_overlap_buffers); `fp8_rs_s`: a pipeline reduce-scatter
    of an fp8_buf buffer (rs_s where None); `last`: the all-gather ring exchanges' last chunks alone;
    `multicast`: the bytes of a bulk collective or a pipeline's bf16 reduce-scatter over a ring's
    (cost.tp_overlap_multicast.multicast_bytes_factor; 1 without multicast)."""
    g, c, copy, u, mc = gemms, chunks, copies.gather_s, cfg, multicast
    fp8_rs = rs_s if fp8_rs_s is None else fp8_rs_s
    fwd = (ring_exchange_s(ag_s, g.qkv_s, tp, c.qkv, sms, u.qkv_fprop, last.qkv)
           + _reduce_scatter_s(rs_s, fp8_rs, g.proj_s, tp, c.proj, sms, u.proj_fprop, copies, mc)
           + ring_exchange_s(ag_s, g.fc1_s, tp, c.fc1, sms, u.fc1_fprop, last.fc1)
           + _reduce_scatter_s(rs_s, fp8_rs, g.fc2_s, tp, c.fc2, sms, u.fc2_fprop, copies, mc) + 2 * copy)
    proj_dgrad = ring_exchange_s(ag_s, g.proj_s, tp, c.proj_dgrad, sms, u.proj_dgrad, last.proj_dgrad)
    fc2_dgrad = ring_exchange_s(ag_s, g.fc2_s, tp, c.fc2_dgrad, sms, u.fc2_dgrad, last.fc2_dgrad)
    bwd = (proj_dgrad + fc2_dgrad + 2 * copy
           + bulk_s(mc * ag_s + copy, g.qkv_s, sms, u.qkv_dgrad) + bulk_s(mc * ag_s + copy, g.fc1_s, sms, u.fc1_dgrad)
           + bulk_s(mc * rs_s, g.qkv_s, sms, u.qkv_wgrad) + bulk_s(mc * rs_s, g.fc1_s, sms, u.fc1_wgrad)
           + 2 * copies.scatter_s)
    if mx is not NO_MX:  # MXFP8's scales (2 forward, 4 backward) and column-wise gathers
        fwd = fwd + 2 * mx.share * mx.scale_gather_s
        bwd = (bwd + 4 * mx.share * mx.scale_gather_s - 2 * mx.share * mx.main_write_saved_s
               + external_gather_s(g.proj_s + proj_dgrad, ag_s, copy, mx)
               + external_gather_s(g.fc2_s + fc2_dgrad, ag_s, copy, mx))
    return TPOverlapTimes(fwd_s=fwd, bwd_s=bwd)
