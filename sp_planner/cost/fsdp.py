"""FSDP / HSDP on the data-parallel axis: which ranks shard the model states, which replicate them,
and how often ZeRO-3 gathers the parameters (vectorized over candidates or one plan).

The ZeRO group is Megatron's dp x cp group (layout.DP_CP_AXES). HSDP splits dp into
dp_replicate x dp_shard with the replicas outermost (torchtitan's mesh
("dp_replicate", "fsdp" = dp_shard x cp, "tp"), parallel_dims.py; PyTorch HYBRID_SHARD), so one
shard group is dp_shard x cp adjacent ranks at tp's stride and one replicate group strides over
whole shard groups. Gradients are reduce-scattered inside the shard group and the shard then
all-reduced across replicas (FSDP2 HSDP: reduce-scatter + all-reduce, torch
`_fsdp_collectives.foreach_reduce`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sp_planner.layout import CP_AXES, axis_stride, group_size


def dp_shard(c):
    """Data-parallel ranks of one shard group: dp / dp_replicate."""
    return c.dp // c.dp_replicate


def shard_group_size(c):
    """Ranks that shard the model states (ZeRO/FSDP): dp_shard x cp."""
    return dp_shard(c) * group_size(c, CP_AXES)


def replicate_stride(c):
    """Distance in global rank between neighbours of one replicate group (whole shard groups)."""
    return axis_stride(c, "dp") * dp_shard(c)


def param_gathers_per_micro_batch(c):
    """ZeRO-3 parameter all-gathers per micro-batch: forward and again in backward when the
    gathered parameters are freed after forward (FSDP2 reshard_after_forward=True, DeepSpeed
    stage 3), forward only when they are kept (reshard_after_forward=False, the Llama 3 paper's
    choice, section 3.3.2: "we do not reshard after forward computation to avoid an extra
    all-gather communication during backward passes"); none below ZeRO-3."""
    return np.where(np.asarray(c.zero) == 3, np.where(reshard_after_forward(c), 2, 1), 0)


def reshard_after_forward(c):
    """ZeRO-3 frees gathered parameters after forward, for candidates (`reshard`) or one plan."""
    return np.asarray(c.reshard if hasattr(c, "reshard") else c.reshard_after_forward, dtype=bool)


def param_gathers_per_step(c, micro_batches):
    """Parameter all-gathers per step, as cost.comm counts them: ZeRO-3's every micro-batch, ZeRO-1/2's
    one after the optimizer step, none unsharded."""
    zero = np.asarray(c.zero)
    return np.where(zero == 3, param_gathers_per_micro_batch(c) * micro_batches, np.where(zero >= 1, 1, 0))


def torch_fsdp_as_run(zero, reshard, param_shard_stage: int):
    """(ZeRO stage, reshard after forward) as the framework runs them. torch FSDP (its parameters
    sharded from ZeRO-1, TrainingStates.param_shard_stage 1) has no separate ZeRO-1/2: FSDP1's
    SHARD_GRAD_OP "unshards before the forward, does not reshard them after the forward, and only
    reshards them after the backward computation" (torch ShardingStrategy docstring), and FSDP2 with
    reshard_after_forward=False reshards after backward unless set_reshard_after_backward(False)
    (torch FSDPModule; torchtitan calls it only for the loss-parallel output layer,
    components/loss.py at b5bcd76), so both gather every unit before each micro-batch's forward:
    ZeRO-3 keeping the parameters from forward to backward. Others: unchanged."""
    zero, reshard = np.asarray(zero), np.asarray(reshard, dtype=bool)
    kept = (param_shard_stage == 1) & (zero >= 1) & (zero <= 2)
    return np.where(kept, 3, zero), np.where(kept, False, reshard)


def candidates_as_run(c, param_shard_stage: int):
    """Candidates with torch_fsdp_as_run's ZeRO stage and reshard (the cost model's input)."""
    zero, reshard = torch_fsdp_as_run(c.zero, c.reshard, param_shard_stage)
    return dataclasses.replace(c, zero=zero.astype(np.int64), reshard=reshard)


def plan_as_run(plan, param_shard_stage: int):
    """One ParallelPlan with torch_fsdp_as_run's ZeRO stage and reshard."""
    zero, reshard = torch_fsdp_as_run(plan.zero, plan.reshard_after_forward, param_shard_stage)
    return plan.model_copy(update={"zero": int(zero), "reshard_after_forward": bool(reshard)})
