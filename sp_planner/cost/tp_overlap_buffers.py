"""Userbuffers' memory passes and MXFP8's side traffic under TP overlap (cost.tp_overlap).

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
  chunk is cloned out (layernorm_linear.py line 940, linear.py line 926), after the wgrad GEMM;
- a reduce-scatter run as a ring exchange (cost.tp_overlap_cfg: Megatron-Bridge's FP8 configs)
  sends bf16 partial outputs and sums the tp chunks on the main stream after the last one
  (common/comm_gemm_overlap/comm_gemm_overlap.cpp lines 1204-1215 at v2.14.1 366798ef8,
  reduce_bf16: userbuffers.cu lines 2707-2740 read tp chunks and write one), (tp + 1) x the shard
  in bf16 (reduce_s).
Each priced as a memory-bound pass (cost.kernels.memory_pass_time_s), the copy in the elements the
buffer holds (cost.gathered_transpose.ub_gather_elem_bytes: FP8 data alone under per-tensor FP8 and
MXFP8). TE v1.8 (3ec998e, layernorm_linear.py lines 121-124) wrote the norm output into the buffer
instead: older runs copied less.

MXFP8 (mx_side_traffic; TE v2.14.1 366798ef8 line numbers, the same code at v2.7 0289e7638 since
077e26c31, 2025-08-09, and at d0067d0):
- the scales go apart: fill_userbuffers_buffer_for_all_gather copies one usage's FP8 data into the
  uint8 buffer (module/base.py lines 575-587) and all-gathers its E8M0 scales through NCCL, blocking,
  on the stream that fills it (lines 597-612): for each of the layer's six userbuffers gathers, a
  call moving shard / 32 bytes a rank, on the main stream before its GEMM (scale_gather_s);
- userbuffers carries one usage at a time (lines 575-580), so the projection's and FC2's output
  gradients, gathered row-wise by their dgrad ring exchanges (linear.py lines 577-584), are gathered
  again column-wise for the weight gradients (linear.py lines 786-817, base.py line 293: the
  "external" proj_wgrad, fc2_wgrad): on the dgrad ring exchange's send stream, after its transfers,
  the bf16 gradient is quantized column-wise (2 bytes read, 1 + 1/32 written: col_cast_s), copied
  into a second buffer, its scales gathered, and its data sent to every peer (comm_gemm_overlap.cpp
  lines 630-650, bulk_overlap_external_ag); the main stream waits for that before the
  weight-gradient GEMM. cost.precision's cast writes both usages on the main stream: the
  column-wise write is taken back there (main_write_saved_s).
Each term is per event; on an MoE layer each counts by the share of the layer's gathers TE modules
make (cost.gathered_transpose.fp8_share), the weight MxSideTraffic.share carries.

A pipeline reduce-scatter with fp8_buf (cost.tp_overlap_cfg: TE 1.x, the NeMo launcher's FP8
configuration) moves its GEMM's FP8 output, 1 byte an element, where the run is per-tensor FP8
(a uint8 buffer only under use_fp8, and FP8 GEMM outputs only in TE's FP8 path, v1.8); the TE
share's mix with bf16 on an MoE layer, as ub_gather_elem_bytes (fp8_buf_rs_elem_bytes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.gathered_transpose import (
    MX_SCALE_BYTES_PER_ELEM,
    MX_USAGE_BYTES_PER_ELEM,
    fp8_gathers,
    fp8_share,
)
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.precision import FP8_ELEM_BYTES
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class BufferCopies(NamedTuple):
    """Userbuffers' memory passes on one rank (module docstring), seconds each."""

    gather_s: np.ndarray | float  # the local shard copied into an all-gather's buffer
    scatter_s: np.ndarray | float  # a bulk reduce-scatter's chunk cloned out of its bf16 buffer
    reduce_s: np.ndarray | float = 0.0  # a ring-exchange reduce-scatter's sum of its tp chunks


NO_COPIES = BufferCopies(0.0, 0.0)


