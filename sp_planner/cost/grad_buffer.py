"""Memory-bound passes a framework's data-parallel wrapper makes over gradients and gathered
parameters each step, besides the GEMMs, the collectives and the optimizer's own traffic
(cost.states), vectorized over candidates. Timed on the GPU whichever stream runs them: a
memory-bound kernel beside a GEMM takes the SMs it runs on.

Megatron-Core DDP and its distributed optimizer (ZeRO-0/1; NVIDIA/Megatron-LM d98e8a6,
megatron/core/distributed/param_and_grad_buffer.py) keep every gradient of the rank's stage in one
unsharded buffer of the gradient width (fp32 by default, cost.states) and, each step:
- zero-fill it for the next step (`_ParamAndGradBuffer.reset`, `grad_data.zero_()`): one write;
- take each bucket's norm before its collective when NaN checking is on (`check_grads`,
  `grad_data.norm(p=2)`; Megatron-LM's --check-for-nan-in-loss-and-grad, on by default,
  training.py passes it as `check_for_nan_in_grad`): one read;
- scale each bucket by 1/(dp x cp) in place before the collective unless the collective averages
  (`start_grad_sync`: `grad_data *= gradient_scaling_factor` where the factor is not 1;
  --ddp-average-in-collective, off by default, uses ReduceOp.AVG instead): one read, one write.
Megatron-LM's buffer made the same passes at 2196398 (2024-04), the scaling then unconditional.
The distributed optimizer gathers parameters straight into the buffer the layers read (no copy).

Megatron-FSDP (ZeRO-2/3; megatron/core/distributed/fsdp/src/megatron_fsdp/param_and_grad_buffer.py
at d98e8a6) keeps only the rank's shard: the weight-gradient GEMMs overwrite the layer's unsharded
bucket (megatron_fsdp.py sets `overwrite_main_grad` under optim_grads and optim_grads_params, so
nothing zeroes it), the 1/dp factor rides in NCCL's premul-sum (`gradient_reduce_preprocessing`,
`gradient_reduce_div_fusion` on by default) except for bf16 gradients, which it scales in place
(`grad_data.mul_`: a read and a write of the unsharded bucket every micro-batch), every micro-batch
adds the reduced shard into the kept one (`local_grad += reduced_grad`: two reads and a write of
the shard), and `zero_grad` zero-fills the shard once a step; its per-layer reduction takes no NaN
norm (only its unsharded `reduce_scatter_gradients`/`all_reduce_gradients` do). It gathers into
the bucket the layers read. Megatron's ZeRO-3 without reshard after forward is torch FSDP2
(flags/megatron_fsdp.py): FSDP2's passes below.

torch FSDP2 (`fully_shard`, torch 2.5-2.7 torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py,
bf16 parameters, reduce dtype the gradient width; torchtitan): every micro-batch copies each
unit's bf16 gradients into the reduce-scatter input, cast to the reduce dtype
(`foreach_reduce_scatter_copy_in`: read 2, write the width), averages inside NCCL (ReduceOp.AVG:
`_get_gradient_divide_factors` returns none for bf16/fp32), and from the second micro-batch adds
the reduced shard into the kept one (`grad._local_tensor += new_sharded_grad`); each parameter
all-gather casts the fp32 shard to bf16 (read 4, write 2), copies it into the gather input
(2 + 2) and copies the output out into the unit's parameters (`split_with_sizes_copy`, 2 + 2 per
unsharded element).

torch FSDP1 (torch 2.1 torch/distributed/fsdp/_runtime_utils.py and flat_param.py, Composer's
mixed precision DEFAULT: bf16 parameters, fp32 reduce; llm-foundry's MPT runs): every micro-batch
autograd concatenates the parameters' bf16 gradients into the unit's flat gradient (the backward
of the flat parameter's split: read 2, write 2), `_post_backward_hook` casts it to the reduce
dtype (read 2, write the width) and pre-divides it in place (`_div_if_needed`, factor the
smallest power of two >= sqrt(N), above 1 from N = 2), and after the reduce-scatter post-divides
the shard (factor N / pre, above 1 from N = 4) and, from the second micro-batch, adds it into the
kept shard (`_accumulate_sharded_grad`); each gather casts the fp32 shard to bf16 (4 + 2) and
gathers into the flat parameter the views read (no copy-out).

Megatron's fp16 optimizer (Float16OptimizerWithFloat16Params, megatron/optimizer/optimizer.py at
6985e58, 2021; the same in 2022-2023) steps through a grad scaler whenever the run is fp16
(optimizer/__init__.py: ConstantGradScaler with --loss-scale, DynamicGradScaler without): it
copies fp16 main gradients to fp32 ones (`main_grad.float()`: read 2, write 4; none when they are
fp32 already) and unscales them in place while checking for inf/nan
(`torch._amp_foreach_non_finite_check_and_unscale_`: read 4, write 4), over the optimizer's
parameters (the rank's, or its shard under the distributed optimizer). `fp16_grad_scaler` says so
(corpus rows in fp16; sp-plan plans run bf16, which has no scaler).

DeepSpeed (deepspeedai/DeepSpeed edaa722, v0.19; bf16 with no data_types, so gradients are
reduced in bf16; overlap_comm; gradient_clipping's default 1.0, whose norm and unscale multiply
run whatever the norm): `zero_grad` sets gradients to None (no fill). Stage 1/2
(zero/stage_1_and_2.py): each reduction copies the bf16 gradients into the contiguous IPG bucket
(line 1231: 2 + 2), divides it by the group in place (1436: 2 + 2) and concatenates the rank
slices (1841: 2 + 2), then copies the reduced own slices back (1310: 4) and into the partition
(1686, `copy_grads_in_partition`: 4) and from the second micro-batch adds (944: 6); stage 2 reduces
every micro-batch, stage 1 only at the accumulation boundary, autograd accumulating the other
micro-batches' gradients (6 each). Each step, over the partition: the bf16 overflow check
(`check_grad_overflow` on by default, 2487-2490: 36), the norm in fp64 (2089: 18), flatten and
cast to fp32 (2357-2361: 4 + 6), the unscale multiply (2449: 8) and the fp32 read of the bf16
write-back (2386: 4). Stage 3 (zero/stage3.py, runtime/comm/coalesced_collectives.py): every
micro-batch the IPG copy (1559: 4), the rank-slice concatenation and division (199-201: 4 + 4),
the partition copy (1905: 4) or add (1910: 6); each step the norm, flatten, cast, unscale and
write-back read (40, no bf16 overflow check); each gather concatenates the shards in (
partition_parameters.py 1331: 4 a shard element) and copies the gathered parameters out (784: 4).
Stage 0 (FP16_Optimizer under bf16, engine.py 2019-2068): autograd accumulation (6 from the
second micro-batch) and, each step, the engine's all-reduce concatenation, 1/N multiply and
copy-back (engine.py 3659-3689: 12) and the optimizer's per-parameter overflow check (runtime/
utils.py 321: 10), fp32 cast and concatenation (6 + 8), norm (4), unscale (8) and write-back
read (4): 52.

Apex's DistributedFusedAdam as NeMo 1.x runs it (NVIDIA/apex f9f19d5c, 2024-07, the same at the
810ffae3 and f058162b pins; NeMo r2.0.0rc1 and v1.23.0; contiguous grad and param buffers,
overlapped syncs, gradient accumulation fusion): the weight-gradient GEMMs accumulate into views
of the contiguous buffer, so the post-backward hook copies nothing for them
(distributed_fused_adam.py line 1607); the buffer is zeroed once a step (line 1504), averaged
inside the reduce-scatter (ReduceOp.AVG, line 1840), its shard aliased, not copied (line 1917),
and read once for the gradient norm (line 2172; NeMo's gradient_clip_val 1.0 scales only Adam's
scalar); the parameter all-gather runs in place (its copy-out skips equal pointers, line 181).
Per step g P + g S. Not counted: the norm weights' gradients added into the buffer each
micro-batch (10 B each); the embedding's are cost.embedding_grad's.

torch DDP is not counted (wrapper "uncounted").
"""

