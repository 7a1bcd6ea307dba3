"""The tensors the TP group all-gathers in FP8, and their FP8 transposes on Hopper (vectorized).

Under per-tensor FP8 (TE Float8Quantizer, delayed scaling; Float8CurrentScalingQuantizer, Megatron
--fp8-recipe tensorwise) with tensor and sequence parallelism, Transformer Engine gathers a
quantized tensor as row-wise FP8 only: "All-gather is not supported with FP8 column-wise data"
(TE v2.9 70f53666 pytorch/tensor/float8_tensor.py supports_only_rowwise_all_gather, lines 195 and
396; pytorch/distributed.py _all_gather_fp8 lines 926-939 for the NCCL gather; module/base.py
grad_output_preprocess lines 1163-1192 and userbuffers' fill_userbuffers_buffer_for_all_gather
the same). The weight-gradient GEMM needs the gathered tensor column-wise, which on a chip whose
FP8 GEMMs are TN only (Hopper; HardwareProfile.fp8_gemm_any_layout) is its FP8 transpose, made
after the gather on all the micro-batch's tokens: module/linear.py line 769
(inputmat_total.update_usage(columnwise_usage=True)) and line 811 (grad_output, the same),
module/layernorm_linear.py line 810 (ln_out_total); Float8TensorStorage.update_usage calls
_create_transpose where is_non_tn_fp8_gemm_supported() is false (tensor/storage/
float8_tensor_storage.py). The local quantization writes no transpose of these tensors (linear.py
line 381, layernorm_linear.py line 192: columnwise False under the gather).

The tensors are the ones whose amax current scaling reduces over the TP group (cost.amax_reduce):
the column-parallel inputs (QKV, FC1) and the row-parallel output gradients (projection, FC2) of a
dense layer, the attention's pair on an MoE layer, plus the shared experts'. Each is transposed in
the backward, on the stream before its weight-gradient GEMM: read the gathered FP8 tensor (1 byte
an element), write its transpose (1 byte), tokens x h elements. cost.precision's cast charges a
local transpose (1 byte on tokens / tp x h) for each of them, which TE does not write there; it is
taken back here. Block scaling (Float8BlockQuantizer) and MXFP8 gather column-wise data and are
not charged; Blackwell's FP8 GEMMs take either layout and need no transpose.

The gathers themselves move the FP8 data, 1 byte an element instead of bf16's 2, on every chip:
TE at d0067d0 (2026-08-22) pytorch/distributed.py gather_along_first_dim (lines 1735-1745) sends a
Float8 tensor, or a tensor with a Float8Quantizer / Float8CurrentScalingQuantizer, to
_all_gather_fp8 (lines 989-1080), which quantizes it row-wise and all-gathers its uint8 `_data`
(lines 1060-1068; one scale_inv, shared). Each of a dense layer's six gathers under sequence
parallelism passes one: forward, the column-parallel input (module/layernorm_linear.py lines
283-315, ln_out quantized by the norm or before the gather; module/linear.py lines 378-419);
backward, the row-parallel output gradient (module/base.py grad_output_preprocess lines 1719-1751)
and the column-parallel input again for the weight gradient (layernorm_linear.py lines 773-794,
linear.py lines 979-999); under userbuffers' overlap the gather buffers are uint8 with an FP8
recipe (module/base.py lines 335-345 and 472-476; fill_userbuffers_buffer_for_all_gather lines
657-676). TE v1.8 (3ec998e) did the same: layernorm_linear.py lines 126 and 157 (the FP8 ln_out
gathered) and 444 (again in backward), module/base.py lines 668-689 (the FP8 gradient). An MoE
layer's own gathers (the token dispatcher's) stay bf16: its FP8 share is its gathered tensors over
a dense layer's. The embedding's and the output layer's gathers (not TE modules) stay bf16. Block
scaling is left at bf16 here (not modelled).

MXFP8 (TE v2.14.1 366798ef8, the TE of Megatron-Bridge v0.4.2 and Megatron-LM's recipes; the same at
v2.7 0289e7638, Megatron-Bridge 25.09's): gather_along_first_dim sends an MXFP8 tensor or quantizer
to _all_gather_mxfp8 (distributed.py lines 1718-1730, 1504-1632), which gathers, in one coalesced
call, each usage the quantizer asks for: its FP8 data (1 byte an element) and its E8M0 scales (1 per
32 elements; row-wise lines 1585-1606, column-wise 1608-1629), so MX_USAGE_BYTES_PER_ELEM a usage.
MXFP8 has no row-only gather (supports_only_rowwise_all_gather False, quantized_tensor.py line 336):
forward, the column-parallel input row-wise only (layernorm_linear.py lines 201 and 261, the norm's
output quantized both ways, gathered row-wise); backward, the row-parallel output gradient both ways
(linear.py line 579, quantizer.set_usage(rowwise=True, columnwise=True), 2 x MX_USAGE_BYTES_PER_ELEM:
more than bf16's 2) and the saved input column-wise only (layernorm_linear.py lines 417-425 keep
only its column-wise data; lines 668-674 gather it). Under userbuffers the buffers carry the data
alone and the scales go apart (cost.tp_overlap_buffers).

All of this is Transformer Engine's. A framework that gathers bf16 and casts after (cost.tp_gathers:
torchtitan but for tensorwise float8, which gathers per-tensor FP8 as above) moves 2 bytes an
element and transposes no gathered FP8 tensor, but casts the same tensors whole, after the gather,
on every rank of the group: tp times the shard cost.precision charges (cast_after_gather_elements).
torchtitan 0.2.2's tensorwise float8 gathers FP8 in its attention's (and dense MLPs') Float8 TP
styles only: on an MoE layer apply_moe_ep_tp gathers the MoE block's input with the plain
PrepareModuleInputOutput (bf16) and gives the shared experts plain ColwiseParallel /
RowwiseParallel on that replicated input (models/llama4/infra/parallelize.py lines 521-527, 543-547 at
73a0e69; qwen3 and deepseek_v3 import it), so its MoE layers' FP8 share is the attention's
(fp8_share, TpGathers.fp8_shared_expert_gathers).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.amax_reduce import DENSE_REDUCTIONS, SHARED_EXPERT_REDUCTIONS, amax_reductions_per_layer
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.precision import FP8, FP8_ELEM_BYTES, MX_BLOCK, MXFP8
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Read the gathered FP8 tensor, write its FP8 transpose (bytes an element).
TRANSPOSE_BYTES_PER_ELEM = 2 * FP8_ELEM_BYTES
# One MXFP8 usage (row- or column-wise) gathered: its FP8 data and an E8M0 scale per MX_BLOCK.
MX_SCALE_BYTES_PER_ELEM = 1 / MX_BLOCK
MX_USAGE_BYTES_PER_ELEM = FP8_ELEM_BYTES + MX_SCALE_BYTES_PER_ELEM


class GatherElemBytes(NamedTuple):
    """Bytes an element of each of a layer's TP all-gathers moves (module docstring), by tensor."""

    fwd: np.ndarray  # forward: a column-parallel input (QKV, FC1)
    grad: np.ndarray  # backward: a row-parallel output gradient (projection, FC2)
    input: np.ndarray  # backward: a saved column-parallel input again (sequence parallelism only)


