"""What a layer's linears save for their weight gradients under TP with sequence parallelism, by
runtime (cost.tp_gathers, TpGathers.regathers_saved_inputs; vectorized over candidates).

Megatron-Core / Transformer Engine (the default): each column-parallel linear saves its sequence
shard, quantized under FP8 (cost.precision), and backward gathers it again (cost.tp_calls): the
norms' outputs counted in cost.activations are those shards.

torchtitan's DTensor TP: autograd keeps the input a linear received, so the QKV and FC1 inputs are
kept gathered, whole on every TP rank (the two gathers a layer does not make again,
cost.tp_calls.TP_INPUT_ALL_GATHERS), and torchao's Float8Linear / MXFP8Linear keep it in the
precision it arrived in: quantized only where a float8 TP style cast it before the linear (tensorwise
float8 at tp > 1, the recipes the framework gathers in FP8: the out-projection's and FC2's inputs
too), bf16 otherwise (cost.tp_gathers has the sources). The sharded norm outputs are kept by nothing.
An MoE layer's MLP input is not gathered by a float8 style: torchtitan 0.2.2's apply_moe_ep_tp
(models/llama4/infra/parallelize.py lines 500-555 at 73a0e69, which qwen3 and deepseek_v3 import)
gathers the MoE block's input with the plain PrepareModuleInputOutput (lines 521-527) and its shared
experts take plain ColwiseParallel / RowwiseParallel (lines 543-548), so on the MoE layers of a
framework whose float8 stops short of the experts (TpGathers.low_precision_experts False) that
kept input is bf16.

The output layer likewise (kept_output_input_bytes): torchtitan 0.2.2 gathers its input in
ColwiseParallel(input_layouts=Shard(1)) (models/llama3/infra/parallelize.py lines 182-186 at
73a0e69; torch tensor/parallel/style.py ColwiseParallel._prepare_input_fn redistributes to
Replicate) and the plain bf16 nn.Linear keeps the gathered tensor until its backward; 0.3.0 gathers
the final norm's output (models/common/decoder_sharding.py pre_lm_head_norm_config,
out_dst_shardings Replicate, lines 119-139) and its ChunkedLossWrapper holds those hidden states
while every chunk's lm_head and loss run (components/loss.py lines 594-597, 705-765). The output
layer stays bf16: sp-plan's 0.2.x TOML filters "output" from the float8 converter, 0.3.0's
llama3_405b filters "lm_head". Megatron-Core saves the sequence shard and gathers it again. The
shard itself (tokens/tp x h) is counted for no framework, as the final norm's input is not
(Megatron's theoretical_memory_usage.py lines 368-376 at d98e8a6 counts the output layer's input
and the loss together at pp 1, 4sbh(1 + V/h)/tp): what is counted is the difference, tp - 1 of
the tp shards, held at the loss only (the output layer's backward frees it before the layers').
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.gathered_transpose import fp8_gathers, mx_gathers
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.precision import BF16, FP8, FP8_ELEM_BYTES, MX_BLOCK, MXFP8
from sp_planner.cost.tp_calls import TP_INPUT_ALL_GATHERS
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.specs.model import ModelSpec

# The attention's and the MLP's inputs (QKV, FC1): the tensors the two backward input gathers of a
# layer move (cost.tp_calls), kept gathered where the framework does not gather them again.
GATHERED_INPUTS_PER_LAYER = TP_INPUT_ALL_GATHERS


def saved_input_precision(precision, *, tp, gathers: TpGathers, fp8_blockwise=False, sequence_parallel: bool = True):
    """The precision codes (plan.PRECISIONS) a layer's GEMM inputs are saved in (module docstring):
    the plan's where the framework saves them quantized (Transformer Engine), and for one that keeps
    what its linears received only where the TP group gathers them quantized; bf16 otherwise."""
    precision = np.asarray(precision)
    if gathers.regathers_saved_inputs:
        return precision
    where = dict(tp=tp, precision=precision, gathers=gathers, sequence_parallel=sequence_parallel)
    cast_before = fp8_gathers(**where, fp8_blockwise=fp8_blockwise) | mx_gathers(**where)
    return np.where(cast_before, precision, BF16)


def saved_input_elem_bytes(saved_precision):
    """Bytes an element of a saved GEMM input holds: bf16's 2, FP8's 1, MXFP8's 1 with its E8M0
    scale per MX_BLOCK (cost.precision)."""
    saved_precision = np.asarray(saved_precision)
    return np.select([saved_precision == FP8, saved_precision == MXFP8],
                     [float(FP8_ELEM_BYTES), FP8_ELEM_BYTES + 1 / MX_BLOCK], float(BF16_BYTES))


def kept_gathered_input_bytes(model: ModelSpec, *, tokens, tp, precision, gathers: TpGathers, fp8_blockwise=False,
                              sequence_parallel: bool = True):
    """Bytes per layer per micro-batch one rank holds beyond the sequence shards cost.activations
    counts for the QKV and FC1 inputs, where the framework keeps them gathered (module docstring):
    2 inputs x `tokens` (micro-batch x sequence / cp) x h x (1 - 1/tp), at their saved width; on
    the MoE layers (moe_layer_fraction of them) the FC1 slot, the MoE block's input, bf16 where the
    framework's float8 stops short of the experts (gathers.low_precision_experts False). 0 for a
    framework that gathers them again, or without sequence parallelism (the inputs are whole)."""
    tp = np.asarray(tp, dtype=np.float64)
    if gathers.regathers_saved_inputs or not sequence_parallel:
        return np.zeros(np.broadcast(tp, np.asarray(precision)).shape)
    saved = saved_input_precision(precision, tp=tp, gathers=gathers, fp8_blockwise=fp8_blockwise,
                                  sequence_parallel=sequence_parallel)
    if model.moe is None or gathers.low_precision_experts:
        elements = GATHERED_INPUTS_PER_LAYER * np.asarray(tokens, dtype=np.float64) * model.hidden_size * (1 - 1 / tp)
        return saved_input_elem_bytes(saved) * elements
    per_input = np.asarray(tokens, dtype=np.float64) * model.hidden_size * (1 - 1 / tp)
    # QKV's input and the dense layers' FC1 input at the saved width, the MoE layers' in bf16.
    moe = moe_layer_fraction(model)
    low = GATHERED_INPUTS_PER_LAYER - moe
    return saved_input_elem_bytes(saved) * (low * per_input) + BF16_BYTES * (moe * per_input)


def kept_output_input_bytes(model: ModelSpec, *, tokens, tp, gathers: TpGathers, sequence_parallel: bool = True):
    """Bytes the loss stage's rank holds at the loss beyond the output layer's sequence shard, where
    the framework keeps its input gathered (module docstring): `tokens` (micro-batch x sequence /
    cp) x h x (1 - 1/tp) in bf16. 0 for a framework that gathers it again, or without sequence
    parallelism (the input is whole on every rank either way)."""
    tp = np.asarray(tp, dtype=np.float64)
    if gathers.regathers_saved_inputs or not sequence_parallel:
        return np.zeros(tp.shape)
    return BF16_BYTES * np.asarray(tokens, dtype=np.float64) * model.hidden_size * (1 - 1 / tp)
