"""What is being trained: sequence length and batch. Numerics are bf16 mixed precision with Adam."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sp_planner.specs.base import FrozenModel


# 1G tokens per sequence and 1G sequences per step: far beyond any training run, and their product
# (tokens per step, 2**60) still fits the int64 arrays of the search.
MAX_SEQ_LEN = 2**30
MAX_GLOBAL_BATCH = 2**30


class Workload(FrozenModel):
    seq_len: int = Field(gt=0, le=MAX_SEQ_LEN, description="tokens per sequence, global (before any split)")
    global_batch: int = Field(gt=0, le=MAX_GLOBAL_BATCH, description="sequences per optimizer step")
    causal: bool = True
    # bf16 parameters, fp32 master weights and Adam moments (Rajbhandari et al. 2020, ZeRO,
    # section 3.1: 2+2+12 bytes/param). Megatron-LM accumulates bf16 gradients in fp32
    # (arguments.py: bf16 => accumulate_allreduce_grads_in_fp32), so the cost model charges
    # 4 gradient bytes/param, as Megatron's own memory estimator does (docs/cost-model.md).
    precision: Literal["bf16"] = "bf16"
    optimizer: Literal["adam"] = "adam"

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.global_batch
