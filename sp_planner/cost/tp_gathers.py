"""How a framework's TP all-gathers run, by runtime: which low-precision recipes they move in their low
precision, and whether backward gathers the linears' saved inputs again; and what its low-precision
linears cast: once a step or every micro-batch, the routed experts or not (below).

Transformer Engine (Megatron-LM, Megatron-Bridge, NeMo, MindSpeed) quantizes before it gathers (per-tensor
FP8 and MXFP8) and gathers a column-parallel linear's saved sequence shard again in backward.
torchtitan (torchao's linears on DTensor TP) gathers FP8 only through torchao's tensorwise float8 TP
styles (0.2.x), bf16 otherwise (0.3.x: rowwise float8, MXFP8), casting after the gather, and keeps the
gathered inputs for the weight gradients (no backward re-gathers). DeepSpeed and yunchang keep the
default, which none of their expressible plans reaches. The sources (torchtitan 0.2.2 73a0e69 and
0.3.0, torchao v0.16.0 3c1065c and v0.18.0 5f2baf9, torch 2.13), file by file and line by line:
docs/cost-model.md, "TP all-gathers by runtime".

Transformer Engine's linears keep their weights' FP8 copies across a step's micro-batches
(is_first_microbatch) and its grouped expert GEMMs run in FP8 too (cost.precision). torchao's,
torchtitan's float8 and MX linears, keep none: torchao v0.16.0 (3c1065c) and v0.18.0 (5f2baf9)
float8/float8_linear.py matmul_with_hp_or_float8_args casts the bf16 weight in every forward
(lines 68-83) and again in backward (125-141), and the MX linear likewise (v0.16.0
prototype/mx_formats/mx_linear.py mx_mm, lines 75 and 117-129). sp-plan's 0.2.x TOML names
recipe_name, which torchtitan refuses beside enable_fsdp_float8_all_gather (v0.2.2 73a0e69
components/quantization/float8.py lines 65-69), so no FSDP hook casts the weight before its
gather: every micro-batch's forward casts it, gradient accumulation's and a pipeline's alike.
Compiled, AOTAutograd's CSE merges a micro-batch's forward and backward casts of one weight (the
same op on the same input, tensorwise taking the forward's settings backward: float8/config.py
lines 255-266; docs/cost-model.md stop 47), but a micro-batch is a new run of the graph, so no
cast carries over to the next (cost.fp8_params.weight_cast_s). torchtitan's float8 and MX linear
converters swap nn.Linear only (v0.2.2 components/quantization/utils.py module_filter_fn, lines
16-17); the routed experts are GroupedExperts' 3-D nn.Parameters run through torch._grouped_mm in
bf16 (models/moe/moe.py lines 113-145), FP8 only under the separate quantize.grouped_mm.float8
converter (float8.py lines 176-239), rowwise scaled (torchao v0.16.0 prototype/moe_training
conversion_utils.py lines 21-53) and refusing pipeline and context parallelism (float8.py lines
192-198), which sp-plan does not emit: its per-tensor plans' experts run bf16 (shared experts,
FeedForward's nn.Linear, convert).

Compiled, the weight casts a micro-batch are torchao's forward cast and a second one in backward
(fp8_weight_cast_bytes), traced with torchao 0.16.0 on torch 2.13's
min_cut_rematerialization_partition (a SwiGLU block with its RMSNorm): the forward saves the bf16
weight (a parameter, free to save: _functorch/config.py lines 51-53), tensorwise its scalar amax,
not the FP8 weight, and the backward casts the bf16 weight again (float8_linear.py lines 125-141,
cast_config_weight_for_grad_input): tensorwise, one cast reading 2 bytes and writing 1 in the
transposed layout, its scale from the saved scalar amax; rowwise (0.3.x; float8/config.py lines
334-350, axiswise weight casts, the backward's along the other axis, axiswise_dim -1) an amax pass
of its own (2) before that cast. With the forward's amax pass (2) and cast (2 + 1): 8 bytes a
weight tensorwise, 10 rowwise, on every chip (no transposed copy rides on the forward's cast).

At tp > 1 the compiled block keeps the forward's tensorwise FP8 weight shard for backward instead
(fp8_weight_cast_bytes_kept): traced as torchtitan v0.2.2 builds it (TP, per-block compile, then
FSDP2's fully_shard on a dp x tp mesh with MixedPrecisionPolicy(bf16, fp32), reshard after forward
on or off; the same with dp 1 and for an MoE layer's plain-style shared experts, compiled with the
block; torch 2.13, torchao 0.16.0, fake process group), the min-cut partition and inductor's
post-grad graphs alike: the backward casts no weight and takes the 7 FP8 shards of a Llama block as
inputs. The FP8 shard reaches _scaled_mm through a copy (aten.clone of the transposed float8 data,
float8_linear.py line 264's matmul) that the backward's GEMM uses, so the partitioner will not
recompute it (_functorch/partitioners.py should_ban_recomputation, "materialized in backward", lines
2229-2233). A micro-batch then casts a weight once, 2 + 3 = 5 bytes, and holds 1 byte a weight from
each layer's forward to its backward (cost.compiled_layers.kept_fp8_weight_bytes). At tp 1 (a plain
tensor, FSDP2's unsharded parameter too) the bf16 weight is saved and cast again, as above.
Recomputed layers keep nothing: torchtitan's checkpoint wrapper marks the block's ops for recompute
(_functorch/partitioners.py must_recompute, line 166), so the backward casts the saved bf16 weight
again, selective (op) recompute with the forward's amax kept (llama3 parallelize.py line 47,
_op_sac_save_list holds aten.max) at 8 bytes, full recompute after a second amax pass: its
recomputed forward repeats the amax pass and cast (2 + 3), the backward's cast merging with it: 10
bytes (fp8_weight_cast_bytes_full). Traced at tp 1 and 2. Rowwise (0.3.x) is left at 10 bytes:
whether its partition keeps a weight's FP8 cast follows which weights it takes as parameters, which
torch 2.13 marks for some DTensor weights only (remap_unwrapped_subclass_arg_indices counts one
plain tensor a DTensor where the joint graph has two placeholders, the local tensor and its spec).

torchao's MX linears cast the bf16 weight twice a micro-batch too, each cast writing one layout
(mxfp8_weight_cast_bytes): forward to 1x32 blocks along K (v0.16.0 prototype/mx_formats/
mx_linear.py lines 75-82; v0.18.0 prototype/moe_training/mxfp8_linear.py lines 131-138, the
MXFP8Linear torchtitan 0.3.0 runs), backward to blocks along N for grad_input (v0.16.0 lines
116-135, v0.18.0 lines 179-201). The kernels: 0.2.2's recipe mxfp8_cublas casts dim 0 by torch
ops, priced as one fused pass under compile (v0.16.0 mx_formats/config.py lines 212-220; their
eager passes at 0.2.2's tp > 1 are not modelled), dim 1 by the Triton kernel torchtitan picks
(v0.2.2 job_config.py lines 767-768, components/quantization/mx.py lines 62-64); v0.18.0's
MXFP8Linear a Triton dim-0 and a CUDA dim-1 kernel (mxfp8_linear.py lines 65-66). Each reads the
bf16 weight (2) and writes FP8 (1)
with an E8M0 scale per 32 (1/32): 2 x (3 + 1/32) = 6.0625 bytes a weight, where Transformer
Engine's one cast writing both layouts (cost.precision, 4.0625) had been counted. The two casts
write different layouts, so no CSE merges them; the scale swizzle before each cuBLAS GEMM
(mx_tensor.py to_blocked, 2/32 bytes) is left out, as it is for TE.

Amax all-reduces (cost.amax_reduce, reduces_sharded_amaxes): Transformer Engine reduces only the
amaxes of the tensors it gathers quantized; torchao casts DTensors, and every cast of a TP-sharded
one (weights, row-parallel inputs, output gradients) reduces its amax over the TP mesh: a scalar
tensorwise, a vector along the sharded dimension rowwise (reduces_axiswise_amaxes,
cost.axiswise_amax).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.precision import BF16, FP8_ELEM_BYTES, MX_BLOCK
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE
from sp_planner.specs.base import FrozenModel


class TpGathers(FrozenModel):
    """The recipes whose TP all-gathers move low-precision data (module docstring), bf16 otherwise,
    and what the linears keep of the gathered inputs for their weight gradients."""

    fp8: bool  # per-tensor FP8 (delayed or tensorwise current scaling): 1 byte an element
    mxfp8: bool  # MXFP8: data and E8M0 scales by usage (cost.gathered_transpose)
    # True: the linears save their sequence shard (quantized under FP8) and backward gathers it again
    # (Megatron-Core / Transformer Engine); False: autograd keeps the gathered input as the linear
    # received it, whole, and a saved input is quantized only where the framework gathers it so
    # (torchtitan's DTensor TP with torchao; module docstring).
    regathers_saved_inputs: bool = True
    # True: the linears cast their weights once a step (TE's is_first_microbatch); False: every
    # micro-batch (torchao's; module docstring, cost.fp8_params.weight_cast_s).
    caches_weight_casts: bool = True
    # True: the routed experts' GEMMs run in the plan's low precision (TE's GroupedLinear); False:
    # bf16, the converter swapping nn.Linear only (torchtitan; module docstring): their GEMMs at
    # bf16's rate and shape ratios (cost.gemm_work), their saved inputs bf16, and the MoE block's
    # input gathered bf16 by torchtitan's float8-free MoE TP plan (cost.saved_inputs).
    low_precision_experts: bool = True
    # True: an MoE layer's shared experts gather their own input and output gradient in the recipe's
    # low precision (TE linears in Megatron's MoE layer); False: the MoE block's input is gathered
    # by a plain bf16 style and the shared experts take it replicated (torchtitan; module
    # docstring), so on an MoE layer only the attention's pair is gathered low
    # (cost.gathered_transpose.fp8_share).
    fp8_shared_expert_gathers: bool = True
    # Bytes per per-tensor-FP8 GEMM weight a micro-batch of the compiled linears' weight casts,
    # forward and backward together (module docstring); None: the recipe's Transformer Engine cast
    # (cost.fp8_params.weight_cast_bytes_per_param).
    fp8_weight_cast_bytes: float | None = None
    # The same for an MXFP8 GEMM weight (module docstring); None: Transformer Engine's one cast.
    mxfp8_weight_cast_bytes: float | None = None
    # Bytes per per-tensor-FP8 GEMM weight a micro-batch where the compiled block keeps the forward's
    # FP8 shard for backward (tp > 1, nothing recomputed: module docstring), which then holds 1 byte
    # a weight until the layer's backward; None: never kept.
    fp8_weight_cast_bytes_kept: float | None = None
    # The same under full recompute (the recomputed forward casts again); None: fp8_weight_cast_bytes.
    fp8_weight_cast_bytes_full: float | None = None
    # True: MLA's attention gathers its input whole (Shard(1) -> Replicate) before the down
    # projections, Replicate weights, so each TP rank runs every token through them (torchtitan
    # v0.2.2 deepseek_v3/infra/parallelize.py lines 259-273, 292; b5bcd76c deepseek_v3/sharding.py
    # lines 96-133; cost.gemm_work); False: its s/tp tokens (Megatron's sequence parallelism).
    whole_mla_down_projections: bool = False
    # True: every tensor a low-precision linear casts while TP-sharded reduces its amax over the TP
    # group, the weights too (torchao on DTensors); False: only those gathered quantized (TE).
    # cost.amax_reduce prices them where per-tensor FP8 is gathered in FP8 (`fp8`).
    reduces_sharded_amaxes: bool = False
    # True: per-tensor-scaled FP8 runs torchao's rowwise recipe on DTensors, whose casts along a
    # TP-sharded dimension all-reduce a vector of amaxes (cost.axiswise_amax).
    reduces_axiswise_amaxes: bool = False


# Compiled torchao float8, per weight a micro-batch, traced (module docstring): the forward's amax
# pass (read bf16) and cast (read bf16, write FP8), and the backward's cast again from the saved
# bf16 weight (read bf16, write FP8 in the transposed layout): tensorwise with the forward's saved
# scalar amax, rowwise after a second amax pass along the other axis.
TORCHAO_TENSORWISE_WEIGHT_CAST_BYTES = (BF16_BYTES + (BF16_BYTES + FP8_ELEM_BYTES)
                                        + (BF16_BYTES + FP8_ELEM_BYTES))
TORCHAO_ROWWISE_WEIGHT_CAST_BYTES = 2 * (BF16_BYTES + (BF16_BYTES + FP8_ELEM_BYTES))
# tp > 1, nothing recomputed: the forward's amax pass and cast alone, its FP8 shard kept for backward;
# full recompute: the recomputed forward's amax pass and cast besides (module docstring, traced).
TORCHAO_TENSORWISE_KEPT_WEIGHT_CAST_BYTES = BF16_BYTES + (BF16_BYTES + FP8_ELEM_BYTES)
TORCHAO_TENSORWISE_FULL_RECOMPUTE_WEIGHT_CAST_BYTES = 2 * TORCHAO_TENSORWISE_KEPT_WEIGHT_CAST_BYTES
# torchao's MX linears, per weight a micro-batch (module docstring): a forward cast along K and a
# backward cast along N, each reading bf16 and writing FP8 with an E8M0 scale per MX_BLOCK.
TORCHAO_MX_WEIGHT_CAST_BYTES = 2 * (BF16_BYTES + FP8_ELEM_BYTES + 1 / MX_BLOCK)

TE_TP_GATHERS = TpGathers(fp8=True, mxfp8=True)
# torchtitan 0.2.x and earlier (tensorwise float8 TP styles); torchao's linears (module docstring)
TORCHAO_TENSORWISE_TP_GATHERS = TpGathers(fp8=True, mxfp8=False, regathers_saved_inputs=False,
                                          caches_weight_casts=False, low_precision_experts=False,
                                          fp8_shared_expert_gathers=False,
                                          fp8_weight_cast_bytes=TORCHAO_TENSORWISE_WEIGHT_CAST_BYTES,
                                          fp8_weight_cast_bytes_kept=TORCHAO_TENSORWISE_KEPT_WEIGHT_CAST_BYTES,
                                          fp8_weight_cast_bytes_full=TORCHAO_TENSORWISE_FULL_RECOMPUTE_WEIGHT_CAST_BYTES,
                                          mxfp8_weight_cast_bytes=TORCHAO_MX_WEIGHT_CAST_BYTES,
                                          reduces_sharded_amaxes=True, whole_mla_down_projections=True)
# torchtitan 0.3.x: rowwise float8, MXFP8; torchao's linears (its gathers are bf16 throughout, so
# fp8_shared_expert_gathers is moot there)
BF16_TP_GATHERS = TpGathers(fp8=False, mxfp8=False, regathers_saved_inputs=False, caches_weight_casts=False,
                            low_precision_experts=False, fp8_shared_expert_gathers=False,
                            fp8_weight_cast_bytes=TORCHAO_ROWWISE_WEIGHT_CAST_BYTES,
                            mxfp8_weight_cast_bytes=TORCHAO_MX_WEIGHT_CAST_BYTES, reduces_sharded_amaxes=True,
                            reduces_axiswise_amaxes=True, whole_mla_down_projections=True)


def expert_precision(precision, gathers: TpGathers):
    """The precision codes (plan.PRECISIONS) the routed experts' GEMMs run in: the plan's, or bf16
    where the framework's converter leaves them (gathers.low_precision_experts False)."""
    precision = np.asarray(precision)
    return precision if gathers.low_precision_experts else np.full(precision.shape, BF16)