def gathered_tensors_per_layer(model: ModelSpec) -> float:
    """Tensors of the model's average layer the TP group gathers in FP8 and the backward transposes
    (module docstring): cost.amax_reduce's forward and backward reductions together."""
    fwd, bwd = amax_reductions_per_layer(model)
    return float(fwd + bwd)


def fp8_gathers(*, tp, precision, gathers: TpGathers, fp8_blockwise=False, sequence_parallel: bool = True):
    """Whether the TP group gathers FP8 data (module docstring): per-tensor FP8 at tp > 1 with
    sequence parallelism, where the framework gathers it in FP8 (cost.tp_gathers)."""
    on = (np.asarray(precision) == FP8) & ~np.asarray(fp8_blockwise, dtype=bool) & (np.asarray(tp) > 1)
    return on & bool(sequence_parallel) & gathers.fp8


def fp8_share(model: ModelSpec, gathers: TpGathers = TE_TP_GATHERS) -> float:
    """The share of the average layer's gathered tensors that TE modules gather (module docstring):
    1 on a dense layer, the attention's (and shared experts') on an MoE layer; the attention's
    alone where the framework gathers the MoE block's input in bf16 for its shared experts
    (gathers.fp8_shared_expert_gathers False: torchtitan, cost.tp_gathers)."""
    fwd, _ = amax_reductions_per_layer(model)
    if not gathers.fp8_shared_expert_gathers and model.moe is not None and model.moe.num_shared_experts > 0:
        fwd = fwd - moe_layer_fraction(model) * SHARED_EXPERT_REDUCTIONS[0]
    return min(fwd / DENSE_REDUCTIONS[0], 1.0)


def mx_gathers(*, tp, precision, gathers: TpGathers, sequence_parallel: bool = True):
    """Whether the TP group gathers MXFP8 data: MXFP8 at tp > 1 with sequence parallelism, where the
    framework gathers it in MXFP8 (cost.tp_gathers)."""
    return (np.asarray(precision) == MXFP8) & (np.asarray(tp) > 1) & bool(sequence_parallel) & gathers.mxfp8


