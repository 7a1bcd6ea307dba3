"""What is being trained: sequence length and batch. Numerics are bf16 mixed precision with Adam."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sp_planner.specs.base import FrozenModel


# 1G tokens per sequence and 1G sequences per step: far beyond any training run.
MAX_SEQ_LEN = 2**30
MAX_GLOBAL_BATCH = 2**30
# Tokens per step (seq_len x global_batch), at most 2**30: 17x the largest published step, DeepSeek-V3's
# 15360 sequences of 4096 tokens (62.9M; arXiv 2412.19437 section 4.2), 64x Llama 3 405B's 16M
# (arXiv 2407.21783 section 3.4.1). Beyond it the search's int64 byte columns (a step's tokens x
# hidden x bytes x layers, cost.comm) overflow (seen from 2**41 tokens with Llama-3.1-405B, where
# numpy's cast only warns) and the per-micro-batch pipeline walk (cost.chunk_path) takes minutes.
MAX_TOKENS_PER_STEP = 2**30


def tokens_per_step_problem(seq_len: int, global_batch: int) -> str | None:
    """Why `global_batch` sequences of `seq_len` tokens are too many for one step, or None."""
    tokens, most = seq_len * global_batch, MAX_TOKENS_PER_STEP // seq_len
    if tokens <= MAX_TOKENS_PER_STEP:
        return None
    return (f"{global_batch:,} sequences of {seq_len:,} tokens is {tokens:,} tokens a step, more than the "
            f"{MAX_TOKENS_PER_STEP:,} (2**30) the planner takes (17x DeepSeek-V3's 62.9M, the largest "
            f"published step); give a global batch of at most {most:,} sequence{'' if most == 1 else 's'}")


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

    @model_validator(mode="after")
    def _tokens_per_step_bounded(self) -> Workload:
        problem = tokens_per_step_problem(self.seq_len, self.global_batch)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.global_batch