def keeps_fp8_weight_shards(gathers: TpGathers, *, tp, recompute):
    """Whether each candidate's compiled block keeps its forward's per-tensor FP8 weight shards for
    backward (tp > 1 with nothing recomputed, where the linears do: module docstring); `recompute`:
    plan.RECOMPUTE codes."""
    kept = (np.asarray(tp) > 1) & (np.asarray(recompute) == RECOMPUTE_NONE)
    return kept & (gathers.fp8_weight_cast_bytes_kept is not None)


def fp8_weight_cast_bytes(gathers: TpGathers, *, tp, recompute):
    """Bytes per per-tensor-FP8 GEMM weight a micro-batch of the linears' weight casts by candidate
    (module docstring); None where the framework casts as Transformer Engine does."""
    if gathers.fp8_weight_cast_bytes is None:
        return None
    per_param = np.broadcast_to(np.float64(gathers.fp8_weight_cast_bytes), np.broadcast(tp, recompute).shape)
    if gathers.fp8_weight_cast_bytes_kept is not None:
        per_param = np.where(keeps_fp8_weight_shards(gathers, tp=tp, recompute=recompute),
                             gathers.fp8_weight_cast_bytes_kept, per_param)
    if gathers.fp8_weight_cast_bytes_full is not None:
        per_param = np.where(np.asarray(recompute) == RECOMPUTE_FULL, gathers.fp8_weight_cast_bytes_full, per_param)
    return per_param
