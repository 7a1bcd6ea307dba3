"""The default global batch: 4M tokens per step, rounded so that dp divides it."""

from __future__ import annotations

import pytest

from sp_planner.specs.batch import (
    DEFAULT_BATCH_NOTE_RATIO,
    DEFAULT_TOKENS_PER_STEP,
    batch_over_budget,
    budget_ratio,
    default_global_batch,
)


def test_budget_is_llama3_initial_batch():
    # 1024 sequences of 4,096 tokens (Llama 3, arXiv 2407.21783 section 3.4.1).
    assert DEFAULT_TOKENS_PER_STEP == 1024 * 4096


@pytest.mark.parametrize("seq_len, world, batch", [
    (4096, 8, 1024),          # budget >= one sequence per GPU: 1024 is a multiple of 8
    (131072, 16, 32),         # 2 nodes at 128K: 32 x 128K = 4M tokens
    (131072, 24, 24),         # 32 wanted, multiples of 24: 24 is nearest (3M tokens)
    (131072, 72, 36),         # GB200 NVL72 rack: the unit keeps 72's odd part 9 (18, not 24), so dp can take it
    (8192, 6, 510),           # 512 wanted, nearest multiple of 6 is 510
    (1 << 20, 4096, 4),       # 1M tokens on 4096 GPUs: 4 sequences, not 4096 (4G tokens)
    (2 << 20, 8, 2),          # 2 sequences on 8 GPUs: dp may be 1 or 2
    (8 << 20, 8, 1),          # a sequence longer than the budget: one sequence
    (3 << 20, 12, 1),         # 1.33 sequences rounds to 1: a ring of 3 can split the 3M tokens
    (131072, 8000, 125),      # 1000 nodes: 125 = 8000's odd part, which only dp can take; 32 left no plan
    (1 << 20, 72, 9),         # 1M on an NVL72 rack: 4 wanted, but dp must take the 9
])
def test_default_batch(seq_len, world, batch):
    assert default_global_batch(seq_len, world) == batch


@pytest.mark.parametrize("seq_len, world", [(4096, 8), (131072, 16), (1 << 20, 4096), (8192, 6), (65536, 96)])
def test_the_largest_dp_with_a_sequence_per_replica_divides_the_batch(seq_len, world):
    batch = default_global_batch(seq_len, world)
    largest = max(d for d in range(1, min(batch, world) + 1) if world % d == 0)
    assert batch % largest == 0


def test_tokens_stay_within_a_factor_of_the_budget_when_a_gpu_gets_a_sequence():
    for seq_len in (2048, 4096, 8192, 32768, 131072):
        for world in (8, 16, 64, 512):
            tokens = default_global_batch(seq_len, world) * seq_len
            if DEFAULT_TOKENS_PER_STEP >= world * seq_len:
                assert abs(tokens - DEFAULT_TOKENS_PER_STEP) <= world * seq_len / 2


def test_only_odd_factors_take_a_default_batch_over_twice_its_budget():
    # On power-of-two clusters (1 to 131,072 GPUs, sequences of 512 to 9M tokens) rounding to whole
    # sequences and to the GPU count's divisors keeps a batch of more than one sequence within 1.6x
    # of the budget (the worst: 4 sequences of 1,675,776 tokens), under DEFAULT_BATCH_NOTE_RATIO.
    worst = max(budget_ratio(seq_len, batch)
                for world in (2**k for k in range(18))
                for seq_len in (*range(512, 9 << 20, 4096), *(2**k for k in range(9, 24)))
                if (batch := default_global_batch(seq_len, world)) > 1)
    assert worst == pytest.approx(4 * 1675776 / DEFAULT_TOKENS_PER_STEP) and worst < 1.6 < DEFAULT_BATCH_NOTE_RATIO
    # Odd factors: 999 sequences at 128K on 7,992 GPUs (31.2x), 125 on 8,000 (3.9x), 9 of 1M on 72 (2.25x).
    assert budget_ratio(131072, 999) == pytest.approx(999 / 32)
    assert batch_over_budget(131072, default_global_batch(131072, 8 * 999))
    assert batch_over_budget(131072, default_global_batch(131072, 8000))
    assert batch_over_budget(1 << 20, default_global_batch(1 << 20, 72))
    assert not batch_over_budget(131072, default_global_batch(131072, 72))  # 36 sequences: 1.1x
    assert not batch_over_budget(16 << 20, 1)  # one sequence over the budget cannot shrink


def test_rejects_non_positive():
    with pytest.raises(ValueError, match="must be positive"):
        default_global_batch(0, 8)
