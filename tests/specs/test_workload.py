"""specs.workload: a step's tokens are bounded where the search's int64 byte columns stay exact."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sp_planner.specs.workload import MAX_TOKENS_PER_STEP, Workload, tokens_per_step_problem


def test_tokens_per_step_up_to_2_to_the_30_and_not_one_more():
    # 2**30 = 8192 x 131072 = 1 x 2**30: both at the limit; 62.9M (DeepSeek-V3's 15360 x 4096) well under.
    assert MAX_TOKENS_PER_STEP == 2**30 and MAX_TOKENS_PER_STEP // (15360 * 4096) == 17
    assert Workload(seq_len=131072, global_batch=8192).tokens_per_step == 2**30
    assert Workload(seq_len=2**30, global_batch=1).tokens_per_step == 2**30
    assert tokens_per_step_problem(4096, 15360) is None
    assert tokens_per_step_problem(2**30, 2) == (
        "2 sequences of 1,073,741,824 tokens is 2,147,483,648 tokens a step, more than the 1,073,741,824 (2**30) "
        "the planner takes (17x DeepSeek-V3's 62.9M, the largest published step); give a global batch of at "
        "most 1 sequence")


def test_a_workload_over_the_limit_does_not_build():
    # Plan files and corpus rows build Workload directly: the same rule holds there.
    with pytest.raises(ValidationError, match="give a global batch of at most 8,192 sequences"):
        Workload(seq_len=131072, global_batch=8193)