from __future__ import annotations

from functools import reduce
from typing import Literal

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.cost.fsdp import expert_shard_size, param_gathers_per_step, reshard_after_forward, shard_group_size
from sp_planner.cost.stage_params import stage_moe_counts, stage_params
from sp_planner.cost.states import TrainingStates, optimizer_bytes_per_param, optimizer_step_bytes_per_param
from sp_planner.layout import CP_AXES, group_size
from sp_planner.pipeline import StageLayers
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec

# "uncounted": a wrapper whose own passes are not modelled (torch DDP), under an optimizer whose
# fp16 passes still are.
GradWrapper = Literal["megatron", "torch-fsdp2", "torch-fsdp1", "deepspeed", "apex", "uncounted"]


class GradSync(FrozenModel):
    """A framework's data-parallel wrapper and the Megatron settings that change its passes."""

    wrapper: GradWrapper = "megatron"
    check_for_nan_in_grad: bool = True  # Megatron-LM --check-for-nan-in-loss-and-grad (default on)
    average_in_collective: bool = False  # Megatron-LM --ddp-average-in-collective (default off)
    fp16_grad_scaler: bool = False  # Megatron's fp16 optimizer: copy to fp32 and unscale (module docstring)


MEGATRON_GRAD_SYNC = GradSync()
TORCH_FSDP2_GRAD_SYNC = GradSync(wrapper="torch-fsdp2")
TORCH_FSDP1_GRAD_SYNC = GradSync(wrapper="torch-fsdp1")
DEEPSPEED_GRAD_SYNC = GradSync(wrapper="deepspeed")


