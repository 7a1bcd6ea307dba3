"""A rank's memory and reference time before launch (sp_planner.executor.budget), by hand."""

import pytest

from sp_planner.executor.budget import (
    CPU_CORE_REFERENCE_FLOPS_PER_S,
    CUDA_REFERENCE_FLOPS_PER_S,
    held_bytes,
    reference_flops,
    reference_score_pairs,
    reference_time_s,
    run_memory,
)
from sp_planner.cost.attention import attention_layer_memory_bytes
from sp_planner.executor.config import RunConfig
from sp_planner.executor.step_memory import collective_held_bytes, step_peak_bytes

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
    # The single-device bf16 run on the CPU flash kernel (a Q-sized bf16 tensor 128 MiB, the LSE
    # 2 MiB): Q, K, V, dO rounded to bf16 320 MiB; the forward leaves O and the LSE 130 MiB; the
    # backward's (b, h, s, d) copies of dO, Q, K and V (K, V repeated to 32 heads) 512 MiB, the
    # LSE's contiguous copy 2 MiB and its dQ, dK, dV at 32 heads 384 MiB.
    assert m.tolerance_bytes == (320 + 130 + 514 + 384) * MIB
    # The steps: the single-device run's bf16 O, dQ, dK, dV 320 MiB kept, this rank's bf16 Q, K,
    # V, dO 160 MiB, the step replayed, and the validated step's O, dQ, dK, dV 160 MiB while the
    # timed step runs.
    step = step_peak_bytes(LLAMA_16K)
    assert step == 865.5 * MIB
    assert m.executor_bytes == 320 * MIB + 160 * MIB + step + 160 * MIB == 1505.5 * MIB
    assert m.executor_replayed
    assert m.largest_phase == ("its sharded steps (sp-run's step replayed)", 1505.5 * MIB)
    assert m.peak_bytes == (640 + 640 + 1505.5 + 512) * MIB


def test_held_bytes_are_what_a_rank_holds_through_every_phase():
    # 640 MiB of fp32 inputs, 640 MiB of reference results, 512 MiB of runtime on CPU, 1 GiB on CUDA
    for cfg, runtime in ((LLAMA_16K, 512 * MIB), (LLAMA_16K.model_copy(update={"device": "cuda"}), 1024 * MIB)):
        m = run_memory(cfg)
        assert held_bytes(cfg) == m.inputs_bytes + m.reference_bytes + m.runtime_bytes == 1280 * MIB + runtime
        assert held_bytes(cfg) < m.peak_bytes


def test_ring_of_two_by_hand_against_the_old_layer_estimate():
    """test_step_memory's hand-counted step (ring 2, fp32, b 1, S 8, 2 heads = 2 KV heads, d 4:
    2,624 B a rank above its inputs), in the rank's whole run. Q, K, V, dO (and O, dQ, dK, dV)
    are 4 x 8 x 2 x 4 fp32 = 1,024 B over the sequence, 512 B a rank."""
    cfg = RunConfig(ulysses=1, ring=2, seq_len=8, num_heads=2, num_kv_heads=2, head_dim=4, dtype="float32",
                    causal=False, iters=0)
    m = run_memory(cfg)
    assert (m.inputs_bytes, m.reference_bytes) == (1024, 1024)
    # the single-device run's results 1,024 B, the rank's Q, K, V, dO 512 B, the step 2,624 B
    assert m.executor_bytes == 1024 + 512 + 2624 == 4160
    # fp32: the inputs are not copied (.to(float32) is the tensor itself); the forward's (b, h, s,
    # d) copies of Q, K, V die in it, leaving O 256 B and the (b, s, h) LSE 64 B; the backward
    # copies dO, Q, K, V 1,024 B and the LSE 64 B (O is already (b, h, s, d) in memory), and makes
    # dQ, dK, dV 768 B
    assert m.tolerance_bytes == 256 + 64 + 1024 + 64 + 768 == 2176
    # scores 2 x 2 x 8 x 8 fp32, chunk rows 8 x 2 x (2 x 4 + 3 x 4) fp32, fp32 K, V and a product
    assert m.reference_workspace_bytes == 1024 + 1280 + 768 == 3072
    assert m.peak_bytes == 1024 + 1024 + 4160 + 512 * MIB
    # The planner's layer model (cost.attention), which the fit check took before: 4 tokens a
    # rank, Q, K, V, O 512 B, LSE 32 B, dO 128 B, fp32 dQ, dK, dV 384 B, ring buffers 512 B; and no
    # tolerance run in fp32: a peak 1,088 B lower than the rank's.
    old_step = attention_layer_memory_bytes(batch=1, seq_len=8, num_heads=2, num_kv_heads=2, head_dim=4,
                                            ulysses=1, ring=2, elem_bytes=4)
    assert old_step == 512 + 32 + 128 + 384 + 512 == 1568
    assert m.peak_bytes - (1024 + 1024 + max(3072, 0, old_step) + 512 * MIB) == 1088
    # A timed step runs beside the validated step's O, dQ, dK, dV (512 B); the next timed step
    # does not keep the previous one's (`for _ in ...` rebinds `_`)
    assert [run_memory(cfg.model_copy(update={"iters": n})).executor_bytes for n in (1, 3)] == [4672, 4672]


