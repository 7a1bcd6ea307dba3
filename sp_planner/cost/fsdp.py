"""FSDP / HSDP on the data-parallel axis: which ranks shard the model states, which replicate them,
and how often ZeRO-3 gathers the parameters (vectorized over candidates or one plan).

The ZeRO group is Megatron's dp x cp group (layout.DP_CP_AXES). HSDP splits dp into
dp_replicate x dp_shard with the replicas outermost (torchtitan's mesh
("dp_replicate", "fsdp" = dp_shard x cp, "tp"), parallel_dims.py; PyTorch HYBRID_SHARD), so one
shard group is dp_shard x cp adjacent ranks at tp's stride and one replicate group strides over
whole shard groups. Gradients are reduce-scattered inside the shard group and the shard then
all-reduced across replicas (FSDP2 HSDP: reduce-scatter + all-reduce, torch
`_fsdp_collectives.foreach_reduce`).

The routed experts do the same on the expert grid (layout.EXPERT_GRID_ORDER): Megatron-Core
splits each expert-data-parallel (edp) group into num_distributed_optimizer_instances = dp_replicate
runs of edp / dp_replicate consecutive members, the intra-partial group that shards their states,
and the members dp_replicate runs apart, the inter-partial group that all-reduces the shards
(parallel_state.py initialize_model_parallel and create_hierarchical_groups, Megatron-LM d98e8a6
lines 1447-1497 and 378-434; it asserts edp % dp_replicate == 0). Megatron-FSDP's HSDP takes the
same groups (mcore_fsdp_adapter.py _init_dist_index). An inter-partial group's members are
edp / dp_replicate x ep x etp = world / (pp x dp_replicate) ranks apart, as a dense replicate
group's (dp_shard x cp x tp): the same ranks, so one replica all-reduce prices both.
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
    """Distance in global rank between neighbours of one replicate group (whole shard groups: the
    stride of layout.SPLIT_AXES' dp_replicate, whose groups the simulator and plan file list)."""
    return axis_stride(c, "dp_replicate")


def expert_shard_size(c):
    """Ranks that shard the routed experts' states: edp / dp_replicate (Megatron's intra-partial
    expert data-parallel group; module docstring). At least 1 on candidates where dp_replicate does
    not divide edp (the expert_replicas rule's breakers), so that no term divides by zero."""
    return np.maximum(c.edp // c.dp_replicate, 1)


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


def root_gathers_per_micro_batch(root_gathered_once: bool, zero, reshard, micro_batches):
    """ZeRO-3 gathers of the root unit's parameters (the embedding, output layer and final norm,
    outside the per-layer units) per micro-batch, on average over a step: 1, or 1/m where the
    framework keeps them gathered from the step's first forward to the optimizer
    (`root_gathered_once`, cost.overlap.Overlap) and runs reshard after forward. Megatron-FSDP
    (optim_grads_params; Megatron-LM d98e8a6, megatron/core/distributed/fsdp/src/megatron_fsdp/):
    only the per-layer units' modules release their buckets, after forward and backward
    (megatron_fsdp.py:1089-1098, :1116-1124), and the root pre-backward marks only unit buckets
    releasable (:955-960); a bucket already gathered is not gathered again
    (param_and_grad_buffer.py:4518-4527, EMPTY or PRESERVED only); and the all-gather pipeline is
    reset only in finish_grad_sync, once a step, which keeps the non-unit buckets' storage as
    PRESERVED for the next step's first forward to refresh (megatron_fsdp.py:1342-1346, :1398-1399;
    param_and_grad_buffer.py:4339-4376). The reduce-scatters are not affected: optim_grads_params
    reduces every backward, the root's leftover gradients too (megatron_fsdp.py:761-793, :879-901).
    Megatron's reshard-false ZeRO-3 is torch FSDP2 (flags/megatron_fsdp.py), which gathers every
    forward."""
    once = root_gathered_once & (np.asarray(zero) == 3) & np.asarray(reshard, dtype=bool)
    return np.where(once, 1.0 / np.maximum(np.asarray(micro_batches, dtype=np.float64), 1.0), 1.0)


def stage_synced(pp_stage_grad_sync: bool, pp, zero):
    """ZeRO-3 (FSDP) in a pipeline whose schedule syncs each stage's gradients once a step
    (`pp_stage_grad_sync`, cost.overlap.Overlap). torch.distributed.pipelining (torch 2.13.0,
    cf30153) runs every backward with set_is_last_backward, set_reshard_after_backward and
    set_requires_gradient_sync all False (stage.py:843-847), so a backward reduces nothing and
    keeps the parameters gathered; after a stage's last backward perform_reduce_grad runs every
    FSDP group's post_backward, reduce-scattering the accumulated gradients, and the root's final
    callback makes the compute stream wait for them (stage.py:1164-1191;
    fsdp/_fully_shard/_fsdp_state.py:418-431): Schedule1F1B calls it after the last backward
    (schedules.py:1177), the interleaved runtime schedules REDUCE_GRAD after each stage's last
    backward (schedules.py:1252-1282, :2605-2607). A forward after a backward finds the parameters
    gathered (FSDPParamGroup.unshard is a no-op then, _fsdp_param_group.py:372-376): with
    reshard_after_forward false, torchtitan's default under PP ("For PP, by default do not reshard
    after forward to avoid per-microbatch all-gathers", torchtitan distributed/fsdp.py:124-131 at
    b5bcd76; models/llama3/infra/parallelize.py:319-327 at v0.2.2, 73a0e69), a stage gathers once
    a step, in its first forward; with it, every forward frees them and every backward gathers
    them again, m + 1 gathers a step (the warm-up forwards of 1F1B, each after a forward, gather
    too: counted as the first forward's). torch's interleaved runtime also unshards whole stages
    ahead of use and, holding at most 3 (_add_unshard_reshard, schedules.py:1285-1365), gathers a
    rank's stages again at vpp 4 and more: not modelled."""
    return pp_stage_grad_sync & (np.asarray(pp) > 1) & (np.asarray(zero) == 3)


def param_gathers_per_step(c, micro_batches, pp_stage_grad_sync: bool = False):
    """Parameter all-gathers per step, as cost.comm counts them: ZeRO-3's every micro-batch, ZeRO-1/2's
    one after the optimizer step, none unsharded; a stage synced once a step (stage_synced) the
    first forward's and, resharding after forward, every backward's."""
    zero = np.asarray(c.zero)
    per_step = np.where(zero == 3, param_gathers_per_micro_batch(c) * micro_batches, np.where(zero >= 1, 1, 0))
    if not pp_stage_grad_sync:
        return per_step
    kept = np.where(reshard_after_forward(c), np.asarray(micro_batches) + 1, 1)
    return np.where(stage_synced(pp_stage_grad_sync, c.pp, zero), kept, per_step)


def grad_reduces_per_step(c, micro_batches, pp_stage_grad_sync: bool = False):
    """Gradient reduce-scatters (or all-reduces) of a rank's gradients per step: ZeRO-2/3's every
    micro-batch, once otherwise and where the pipeline syncs each stage once (stage_synced)."""
    zero = np.asarray(c.zero)
    every = (zero >= 2) & ~stage_synced(pp_stage_grad_sync, c.pp, zero)
    return np.where(every, micro_batches, 1)


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
