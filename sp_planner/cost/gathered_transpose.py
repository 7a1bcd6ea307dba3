"""FP8 transposes of the tensors the TP group all-gathers, on Hopper (vectorized).

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
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.amax_reduce import amax_reductions_per_layer
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.precision import FP8, FP8_ELEM_BYTES
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Read the gathered FP8 tensor, write its FP8 transpose (bytes an element).
TRANSPOSE_BYTES_PER_ELEM = 2 * FP8_ELEM_BYTES


def gathered_tensors_per_layer(model: ModelSpec) -> float:
    """Tensors of the model's average layer the TP group gathers in FP8 and the backward transposes
    (module docstring): cost.amax_reduce's forward and backward reductions together."""
    fwd, bwd = amax_reductions_per_layer(model)
    return float(fwd + bwd)


def gathered_transpose_s(model: ModelSpec, hardware: HardwareProfile, *, tokens, tp, precision,
                         fp8_blockwise=False, sequence_parallel: bool = True):
    """Backward seconds per layer and micro-batch on one rank of the gathered tensors' FP8
    transposes, less the local transposes cost.precision's casts charge for them (module
    docstring); `tokens`: the micro-batch's tokens on the TP group. 0 unless per-tensor FP8 at
    tp > 1 with sequence parallelism on a TN-only chip."""
    tp = np.asarray(tp, dtype=np.float64)
    on = (np.asarray(precision) == FP8) & ~np.asarray(fp8_blockwise, dtype=bool) & (tp > 1)
    if hardware.fp8_gemm_any_layout or not sequence_parallel:
        on = np.zeros(np.shape(on), dtype=bool)
    elements = gathered_tensors_per_layer(model) * np.asarray(tokens, dtype=np.float64) * model.hidden_size
    net_bytes = elements * (TRANSPOSE_BYTES_PER_ELEM - FP8_ELEM_BYTES / tp)
    return np.where(on, memory_pass_time_s(hardware, net_bytes), 0.0)