def layer_gather_bytes(model: ModelSpec, *, tp, precision, gathers: TpGathers, fp8_blockwise=False,
                       sequence_parallel: bool = True) -> GatherElemBytes:
    """Mean bytes an element of the average layer's TP all-gathers moves through NCCL, by tensor:
    bf16's 2; where the group gathers per-tensor FP8, 1; MXFP8, one usage with its scales forward
    and for the saved input, both usages for the output gradient; on an MoE layer the TE share's mix
    with bf16 (module docstring). `gathers`: the recipes the framework gathers in low precision
    (cost.tp_gathers; torchtitan's torchao casts after a bf16 gather but for tensorwise float8)."""
    share = fp8_share(model, gathers)
    fp8 = fp8_gathers(tp=tp, precision=precision, gathers=gathers, fp8_blockwise=fp8_blockwise,
                      sequence_parallel=sequence_parallel)
    mx = mx_gathers(tp=tp, precision=precision, gathers=gathers, sequence_parallel=sequence_parallel)
    per_tensor = BF16_BYTES - share * (BF16_BYTES - FP8_ELEM_BYTES)
    one_usage = BF16_BYTES - share * (BF16_BYTES - MX_USAGE_BYTES_PER_ELEM)
    both_usages = BF16_BYTES - share * (BF16_BYTES - 2 * MX_USAGE_BYTES_PER_ELEM)
    fwd = np.select([fp8, mx], [per_tensor, one_usage], float(BF16_BYTES))
    grad = np.select([fp8, mx], [per_tensor, both_usages], float(BF16_BYTES))
    return GatherElemBytes(fwd=fwd, grad=grad, input=fwd)


def ub_gather_elem_bytes(model: ModelSpec, *, tp, precision, gathers: TpGathers, fp8_blockwise=False,
                         sequence_parallel: bool = True):
    """Mean bytes an element of the average layer's userbuffers transfers moves: their uint8
    buffers hold FP8 data alone under per-tensor FP8 and MXFP8 (1 byte; MXFP8's scales go apart,
    cost.tp_overlap_buffers), bf16 otherwise; the TE share's mix on an MoE layer."""
    where = dict(tp=tp, precision=precision, gathers=gathers, sequence_parallel=sequence_parallel)
    low = fp8_gathers(**where, fp8_blockwise=fp8_blockwise) | mx_gathers(**where)
    return np.where(low, BF16_BYTES - fp8_share(model) * (BF16_BYTES - FP8_ELEM_BYTES), float(BF16_BYTES))


def gathered_transpose_s(model: ModelSpec, hardware: HardwareProfile, *, tokens, tp, precision, gathers: TpGathers,
                         fp8_blockwise=False, sequence_parallel: bool = True):
    """Backward seconds per layer and micro-batch on one rank of the gathered tensors' FP8
    transposes, less the local transposes cost.precision's casts charge for them (module
    docstring); `tokens`: the micro-batch's tokens on the TP group. 0 unless the TP group gathers
    per-tensor FP8 (fp8_gathers) on a TN-only chip."""
    tp = np.asarray(tp, dtype=np.float64)
    on = fp8_gathers(tp=tp, precision=precision, gathers=gathers, fp8_blockwise=fp8_blockwise,
                     sequence_parallel=sequence_parallel)
    if hardware.fp8_gemm_any_layout:
        on = np.zeros(np.shape(on), dtype=bool)
    elements = gathered_tensors_per_layer(model) * np.asarray(tokens, dtype=np.float64) * model.hidden_size
    net_bytes = elements * (TRANSPOSE_BYTES_PER_ELEM - FP8_ELEM_BYTES / tp)
    return np.where(on, memory_pass_time_s(hardware, net_bytes), 0.0)


def cast_after_gather(*, tp, precision, gathers: TpGathers, sequence_parallel: bool = True):
    """Whether the framework casts the gathered tensors after a bf16 gather: FP8 or MXFP8 at tp > 1
    with sequence parallelism, in a recipe it does not gather in low precision (cost.tp_gathers:
    torchtitan's rowwise float8 and MXFP8; never Transformer Engine)."""
    precision = np.asarray(precision)
    after = ((precision == FP8) & (not gathers.fp8)) | ((precision == MXFP8) & (not gathers.mxfp8))
    return after & (np.asarray(tp) > 1) & bool(sequence_parallel)


def cast_after_gather_elements(model: ModelSpec, *, tokens, tp, precision, gathers: TpGathers,
                               sequence_parallel: bool = True):
    """(forward, backward) elements per layer and micro-batch one rank casts beyond the shards
    cost.precision charges, where the framework casts after the gather (cast_after_gather): the
    tensors Transformer Engine would gather quantized (cost.amax_reduce's counts: the column-parallel
    inputs forward, the row-parallel output gradients backward), each `tokens` x h whole instead of
    tokens / tp x h. torchao's own casts beyond those (per linear, and the saved input and output
    gradients cast again for the weight gradient) are not counted."""
    on = cast_after_gather(tp=tp, precision=precision, gathers=gathers, sequence_parallel=sequence_parallel)
    fwd, bwd = amax_reductions_per_layer(model)
    extra = np.asarray(tokens, dtype=np.float64) * model.hidden_size * (1 - 1 / np.asarray(tp, dtype=np.float64))
    return np.where(on, fwd * extra, 0.0), np.where(on, bwd * extra, 0.0)
