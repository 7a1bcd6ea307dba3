"""Current scaling's amax all-reduces over the tensor-parallel group (vectorized).

Under FP8 current scaling (Megatron --fp8-recipe tensorwise, TE Float8CurrentScalingQuantizer)
with tensor and sequence parallelism, the ranks of a TP group must quantize a tensor they gather
with one scale. Transformer Engine therefore reduces the tensor's amax over the TP group before
computing the scale: TE v2.9 (70f53666) pytorch/module/linear.py
_customize_quantizers_float8_current_scaling (the input quantizer of a column-parallel module
under sequence parallelism, forward; the output-gradient quantizer of a row-parallel one,
backward; layernorm_linear.py the same for its input), and csrc/quantizer.cpp
Float8CurrentScalingQuantizer::quantize_impl: nvte_compute_amax, then
`amax_reduction_group->allreduce(...)->wait()`, then the scale and the cast. The wait makes the
compute stream wait for the one-float all-reduce, so each reduction adds its latency to the
layer's critical path. TE's GroupedLinear (the experts) reduces nothing; delayed scaling reduces
its amax history once a step (negligible); MXFP8 and block scaling have local block scales.

torchtitan (cost.tp_gathers): torchao's tensorwise float8 casts DTensors, and the amax of a
TP-sharded one, torch.max(torch.abs(x)) (v0.16.0 float8_utils.py tensor_to_amax line 65), is a
Partial(max) that DTensor all-reduces over the TP mesh before the scale multiplies the shard (one
8-byte float64 MAX each): not only the gathered inputs (float8_tensor_parallel.py lines 59-65,
232-237) but every Float8Linear's weight shard (float8_linear.py lines 68-83; Float8ColwiseParallel
Shard(0), Float8RowwiseParallel Shard(1)), each row-parallel input (Shard(-1), lines 118-130) and
every output gradient (NoopFwToFloat8BwDynamic, lines 82-86 and 145-149). Traced (torch 2.13
inductor post-grad graphs and the min-cut partition alike, torchao 0.16.0, fake process group, TP 2,
a Llama block with torchtitan v0.2.2's plan, models/llama3/infra/parallelize.py lines 192-248), a
layer's micro-batch runs 11 forward and 7 backward: per TP-sharded block of n linears (attention wq,
wk, wv, wo; MLP w1, w2, w3) its n weights, its gathered input and its row-parallel input forward,
its n output gradients backward. The backward's weight casts reduce nothing: they repeat the
forward's ops on the same weight and merge with them (AOTAutograd's CSE, _functorch/config.py cse),
and the partitioner recomputes no collective (partitioners.py force_save_collectives). An MoE
layer's shared experts (plain ColwiseParallel / RowwiseParallel on a replicated input, v0.2.2
models/llama4/infra/parallelize.py lines 538-549) trace to the same n + 2 and n: 3 weights and the
w2 input forward, w2's input cast again for its weight gradient (moved to the forward by the
partitioner), 3 output gradients backward; the router (NoParallel, replicated) and the bf16 routed
experts none. FSDP2 adds none: sp-plan's TOML names recipe_name, which refuses
enable_fsdp_float8_all_gather (v0.2.2 components/quantization/float8.py lines 65-78: no
precompute_float8_dynamic_scale_for_fsdp either), so the weights' casts see FSDP2's unsharded
parameter, a DTensor over the TP mesh only, a plain tensor without TP (torch 2.13
distributed/fsdp/_fully_shard/_fsdp_param.py lines 672-676). Multi-latent attention is left at
Transformer Engine's counts: torchtitan 0.2.2's deepseek_v3 refuses tensorwise float8 with TP
(models/deepseek_v3/infra/parallelize.py lines 75-87; flags.torchtitan_v02.v02_failures), so no
plan sp-plan emits reaches it. Where torchtitan gathers bf16 (0.3.x rowwise float8, MXFP8) each
rank casts the whole gathered tensor (cost.gathered_transpose.cast_after_gather), and rowwise's
axiswise amaxes of TP-sharded casts, vectors of tokens or of the hidden size, are all-reduced at
their size (cost.axiswise_amax).

Per layer and micro-batch with TP > 1 (the cost model always pairs TP with sequence parallelism):
forward, the column-parallel inputs: QKV and FC1 on a dense layer (TELayerNormColumnParallelLinear
each), QKV alone on an MoE layer, plus the shared experts' FC1 where the model has them; backward,
the row-parallel output gradients: the attention projection and FC2 (the shared experts' FC2 on an
MoE layer). cost.gemm_work adds them to the layer's GEMM work, forward and backward, which the
analytic step and the simulator both take, so a recomputed forward reduces again.
Multi-latent attention (DeepSeek) is counted like QKV, one input each way: how its up-projections
(column-parallel, on the latents) gather under sequence parallelism was not read.

Latency of one tiny all-reduce: NCCL's own tuner model for the ring with the LL protocol, the one
it picks for a few bytes (cost.nccl_protocols, NCCL 2.30.7 src/graph/tuning.cc; reference
hardware_and_models.md B.6): base 6.6 us plus 2(n-1) hops (cost.links.ring_steps: the k-1 between
the group's k nodes cross the network), 0.6 us each over NVLink (1 us, NCCL's network post
overhead, where the group spans nodes) and 2.7 us over the network.
8 GPUs in one node: 15.0 us; measured 12.5 us for a 4-16 B all-reduce on 8 x H20 (the same
Hopper NVSwitch node; deepseek-ai/DeepEP#303), so the tuner's figure is the upper of the two.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.links import NONE, ring_steps
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.nccl_protocols import LL, ring_protocol_latencies_s
from sp_planner.distinct import per_distinct
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.plan import PRECISIONS
from sp_planner.specs.model import ModelSpec

FP8 = PRECISIONS.index("fp8")

# Amax reductions per GEMM pair each way (module docstring): a pair's column-parallel input forward
# (QKV, FC1) and its row-parallel output gradient backward (projection, FC2). cost.host counts them
# as host ops from this too.
REDUCTIONS_PER_PAIR = 1
# Per layer, (forward, backward): attention and MLP pairs; the attention's alone on an MoE layer,
# with the shared experts' pair where the model has them.
DENSE_REDUCTIONS = (2 * REDUCTIONS_PER_PAIR, 2 * REDUCTIONS_PER_PAIR)
MOE_REDUCTIONS = (REDUCTIONS_PER_PAIR, REDUCTIONS_PER_PAIR)
SHARED_EXPERT_REDUCTIONS = (REDUCTIONS_PER_PAIR, REDUCTIONS_PER_PAIR)
# torchao on DTensor TP (module docstring, traced): per TP-sharded block, forward, its gathered
# input and its row-parallel input besides its weights; torchtitan's Attention keeps wq, wk, wv and
# wo apart (v0.2.2 models/llama3/model/model.py lines 203-210).
TORCHAO_BLOCK_ACTIVATION_REDUCTIONS = 2
TORCHTITAN_ATTENTION_LINEARS = 4


def tiny_all_reduce_s(size, stride, gpus_per_node: int):
    """One all-reduce of a few bytes over `size` ranks `stride` apart (NCCL ring LL, module
    docstring): 0 for a group of one."""
    link, intra_steps, inter_steps = ring_steps("all_reduce", size, stride, gpus_per_node)
    return np.where(link == NONE, 0.0, ring_protocol_latencies_s("nvlink", intra_steps, inter_steps)[LL])


def amax_reductions_per_layer(model: ModelSpec):
    """(forward, backward) amax all-reduces of the model's average layer (module docstring)."""
    share = moe_layer_fraction(model) if model.moe is not None else 0.0
    shared = model.moe is not None and model.moe.num_shared_experts > 0
    moe = tuple(a + (b if shared else 0) for a, b in zip(MOE_REDUCTIONS, SHARED_EXPERT_REDUCTIONS))
    return tuple((1 - share) * d + share * e for d, e in zip(DENSE_REDUCTIONS, moe))