def _megatron_ddp(sync: GradSync, g: int, params, scaled):
    return g * params * (1 + int(sync.check_for_nan_in_grad)) + (0 if sync.average_in_collective else 2 * g) * scaled


def _megatron_fsdp(sync: GradSync, g: int, shard, scaled, m):
    in_place = 2 * g if g == BF16_BYTES and not sync.average_in_collective else 0  # else NCCL's premul-sum
    return g * shard * (1 + 3 * m) + in_place * scaled * m


def _fsdp2(g: int, params, shard, m, gathers):
    return ((BF16_BYTES + g) * params * m + 3 * g * shard * (m - 1)
            + gathers * ((FP32_BYTES + BF16_BYTES + 2 * BF16_BYTES) * shard + 2 * BF16_BYTES * params))


def _fsdp1(g: int, params, shard, scaled, group, m, gathers):
    cast = BF16_BYTES + g if g != BF16_BYTES else 0  # bf16 gradients to the reduce dtype
    post_divide = 2 * g * shard * (np.asarray(group) >= 4)
    return ((2 * BF16_BYTES + cast) * params * m + 2 * g * scaled * m + post_divide * m + 3 * g * shard * (m - 1)
            + gathers * (FP32_BYTES + BF16_BYTES) * shard)


def _deepspeed(zero, params, shard, m, gathers):
    """Bytes per step of DeepSpeed's bf16 ZeRO stages (module docstring), by stage."""
    autograd = 6 * params * (m - 1)  # gradients kept across micro-batches (stages 0 and 1)
    reduce_in = 12 * params  # IPG copy, division, rank-slice concatenation
    stage0 = autograd + 52 * params
    stage1 = autograd + reduce_in + 8 * shard + 76 * shard
    stage2 = reduce_in * m + 8 * shard + 14 * shard * (m - 1) + 76 * shard
    stage3 = reduce_in * m + 4 * shard + 6 * shard * (m - 1) + 40 * shard + gathers * (4 * params + 4 * shard)
    return np.select([zero == 0, zero == 1, zero == 2], [stage0, stage1, stage2], stage3)


def grad_buffer_bytes(sync: GradSync, *, grad_bytes: int, zero, sharded_from: int, reshard, params, experts,
                      shard, micro_batches, dp_cp, edp, gathers):
    """HBM bytes one rank moves per step in its wrapper's passes (module docstring). `params`: the
    stage's parameters on the rank (`experts` of them routed experts, which reduce over `edp`, the
    rest over `dp_cp`); `shard`: the rank's share under ZeRO; `sharded_from`: the ZeRO stage from
    which the wrapper shards gradients (TrainingStates.grad_shard_stage); `gathers`: parameter
    all-gathers per step (cost.comm's count); `reshard`: ZeRO-3 frees parameters after forward."""
    zero, m, g = np.asarray(zero), np.asarray(micro_batches), grad_bytes
    scaled = (params - experts) * (np.asarray(dp_cp) > 1) + experts * (np.asarray(edp) > 1)
    sharded = zero >= sharded_from
    if sync.wrapper == "torch-fsdp1":
        wrapper = np.where(sharded, _fsdp1(g, params, shard, scaled, dp_cp, m, gathers), 0.0)
    elif sync.wrapper == "torch-fsdp2":
        wrapper = np.where(sharded, _fsdp2(g, params, shard, m, gathers), 0.0)
    elif sync.wrapper == "deepspeed":
        wrapper = _deepspeed(zero, params, shard, m, gathers)
    elif sync.wrapper == "apex":
        wrapper = g * (params + shard) * np.ones(np.shape(zero))  # zero-fill and the norm's read
    elif sync.wrapper == "uncounted":
        wrapper = np.zeros(np.shape(zero))
    else:
        torch_fsdp2 = (zero == 3) & ~np.asarray(reshard, dtype=bool)  # Megatron's --use-torch-fsdp2
        wrapper = np.where(sharded, np.where(torch_fsdp2, _fsdp2(g, params, shard, m, gathers),
                                             _megatron_fsdp(sync, g, shard, scaled, m)),
                           _megatron_ddp(sync, g, params, scaled))
    if not sync.fp16_grad_scaler:
        return wrapper
    main_grads = np.where(zero >= 1, shard, params)  # the optimizer's parameters
    copy = BF16_BYTES + FP32_BYTES if g == BF16_BYTES else 0  # fp16 main gradients (2 B, as bf16) to fp32
    return wrapper + (copy + 2 * FP32_BYTES) * main_grads


