"""The default global batch: a token budget per optimizer step, not one sequence per GPU.

Large pre-training runs step on millions of tokens: GPT-3 175B used 3.2M tokens per batch
(Brown et al. 2020, arXiv 2005.14165, Table 2.1); Llama 3 405B started at 4M tokens (1024
sequences of 4,096) and grew to 8M and then 16M (Llama 3 Herd of Models, arXiv 2407.21783,
section 3.4.1). One sequence per GPU instead ties the step to the cluster size: a 1M-token run
on 4096 GPUs would step on 4G tokens, hours per step.
"""

from __future__ import annotations

import math

# Llama 3's initial batch, 1024 x 4096 tokens (arXiv 2407.21783 section 3.4.1).
DEFAULT_TOKENS_PER_STEP = 4 * 2**20
# How far over its token budget a default batch of more than one sequence goes before sp-plan says
# so: rounding to whole sequences and to the GPU count's divisors keeps it within 1.6x on every
# power-of-two cluster (at most 131,072 GPUs, sequences of 512 to 9M tokens; tests/specs/test_batch.py),
# so beyond 2x it is the GPU count's odd factors that grew it (999 nodes at 128K: 999 sequences, 31x).
DEFAULT_BATCH_NOTE_RATIO = 2.0


def default_global_batch(seq_len: int, world_size: int,
                         tokens_per_step: int = DEFAULT_TOKENS_PER_STEP) -> int:
    """Sequences per step closest to `tokens_per_step`, rounded so that data parallelism divides it.

    The batch is a multiple of the largest divisor of `world_size` not above the target sequence
    count: when the budget holds at least one sequence per GPU that divisor is the GPU count, so
    every dp the GPUs allow divides the batch; below that, only dp degrees that divide it remain
    (more replicas than sequences cannot run anyway) and the batch rule names the others.
    """
    if seq_len <= 0 or world_size <= 0 or tokens_per_step <= 0:
        raise ValueError(
            f"seq_len ({seq_len}), world_size ({world_size}) and tokens_per_step ({tokens_per_step}) "
            "must be positive"
        )
    target = max(1, (2 * tokens_per_step + seq_len) // (2 * seq_len))  # round half up
    # Head and layer counts are mostly powers of two, so the odd factors of the GPU count (72 = 8 x 9
    # on a GB200 NVL72 rack, 8000 = 64 x 125 on 1000 nodes) can go only to dp, or to a ring over a
    # sequence they divide: the unit holds the rest (72 GPUs, 32 target sequences: 18, not 24,
    # which left no valid plan). When no divisor up to the target holds it, the batch grows to the
    # smallest one that does (8000 GPUs at 128K: 125 sequences, 16M tokens, Llama 3's final batch
    # size, rather than 32 that no plan can split).
    odd = world_size // (world_size & -world_size)
    need = odd // math.gcd(odd, seq_len)
    divisors = [d for d in _divisors(world_size) if d <= target]
    unit = max([d for d in divisors if d % need == 0] or [need])
    return max(unit, (2 * target + unit) // (2 * unit) * unit)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return small + [n // d for d in small]


def budget_ratio(seq_len: int, global_batch: int, tokens_per_step: int = DEFAULT_TOKENS_PER_STEP) -> float:
    """The batch's tokens over the default token budget per step."""
    return global_batch * seq_len / tokens_per_step


def batch_over_budget(seq_len: int, global_batch: int) -> bool:
    """Whether a default batch of more than one sequence (a single one cannot shrink) exceeds its
    token budget by more than DEFAULT_BATCH_NOTE_RATIO."""
    return global_batch > 1 and budget_ratio(seq_len, global_batch) > DEFAULT_BATCH_NOTE_RATIO