def torchao_reductions_per_layer(model: ModelSpec):
    """(forward, backward) amax all-reduces of the model's average layer where every TP-sharded
    cast reduces (TpGathers.reduces_sharded_amaxes; module docstring): per TP-sharded block of n
    linears n + 2 forward and n backward; the shared experts' block on an MoE layer."""
    if model.mla is not None:
        return amax_reductions_per_layer(model)
    attention = (TORCHTITAN_ATTENTION_LINEARS + TORCHAO_BLOCK_ACTIVATION_REDUCTIONS, TORCHTITAN_ATTENTION_LINEARS)
    mlp = (model.num_mlp_matrices + TORCHAO_BLOCK_ACTIVATION_REDUCTIONS, model.num_mlp_matrices)
    share = moe_layer_fraction(model) if model.moe is not None else 0.0
    shared = model.moe is not None and model.moe.num_shared_experts > 0
    return tuple(a + (1 - share) * m + share * (m if shared else 0) for a, m in zip(attention, mlp))


def layer_reductions(model: ModelSpec, gathers: TpGathers):
    """(forward, backward) amax all-reduces of the average layer under the framework's linears."""
    return torchao_reductions_per_layer(model) if gathers.reduces_sharded_amaxes else amax_reductions_per_layer(model)


def amax_reduction_s(model: ModelSpec, *, tp, precision, fp8_current, gpus_per_node: int,
                     gathers: TpGathers = TE_TP_GATHERS):
    """(forward, backward) seconds per layer and micro-batch the TP group's amax all-reduces add
    (0 unless FP8 current scaling at tp > 1, where the framework gathers FP8: `gathers`,
    cost.tp_gathers, whose linears also say which casts reduce); the TP group is the fastest axis
    (stride 1)."""
    on = (np.asarray(precision) == FP8) & np.asarray(fp8_current, dtype=bool) & gathers.fp8
    # Once per distinct TP degree (a handful among ~10^5 candidates), spread back.
    latency = per_distinct(lambda tp_: tiny_all_reduce_s(tp_, 1, gpus_per_node), np.asarray(tp))
    one = np.where(on, latency, 0.0)
    fwd, bwd = layer_reductions(model, gathers)
    return fwd * one, bwd * one
