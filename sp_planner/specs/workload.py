"""What is being trained: sequence length and batch. Numerics are bf16 mixed precision with Adam."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sp_planner.specs.base import FrozenModel


class Workload(FrozenModel):
    seq_len: int = Field(gt=0, description="tokens per sequence, global (before any split)")
    global_batch: int = Field(gt=0, description="sequences per optimizer step")
    causal: bool = True
    # bf16 parameters and gradients, fp32 master weights and Adam moments (Megatron's
    # mixed-precision recipe; Rajbhandari et al. 2020, ZeRO, section 3.1: 2+2+12 bytes/param).
    precision: Literal["bf16"] = "bf16"
    optimizer: Literal["adam"] = "adam"

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.global_batch
