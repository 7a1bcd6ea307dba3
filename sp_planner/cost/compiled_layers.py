"""Which plans a framework runs with its transformer layers under torch.compile, and the GEMM inputs
the compiled layer then does not save for backward (vectorized over candidates).

torchtitan compiles per TransformerBlock (v0.2.2 models/llama3/infra/parallelize.py lines 121-123,
apply_compile). sp-plan's 0.2.x TOML turns compile on for float8 plans and for MXFP8 without TP
(flags.torchtitan_v02.compiles, which asks `compiles` below); 0.3.0's config functions that sp-plan
names compile exactly its low-precision ones (b5bcd76 models/llama3/config_registry.py: llama3_405b's
CompileConfig(enable=True) and llama3_8b_mxfp8's; llama3_8b, llama3_70b and qwen3_32b keep
CompileConfig's enable = False, config/configs.py line 295). No bf16 plan is compiled.

What the compiled block saves: torch 2.13's min-cut partitioner (torch/_functorch/partitioners.py
min_cut_rematerialization_partition) over a Llama-3 block (RMSNorm, wq/wk/wv, RoPE, repeat_kv,
SDPA, wo, RMSNorm, w1/w3, SiLU x up, w2) with torchao 0.16.0's Float8Linear, tensorwise and rowwise
alike, at tp 1: it keeps the block input, both norms' fp32 rstd, Q and the repeated K and V, the
attention's output and log-sum-exp, the out-projection's FP8 input, the out-projection's output
(the second norm's input less the residual), and w1's and w3's outputs; it keeps neither norm's
output nor its FP8 cast (the QKV and FC1 inputs, rebuilt in backward from the norm's input and
rstd) nor the SwiGLU product or its cast (FC2's input, rebuilt from w1's and w3's outputs); the
out-projection's FP8 input is kept beside the attention's bf16 output, where eager torchao keeps
the bf16 tensor the two share (cost.saved_inputs).
Compiled in bf16 the same block keeps both norms' outputs and the product, as eager does. Traced
on CPU (tp 1; the partitioner's choice does not depend on the device) by sp-plan's developers;
the traced list and its bytes per token are in docs/cost-model.md (stop 47). Under TP the QKV and
FC1 inputs arrive by an all-gather, which the partitioner does not recompute, so only FC2's
(row-parallel, never gathered) is dropped there; MoE layers (grouped expert GEMMs) were not traced
and keep the eager count, as do recomputed layers.

At tp > 1 with nothing recomputed the compiled block also keeps each per-tensor FP8 weight shard
its forward cast, 1 byte a GEMM weight (cost.tp_gathers, traced with FSDP2 and for an MoE layer's
shared experts; kept_fp8_weight_bytes): a saved tensor of the layer like its activations, held
from its forward to its backward for every micro-batch in flight.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.flops import _active_ffn_width
from sp_planner.cost.fp8_params import cast_gemm_params_per_layer
from sp_planner.cost.precision import BF16, FP8, FP8_ELEM_BYTES
from sp_planner.cost.saved_inputs import saved_input_elem_bytes
from sp_planner.cost.tp_gathers import TpGathers, keeps_fp8_weight_shards
from sp_planner.plan import PRECISIONS
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec


class CompiledLayers(FrozenModel):
    """The plan precisions whose layers a framework compiles; `eager_with_tp`: of those, the ones
    it runs eagerly at tp > 1."""

    precisions: frozenset[str] = frozenset()
    eager_with_tp: frozenset[str] = frozenset()


EAGER_LAYERS = CompiledLayers()
# sp-plan's 0.2.x TOML: every float8 plan, MXFP8 at tp 1 only (MXLinearConverter asserts "TP not yet
# supported with torch.compile for mxfp8", v0.2.2 components/quantization/mx.py lines 46-52).
TORCHTITAN_V02_COMPILED = CompiledLayers(precisions=frozenset({"fp8", "mxfp8"}), eager_with_tp=frozenset({"mxfp8"}))
# 0.3.0's llama3_405b (float8) and llama3_8b_mxfp8, compiled whatever the TP degree.
TORCHTITAN_V03_COMPILED = CompiledLayers(precisions=frozenset({"fp8", "mxfp8"}))


def compiles(layers: CompiledLayers, precision, tp):
    """Whether each candidate's layers run compiled; `precision`: plan.PRECISIONS codes."""
    code, tp = np.asarray(precision), np.asarray(tp)
    on = np.isin(code, [PRECISIONS.index(p) for p in layers.precisions])
    eager = np.isin(code, [PRECISIONS.index(p) for p in layers.eager_with_tp]) & (tp > 1)
    return on & ~eager


def compiled_layer_delta_bytes(model: ModelSpec, layers: CompiledLayers, *, tokens, tp, precision, saved):
    """Bytes per layer per micro-batch the compiled layer saves beyond (negative: short of) what
    cost.activations counts for the eager one, with nothing recomputed (module docstring): less
    the QKV and FC1 inputs (tokens x h each, at tp 1) and FC2's (tokens x ffn/tp), at the width
    cost.activations counts them (`saved`: their cost.saved_inputs precision codes); plus the
    out-projection's low-precision cast of its input (tokens x q/tp) where that input was counted
    as the attention's bf16 output (`saved` bf16). 0 where the layers run eagerly, in bf16, or are
    MoE layers (not traced). `precision`: plan.PRECISIONS codes."""
    code, tp = np.asarray(precision), np.asarray(tp)
    on = compiles(layers, code, tp) & (code != BF16)
    if model.moe is not None or not on.any():
        return np.zeros(np.broadcast(code, tp).shape)
    saved = np.asarray(saved)
    widths = np.where(tp == 1, 2 * model.hidden_size, 0) + _active_ffn_width(model) / tp
    dropped = saved_input_elem_bytes(saved) * tokens * widths
    wo_cast = np.where(saved == BF16, saved_input_elem_bytes(code) * tokens * model.q_size / tp, 0.0)
    return np.where(on, wo_cast - dropped, 0.0)


def kept_fp8_weight_bytes(model: ModelSpec, layers: CompiledLayers, gathers: TpGathers, *, tp, ep, etp, precision,
                          recompute, fp8_blockwise=False):
    """Bytes per layer and micro-batch of the per-tensor FP8 weight shards the compiled block keeps
    for backward (module docstring): 1 byte a GEMM weight its linears cast
    (cost.fp8_params.cast_gemm_params_per_layer) where the layers run compiled in per-tensor FP8 at
    tp > 1 with nothing recomputed and the linears keep them (cost.tp_gathers.keeps_fp8_weight_shards);
    0 elsewhere. `precision`, `recompute`: plan.PRECISIONS and plan.RECOMPUTE codes."""
    code = np.asarray(precision)
    on = (compiles(layers, code, tp) & (code == FP8) & ~np.asarray(fp8_blockwise, dtype=bool)
          & keeps_fp8_weight_shards(gathers, tp=tp, recompute=recompute))
    if not np.any(on):
        return np.zeros(np.shape(on))
    return np.where(on, FP8_ELEM_BYTES * cast_gemm_params_per_layer(model, gathers, tp=tp, ep=ep, etp=etp), 0.0)
