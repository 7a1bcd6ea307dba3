"""A rank's memory and reference time before launch (sp_planner.executor.budget), by hand."""

import pytest

from sp_planner.executor.budget import (
    CPU_CORE_REFERENCE_FLOPS_PER_S,
    CUDA_REFERENCE_FLOPS_PER_S,
    reference_flops,
    reference_score_pairs,
    reference_time_s,
    run_memory,
)
from sp_planner.executor.config import RunConfig

MIB = 2**20
# Llama-3-8B attention (32 heads, 8 KV heads of 128), 16K tokens, ring 2: sp-plan's 4-GPU A800 plan.
LLAMA_16K = RunConfig(ulysses=1, ring=2, seq_len=16384, num_heads=32, num_kv_heads=8, head_dim=128, causal=True,
                      ring_layout="zigzag", dtype="bfloat16", iters=1)


def test_score_pairs_by_hand():
    assert reference_score_pairs(10, 4, causal=False) == 100
    # causal chunks of 4 rows stop at their last row: 4*4 + 4*8 + 2*10
    assert reference_score_pairs(10, 4, causal=True) == 16 + 32 + 20
    assert reference_score_pairs(10, 1, causal=True) == 55  # exactly the lower triangle
    assert reference_score_pairs(10, 10, causal=True) == 100  # one chunk computes every pair


def test_memory_of_the_16k_llama_run():
    m = run_memory(LLAMA_16K)
    q, kv = 16384 * 32 * 128, 16384 * 8 * 128  # elements of Q (and dO) and of K (and V)
    assert m.inputs_bytes == m.reference_bytes == (2 * q + 2 * kv) * 4 == 640 * MIB
    # 128-row chunks: two (32, 128, 16384) fp32 matrices = 512 MiB; 5 chunk-row tensors 10 MiB;
    # fp32 K, V and one K-sized product 192 MiB.
    assert m.reference_workspace_bytes == (512 + 10 + 192) * MIB
    # bf16 inputs and results 640 MiB, 8 head-expanded bf16 tensors 1 GiB, an fp32 dQ 256 MiB
    assert m.tolerance_bytes == (640 + 1024 + 256) * MIB
    # cost.attention on 8192 tokens a rank: Q, K, V, O 160 MiB; LSE 1 MiB; dO 64 MiB; fp32 dQ, dK,
    # dV 192 MiB; ring buffers for K, V (bf16) and dK, dV (fp32) 96 MiB
    assert m.executor_bytes == (160 + 1 + 64 + 192 + 96) * MIB
    assert m.peak_bytes == (640 + 640 + 1920 + 512) * MIB


def test_math_kernel_scores_count_for_the_executor():
    """fp32 on CUDA selects the math kernel: five (32, 8192, 8192) fp32 matrices, 40 GiB."""
    flash = run_memory(LLAMA_16K.model_copy(update={"device": "cuda", "dtype": "bfloat16"}))
    math = run_memory(LLAMA_16K.model_copy(update={"device": "cuda", "dtype": "float32"}))
    eager = run_memory(LLAMA_16K.model_copy(update={"kernel": "math", "dtype": "float32"}))
    assert flash.executor_bytes == (160 + 1 + 64 + 192 + 96) * MIB
    scores = 5 * 32 * 8192 * 8192 * 4
    assert scores == 40 * 2**30
    assert math.executor_bytes == eager.executor_bytes
    # fp32: Q, K, V, O 320 MiB; LSE 1 MiB; dO 128 MiB; dQ, dK, dV 192 MiB; ring buffers 128 MiB
    assert math.executor_bytes - scores == (320 + 1 + 128 + 192 + 128) * MIB
    assert math.tolerance_bytes == eager.tolerance_bytes == 0  # fp32: a fixed tolerance, no second run


def test_reference_time():
    # 128 chunks of 128 rows: pairs = 128 * 128 * (1 + ... + 128) per head; 6 matmuls of 2*128 flops
    pairs = 128 * 128 * (128 * 129 // 2)
    flops = 6 * 2 * 128 * 32 * pairs
    assert reference_flops(LLAMA_16K) == flops
    core_s = flops / CPU_CORE_REFERENCE_FLOPS_PER_S
    assert reference_time_s(LLAMA_16K, local_ranks=2, cpu_cores=2) == pytest.approx(core_s)  # a core each
    assert reference_time_s(LLAMA_16K, local_ranks=4, cpu_cores=2) == pytest.approx(2 * core_s)  # half a core
    assert reference_time_s(LLAMA_16K, local_ranks=1, cpu_cores=2) == pytest.approx(core_s / 2)  # both cores
    cuda = LLAMA_16K.model_copy(update={"device": "cuda"})
    assert reference_time_s(cuda, local_ranks=2, cpu_cores=2) == pytest.approx(flops / CUDA_REFERENCE_FLOPS_PER_S)