def test_gloo_buffers_count_on_cpu_only():
    """Ulysses 2 on CPU: a rank may read the buffers gloo's worker threads hold above the replay
    (step_memory.collective_held_bytes); CUDA ranks run NCCL."""
    cfg = RunConfig(ulysses=2, ring=1, seq_len=64, num_heads=4, num_kv_heads=2, head_dim=16, dtype="bfloat16",
                    iters=0)
    cpu, cuda = run_memory(cfg), run_memory(cfg.model_copy(update={"device": "cuda"}))
    results = 64 * 6 * 32 * 2  # O, dQ, dK, dV in bf16 over the sequence
    assert cpu.executor_bytes == results + results // 2 + step_peak_bytes(cfg) + collective_held_bytes(cfg)
    assert collective_held_bytes(cfg) == 2 * 2 * (32 * 4 * 16 * 2)
    cuda_step = step_peak_bytes(cfg.model_copy(update={"device": "cuda"}))
    assert cuda.executor_bytes == results + results // 2 + cuda_step


def test_math_kernel_scores_count_for_the_executor():
    """fp32 on CUDA is counted as the math kernel: five (32, 8192, 8192) fp32 matrices, 40 GiB."""
    flash = run_memory(LLAMA_16K.model_copy(update={"device": "cuda", "dtype": "bfloat16"}))
    math = run_memory(LLAMA_16K.model_copy(update={"device": "cuda", "dtype": "float32"}))
    eager = run_memory(LLAMA_16K.model_copy(update={"kernel": "math", "dtype": "float32"}))
    assert flash.executor_replayed and not math.executor_replayed and not eager.executor_replayed
    scores = 5 * 32 * 8192 * 8192 * 4
    assert scores == 40 * 2**30
    assert math.executor_bytes == eager.executor_bytes
    # the single-device run's fp32 results 640 MiB; the layer model: Q, K, V, O 320 MiB, LSE 1 MiB,
    # dO 128 MiB, dQ, dK, dV 192 MiB, ring buffers 128 MiB; the validated step's results 320 MiB
    assert math.executor_bytes - scores == (640 + 320 + 1 + 128 + 192 + 128 + 320) * MIB
    # fp32 runs the single-device run too (its RMS bound): no input copies, its results 640 MiB,
    # then the chunked code's workspace (math kernel) or CUDA's memory-efficient kernel: 8
    # Q-sized tensors 2 GiB and an fp32 dQ 256 MiB
    assert eager.tolerance_bytes == 640 * MIB + eager.reference_workspace_bytes
    assert math.tolerance_bytes == (640 + 2048 + 256) * MIB


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
