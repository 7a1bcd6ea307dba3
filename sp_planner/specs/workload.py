"""What is being trained: sequence length and batch. Numerics are bf16 mixed precision with Adam."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sp_planner.specs.base import FrozenModel


# 1G tokens per sequence and 1G sequences per step: far beyond any training run.
MAX_SEQ_LEN = 2**30
MAX_GLOBAL_BATCH = 2**30
# Tokens a GPU takes per step (seq_len x global_batch / GPUs), at most 2**24 (16.8M): 546x
# DeepSeek-V3's 30,720 (15360 sequences of 4096 tokens on 2048 H800s, arXiv 2412.19437 sections 3.1
# and 4.2), 128x the largest in the corpus (MosaicML's 1024 x 1K-token batch on 8 H100s). Beyond it
# the search's int64 byte columns (cost.comm) overflow, where numpy's cast only warns (seen from
# 2**37 a GPU: Llama-3.1-405B, 16M sequences of 128K on 16 GPUs), and the per-micro-batch pipeline
# walk (cost.chunk_path) runs for minutes.
MAX_TOKENS_PER_GPU = 2**24


def tokens_per_gpu_problem(seq_len: int, global_batch: int, world_size: int) -> str | None:
    """Why `global_batch` sequences of `seq_len` tokens are too many for one step on `world_size`
    GPUs, or None."""
    tokens, most = seq_len * global_batch, MAX_TOKENS_PER_GPU * world_size // seq_len
    if tokens <= MAX_TOKENS_PER_GPU * world_size:
        return None
    fix = (f"give a global batch of at most {most:,} sequence{'' if most == 1 else 's'}" if most else
           f"give a sequence length of at most {MAX_TOKENS_PER_GPU * world_size:,} tokens, or more GPUs")
    return (f"{global_batch:,} sequences of {seq_len:,} tokens on {world_size:,} GPUs is {tokens // world_size:,} "
            f"tokens a GPU a step, more than the {MAX_TOKENS_PER_GPU:,} (2**24) the planner takes (546x "
            f"DeepSeek-V3's); {fix}")


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
