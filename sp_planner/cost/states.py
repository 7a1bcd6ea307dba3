"""Training states a framework keeps per parameter with bf16 training, and which ZeRO stage
shards each (vectorized over candidates' ZeRO stages).

Megatron-LM / MindSpeed (NVIDIA/Megatron-LM d98e8a6): bf16 parameters (2 B), fp32 main gradients
(4 B: arguments.py, "bfloat16 requires gradient accumulation and all-reduce to be done in fp32",
sets accumulate_allreduce_grads_in_fp32), and an optimizer holding fp32 main parameters and Adam's
two moments (12 B): 18 B per parameter, "6 + 12/d" with the distributed optimizer
(docs/user-guide/features/dist_optimizer.md table; theoretical_memory_usage.py
num_bytes_per_parameter). ZeRO-2/3 as Megatron-FSDP keep the same states, sharded (core_v0.16.1
megatron_fsdp.py builds its gradient buffer with ddp_config.grad_reduce_in_fp32, which
training.py sets from accumulate_allreduce_grads_in_fp32; from core_v0.17.0, b969f76, its
--megatron-fsdp-main-grads-dtype defaults to "auto", the parameters' bf16, which sp-plan does not
model: its Megatron flags say so in a note, flags/megatron_fsdp.py FSDP_GRADS_NOTE); the bf16
parameters are what the GEMMs read. With FP8 or MXFP8 and the distributed optimizer, Megatron-LM
as sp-plan runs it keeps the GEMM weights as Transformer Engine FP8 tensors instead
(--fp8-param-gather: fp8_param_gather, cost.fp8_params); MindSpeed's flags do not set it.

torch FSDP with bf16 mixed precision (torchtitan's FSDP2, Composer's FSDP1 as llm-foundry runs it):
the sharded parameters stay fp32 and are the optimizer's parameters, so there is no separate
master copy; the bf16 copy is a cast made for the all-gather and exists only while a unit is
gathered. Sources:
- torchtitan b5bcd76 config/configs.py: training.dtype float32, mixed_precision_param bfloat16,
  mixed_precision_reduce float32; distributed/fsdp.py builds
  MixedPrecisionPolicy(param_dtype, reduce_dtype) from them;
- torch fully_shard (pytorch/pytorch 01d5c2c torch/distributed/fsdp/_fully_shard/_fsdp_api.py,
  MixedPrecisionPolicy docstring): param_dtype is "the dtype for the unsharded parameter ... and
  the parameter all-gather", "the optimizer step uses the sharded parameter in the original
  dtype", FSDP "does not require any extra memory to keep a high-precision copy of the
  parameters"; reduce_dtype is the gradient reduction's dtype and "reduced shards retain the
  input grad_dtype policy" (fp32 sharded gradients);
- torch FSDP1 (pytorch/pytorch 01caf79 torch/distributed/fsdp/_flat_param.py, FlatParameter
  docstring: _local_shard is the sharded flat parameter, _full_param_padded "has the low
  precision" under parameter mixed precision; 3ade90a _runtime_utils.py
  _cast_grad_to_param_dtype casts the reduced gradient shard back to the parameter dtype);
- Composer 6405188 distributed/mosaic_parallelism.py get_mixed_precision: 'DEFAULT' (the MP mode
  of llm-foundry's benchmark table) is param_dtype = the amp dtype, reduce_dtype float32;
  llm-foundry 4952183 yamls/pretrain/mpt-*.yaml use decoupled_adamw (two moments).
So fp32 parameters (4 B) + fp32 gradients (4 B) + Adam's moments (8 B) = 16 B, all sharded
whenever FSDP shards: torchtitan's ZeRO-1/2 are FSDP2 without resharding (flags/torchtitan_v02.py),
Composer's ZeRO-2 is SHARD_GRAD_OP, which shard parameters too and keep the gathered bf16 copy
from forward to backward. Unsharded (torchtitan's DDP) the bf16 copy is autocast's, made per
forward and saved for backward.

DeepSpeed (deepspeedai/DeepSpeed edaa722, v0.19) with "bf16": {"enabled": true} and no
data_types (flags/deepspeed.py emits that): runtime/engine.py get_data_types makes the gradient
accumulation dtype the model's, bf16; ZeRO stages 1-3 (zero/stage_1_and_2.py, zero/stage3.py)
keep bf16 parameters, gradient partitions in that bf16 dtype, and fp32 master partitions
(master_weights_and_grads_dtype) beside Adam's moments: 2 + 2 + 12 = 16 B, the ZeRO paper's
2 + 2 + K with K = 12 (Rajbhandari et al. 2020, section 3.1); stage 0 wraps the optimizer in
FP16_Optimizer (engine.py _do_optimizer_sanity_check: DDP_BFLOAT16), the same bytes unsharded.

Gradients are accumulated and reduced in the same width in all three (Megatron fp32, FSDP
reduce_dtype fp32, DeepSpeed communication_data_type defaulting to the model's bf16), so
grad_bytes is also the width of a layer's unsharded gradients before their reduce-scatter (FSDP's
are autograd's bf16 ones until copied into the fp32 reduce-scatter input: pytorch/pytorch 010ae4a
_fully_shard/_fsdp_collectives.py foreach_reduce allocates that input in reduce_dtype, frees the
gradients after the copy-in and casts the reduced shard to the parameter dtype; counted at 4 B).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.specs.base import FrozenModel

ADAM_MOMENTS_BYTES = 2 * FP32_BYTES  # Adam's m and v in fp32
# Megatron's precision-aware optimizer with --exp-avg-dtype/--exp-avg-sq-dtype bf16 (NVIDIA/Megatron-LM
# 9c5258f1 megatron/core/optimizer/optimizer_config.py: exp_avg_dtype, exp_avg_sq_dtype; TE
# FusedAdam keeps them in that dtype beside the fp32 master): m and v in bf16, as a corpus row states.
ADAM_MOMENTS_BF16_BYTES = 2 * BF16_BYTES
# With bf16 moments and a bf16 model, Megatron's precision-aware optimizer lets TE's FusedAdam keep
# the fp32 master as its 16-bit remainder beside the bf16 parameter (OptimizerConfig
# store_param_remainders, default True; distrib_optimizer.py: master_param int16) unless the plan
# runs FP8 other than delayed scaling, whose master Megatron-Core keeps in fp32 itself
# (use_precision_aware_optimizer_no_fp8_or_ds_fp8; NVIDIA/Megatron-LM 9c5258f1).
PARAM_REMAINDER_BYTES = 2


class TrainingStates(FrozenModel):
    """Bytes per parameter of what a framework keeps for training, and the lowest ZeRO stage that
    shards each (the optimizer states from stage 1)."""

    param_bytes: int  # the parameters as stored between steps
    grad_bytes: int  # gradients as accumulated and reduced
    optimizer_bytes: int  # optimizer states, with the fp32 master copy when it is a separate one
    compute_param_bytes: int  # the parameters as the GEMMs read them and ZeRO-3 gathers them
    param_shard_stage: int  # lowest ZeRO stage that shards the stored parameters
    grad_shard_stage: int  # ... and the gradients
    # FP8 and MXFP8 plans with the distributed optimizer keep the GEMM weights as Transformer
    # Engine FP8 tensors, gathered in FP8 (Megatron --fp8-param-gather, cost.fp8_params).
    fp8_param_gather: bool = False
    # ZeRO-3 without reshard after forward runs torch FSDP2 around Transformer Engine's linears
    # (Megatron --use-torch-fsdp2, flags/megatron_fsdp.py): bf16 weights, cast every micro-batch
    # (cost.fp8_params.torch_fsdp2_casts).
    zero3_keep_is_torch_fsdp2: bool = False

    @property
    def separate_compute_copy(self) -> bool:
        """The GEMMs read a cast of the stored parameters (FSDP's fp32 shards, gathered in bf16),
        not the stored parameters themselves (Megatron's and DeepSpeed's bf16 weights)."""
        return self.param_bytes != self.compute_param_bytes

    @property
    def bytes_per_param(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes

    @property
    def optimizer_step_bytes(self) -> int:
        """HBM traffic of one Adam step per parameter: read the gradient, read and write the
        optimizer states with the fp32 master (the stored parameters where they are the master,
        FSDP), and write the bf16 parameters where they are a copy of a separate master: Megatron
        4 + 2 x 12 + 2 = 30, torch FSDP 4 + 2 x (8 + 4) = 28, DeepSpeed 2 + 2 x 12 + 2 = 28."""
        return int(optimizer_step_bytes_per_param(self, self.optimizer_bytes))


# Megatron-LM as sp-plan runs it: --fp8-param-gather with FP8 and the distributed optimizer
# (flags/stages.py), as NVIDIA's Megatron-Bridge FP8 recipes run (cost.fp8_params).
MEGATRON_STATES = TrainingStates(param_bytes=BF16_BYTES, grad_bytes=FP32_BYTES,
                                 optimizer_bytes=FP32_BYTES + ADAM_MOMENTS_BYTES, compute_param_bytes=BF16_BYTES,
                                 param_shard_stage=3, grad_shard_stage=2, fp8_param_gather=True,
                                 zero3_keep_is_torch_fsdp2=True)
# MindSpeed: Megatron-LM's states, without FP8 weights (sp-plan does not emit the flag for it).
MINDSPEED_STATES = MEGATRON_STATES.model_copy(update={"fp8_param_gather": False})
TORCH_FSDP_STATES = TrainingStates(param_bytes=FP32_BYTES, grad_bytes=FP32_BYTES, optimizer_bytes=ADAM_MOMENTS_BYTES,
                                   compute_param_bytes=BF16_BYTES, param_shard_stage=1, grad_shard_stage=1)
DEEPSPEED_STATES = TrainingStates(param_bytes=BF16_BYTES, grad_bytes=BF16_BYTES,
                                  optimizer_bytes=FP32_BYTES + ADAM_MOMENTS_BYTES, compute_param_bytes=BF16_BYTES,
                                  param_shard_stage=3, grad_shard_stage=2)


def optimizer_bytes_per_param(states: TrainingStates, adam_moments_bf16=False, remainders=False):
    """Optimizer bytes per parameter for each candidate: the framework's (a separate master, if
    any, and Adam's moments), with the moments in bf16 where `adam_moments_bf16` (Megatron
    --use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16) and then, where
    `remainders` (bf16 or delayed-scaling FP8 plans), a separate fp32 master kept as its 16-bit
    remainder (PARAM_REMAINDER_BYTES): Megatron's 12 becomes 6, or 8 under MXFP8, tensorwise or
    block-scaled FP8."""
    bf16 = np.asarray(adam_moments_bf16, dtype=bool)
    separate = states.optimizer_bytes - ADAM_MOMENTS_BYTES  # 0 where the stored parameters are the master
    master = np.where(bf16 & np.asarray(remainders, dtype=bool) & (separate > 0), PARAM_REMAINDER_BYTES, separate)
    return master + np.where(bf16, ADAM_MOMENTS_BF16_BYTES, ADAM_MOMENTS_BYTES)


def optimizer_step_bytes_per_param(states: TrainingStates, optimizer_bytes):
    """TrainingStates.optimizer_step_bytes with `optimizer_bytes` (per candidate) for its states."""
    master_is_stored = states.param_bytes == FP32_BYTES
    held = np.asarray(optimizer_bytes) + (states.param_bytes if master_is_stored else 0)
    return states.grad_bytes + 2 * held + (0 if master_is_stored else states.param_bytes)


def sharded_state_bytes(states: TrainingStates, zero, params, group, optimizer_bytes=None):
    """(parameter, gradient, optimizer) bytes on a rank holding `params` parameters, each state
    divided over `group` ranks where the candidate's ZeRO stage shards it; `optimizer_bytes` per
    parameter (default the framework's; optimizer_bytes_per_param)."""
    zero = np.asarray(zero)
    optimizer = states.optimizer_bytes if optimizer_bytes is None else optimizer_bytes

    def share(nbytes, stage: int):
        return nbytes * params / np.where(zero >= stage, group, 1)
    return (share(states.param_bytes, states.param_shard_stage), share(states.grad_bytes, states.grad_shard_stage),
            share(optimizer, 1))


def params_sharded(states: TrainingStates, zero):
    """The stored parameters are sharded: the layers are gathered to compute (FSDP units)."""
    return np.asarray(zero) >= states.param_shard_stage


def whole_compute_copy(states: TrainingStates, zero, reshard):
    """A bf16 copy of the stage's whole parameters is held beside the stored ones at the
    forward/backward boundary: gathered parameters not resharded after forward (ZeRO-3 with
    reshard false; FSDP's ZeRO-1/2, which shard parameters and keep them gathered), or, unsharded,
    a separate compute copy (autocast's casts saved for backward)."""
    resharded = (np.asarray(zero) == 3) & np.asarray(reshard, dtype=bool)
    return np.where(params_sharded(states, zero), ~resharded, states.separate_compute_copy)