class MxSideTraffic(NamedTuple):
    """MXFP8's userbuffers traffic beside the data (module docstring), seconds on one rank per event,
    and the weight of each event: the TE share of the layer's gathers (0 where no MXFP8)."""

    scale_gather_s: np.ndarray | float  # one gather's scales through NCCL, on the filling stream
    col_cast_s: np.ndarray | float  # an output gradient's column-wise cast on the send stream
    main_write_saved_s: np.ndarray | float  # that cast's write, charged on the main stream
    share: np.ndarray | float  # each event's weight (the TE share, 0 without MXFP8)


NO_MX = MxSideTraffic(0.0, 0.0, 0.0, 0.0)


def buffer_copies(hardware: HardwareProfile, *, shard_elements, gather_elem_bytes, tp=1) -> BufferCopies:
    """The copies of `shard_elements` (a rank's tokens / tp x h) into an all-gather buffer, in the
    buffer's `gather_elem_bytes`, and out of a bulk reduce-scatter's bf16 one: read + write each;
    and a ring-exchange reduce-scatter's sum of `tp` bf16 chunks into one."""
    shard = np.asarray(shard_elements, dtype=np.float64)
    return BufferCopies(gather_s=memory_pass_time_s(hardware, 2.0 * shard * np.asarray(gather_elem_bytes)),
                        scatter_s=memory_pass_time_s(hardware, 2.0 * shard * BF16_BYTES),
                        reduce_s=memory_pass_time_s(hardware, (np.asarray(tp) + 1.0) * shard * BF16_BYTES))


def mx_side_traffic(hardware: HardwareProfile, *, shard_elements, tp, tp_stride, gpus_per_node: int, mx,
                    share: float) -> MxSideTraffic:
    """MXFP8's side traffic where `mx` (per candidate) says the group gathers MXFP8 (module
    docstring); `share`: cost.gathered_transpose.fp8_share."""
    shard = np.asarray(shard_elements, dtype=np.float64)
    weight = np.where(np.asarray(mx, dtype=bool), share, 0.0)
    sent = shard * MX_SCALE_BYTES_PER_ELEM * (np.asarray(tp) - 1)
    scales = ring_collective_time_s(hardware, "all_gather", sent, tp, tp_stride, gpus_per_node)
    cast = memory_pass_time_s(hardware, shard * (BF16_BYTES + MX_USAGE_BYTES_PER_ELEM))
    write = memory_pass_time_s(hardware, shard * MX_USAGE_BYTES_PER_ELEM)
    return MxSideTraffic(scale_gather_s=scales, col_cast_s=cast, main_write_saved_s=write, share=weight)


def external_gather_s(dgrad_s, ag_s, copy_s, mx: MxSideTraffic):
    """Seconds an output gradient's column-wise gather adds beyond its dgrad ring exchange, which
    takes `dgrad_s` from its start (module docstring): it follows the ring's transfers (`ag_s`) on
    the send stream with its cast, copy (`copy_s`), scales and transfer (`ag_s`)."""
    chain = ag_s + mx.col_cast_s + copy_s + mx.scale_gather_s + ag_s
    return mx.share * np.maximum(0.0, chain - np.asarray(dgrad_s, dtype=np.float64))


def fp8_buf_rs_elem_bytes(model: ModelSpec, *, tp, precision, gathers: TpGathers, fp8_blockwise=False,
                          sequence_parallel: bool = True):
    """Mean bytes an element of an fp8_buf pipeline reduce-scatter moves (module docstring): 1 where
    the run is per-tensor FP8 (the TE share's mix with bf16 on an MoE layer), bf16's 2 otherwise;
    `gathers`: the framework's (cost.tp_gathers), Transformer Engine's wherever userbuffers run."""
    fp8 = fp8_gathers(tp=tp, precision=precision, gathers=gathers, fp8_blockwise=fp8_blockwise,
                      sequence_parallel=sequence_parallel)
    return np.where(fp8, BF16_BYTES - fp8_share(model) * (BF16_BYTES - FP8_ELEM_BYTES), float(BF16_BYTES))
