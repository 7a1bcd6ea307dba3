"""cost.activations: the sequence-parallel region's tokens on a rank."""

import numpy as np

from sp_planner.cost.activations import sequence_parallel_region_tokens


def test_the_sequence_parallel_region_splits_over_tp_only_with_sequence_parallelism():
    # A rank's 8192 tokens (micro-batch x sequence / cp): with Megatron's sequence parallelism the
    # hidden state between the TP GEMMs is split over tp (Korthikanti et al. 2022 section 4.2.2),
    # without it every TP rank holds all of them.
    tokens, tp = 8192.0, np.array([1, 2, 8])
    assert list(sequence_parallel_region_tokens(tokens, tp, True)) == [8192, 4096, 1024]
    assert sequence_parallel_region_tokens(tokens, tp, False) == 8192
