"""specs.workload: the tokens a GPU takes per step are bounded where the search's int64 byte columns
stay exact."""

from __future__ import annotations

from sp_planner.specs.workload import MAX_TOKENS_PER_GPU, tokens_per_gpu_problem


def test_tokens_a_gpu_up_to_2_to_the_24_and_not_one_more():
    # 2**24 x 16 GPUs = 2048 sequences of 128K; DeepSeek-V3's 15360 x 4096 on 2048 GPUs is 30,720 a GPU.
    assert MAX_TOKENS_PER_GPU == 2**24 and MAX_TOKENS_PER_GPU // (15360 * 4096 // 2048) == 546
    assert tokens_per_gpu_problem(131072, 2048, 16) is None
    assert tokens_per_gpu_problem(4096, 15360, 2048) is None
    assert tokens_per_gpu_problem(131072, 2049, 16) == (
        "2,049 sequences of 131,072 tokens on 16 GPUs is 16,785,408 tokens a GPU a step, more than the "
        "16,777,216 (2**24) the planner takes (546x DeepSeek-V3's); give a global batch of at most 2,048 sequences")
    # One sequence alone over the limit: the length or the GPUs are what to change.
    assert tokens_per_gpu_problem(2**30, 1, 8).endswith(
        "give a sequence length of at most 134,217,728 tokens, or more GPUs")