def optimizer_step_bytes(states: TrainingStates, sync: GradSync | None, c, *, params, experts, micro_batches, edp):
    """HBM bytes of the step's optimizer column for candidates `c` (or one ParallelPlan): Adam over
    the rank's shard (TrainingStates.optimizer_step_bytes) and, unless `sync` is None, the
    wrapper's passes above; `params` the rank's, `experts` its routed-expert share, `edp` the
    expert-data-parallel group. The analytic model and the simulator both call this."""
    zero = np.asarray(c.zero)
    # ZeRO shards the routed experts over edp / dp_replicate and the rest over dp_shard x cp
    # (cost.moe, cost.fsdp.expert_shard_size); `edp` is the whole group, over which they reduce.
    eshard = expert_shard_size(c)
    shard = (params - experts) / np.where(zero >= 1, shard_group_size(c), 1) + experts / np.where(zero >= 1, eshard, 1)
    # Adam's moments in bf16 where the plan says so (cost.states.optimizer_bytes_per_param).
    held = optimizer_bytes_per_param(states, c.adam_moments_bf16, c.master_as_remainder)
    adam = optimizer_step_bytes_per_param(states, held) * shard
    if sync is None:
        return adam
    return adam + grad_buffer_bytes(
        sync, grad_bytes=states.grad_bytes, zero=c.zero, sharded_from=states.grad_shard_stage,
        reshard=reshard_after_forward(c), params=params, experts=experts, shard=shard, micro_batches=micro_batches,
        dp_cp=c.dp * group_size(c, CP_AXES), edp=edp, gathers=param_gathers_per_step(c, micro_batches))


def stage_step_bytes(model: ModelSpec, states: TrainingStates, sync: GradSync | None, c, *, stages: StageLayers,
                     micro_batches, edp, seq_len: int):
    """(first, middle, last) stage's optimizer_step_bytes: each stage updates its own parameters
    (its layers of the split, the embedding on the first, the output layer and final norm on the
    last; a single stage holds all of them, given as the first), its MoE layers those Megatron
    places on it (cost.stage_params; `seq_len`: the workload's). The middle's is 0 where pp <= 2,
    the last's where pp == 1."""
    pp = np.asarray(c.pp)
    own = stage_params(model, c.tp, c.pp, c.ep, c.etp, stages, stage_moe_counts(model, seq_len, c, stages))
    first, middle, last = (optimizer_step_bytes(states, sync, c, params=params, micro_batches=micro_batches, edp=edp,
                                                experts=experts) for params, experts in zip(own.params, own.experts))
    return first, np.where(pp > 2, middle, 0.0), np.where(pp > 1, last, 0.0)


def slowest_stage_step_bytes(model: ModelSpec, states: TrainingStates, sync: GradSync | None, c, *, stages: StageLayers,
                             micro_batches, edp, seq_len: int):
    """The largest of stage_step_bytes (the one stage's without a pipeline). Megatron-Core syncs
    every stage of the model-parallel group (tp x pp; parallel_state.py:1155 _MODEL_PARALLEL_GROUP)
    on both sides of its update (Megatron-LM d98e8a6): before it, the gradient norm's all-reduce
    (training.py:3165 optimizer.step -> optimizer.py:374-389 clip_grad_norm -> clip_grads.py:
    132-134 get_grad_norm_fp32), so every stage starts its own update once the last one's
    gradients are synced (cost.pipeline_tails); after it, train_step's all-reduces of
    update_successful (MIN) and grad_norm (MAX) over the same group (training.py:3198 and 3201),
    each read on the host (common_utils.py:286-291 and 309-310, `.item()`), so no stage starts
    the next step before the largest update is done: charged whole, the next step's pipeline fill
    hides none of it. Since core_v0.11.0 (1468ab01c0, 2024-12); MindSpeed runs core_v0.12.1."""
    return reduce(np.maximum, stage_step_bytes(model, states, sync, c, stages=stages, micro_batches=micro_batches,
                                               edp=edp, seq_len=seq_len))
