"""The executor's prediction is the attention_comm contract; values derived by hand."""

import pytest

from sp_planner.executor.config import RunConfig, config_problems
from sp_planner.executor.predict import predicted_comm_bytes
from sp_planner.executor.step_memory import step_peak_bytes


def test_usp_gqa_bytes_by_hand():
    # U=2, R=2, b=1, S=120, H=4, KV=1 (replicated to 2 for Ulysses), d=16, bf16.
    cfg = RunConfig(ulysses=2, ring=2, seq_len=120, num_heads=4, num_kv_heads=1, head_dim=16,
                    dtype="bfloat16", causal=True, ring_layout="zigzag")
    # all-to-all: 30 local tokens x 16 x (4 + 4 + 2 + 2) heads = 5760 elements, half sent,
    # forward and backward, 2 bytes: 2 * 2880 * 2 = 11520.
    # ring: K block = 60 tokens x 1 head x 16 = 960 elements; fwd K,V once (R-1 = 1) in bf16 = 3840;
    # bwd K,V once in bf16 = 3840 plus dK,dV twice (R = 2) in fp32 = 15360.
    got = predicted_comm_bytes(cfg)
    assert (got.all_to_all, got.p2p) == (11520, 3840 + 3840 + 15360)


def test_tp_divides_heads_before_ulysses():
    # tp 2: 8 heads -> 4 per TP rank, 2 KV heads -> 1, replicated to ulysses 2.
    cfg = RunConfig(ulysses=2, ring=1, tp=2, seq_len=64, num_heads=8, num_kv_heads=2, head_dim=8)
    assert (cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank) == (4, 1)
    # 32 tokens x 8 x (4+4+2+2) = 3072, half sent, x2 passes, 4 bytes
    assert predicted_comm_bytes(cfg).all_to_all == 12288


def test_config_problems_name_the_values():
    cfg = RunConfig(ulysses=3, ring=2, seq_len=66, num_heads=4, num_kv_heads=4, head_dim=8,
                    ring_layout="zigzag")
    problems = config_problems(cfg)
    assert "num_heads 4 is not divisible by tp*ulysses = 1*3" in problems[0]
    assert any("seq_len 66 is not divisible by 12" in p for p in problems)


def _flat_hardware():
    from sp_planner.specs import HardwareProfile

    ones = dict(all_reduce=1.0, all_gather=1.0, reduce_scatter=1.0, all_to_all=1.0, p2p=1.0)
    return HardwareProfile(
        name="flat", peak_bf16_flops=100e12, hbm_bytes=80e9, hbm_bandwidth_bytes_per_s=1e12, gpus_per_node=8,
        intra_node=dict(kind="nvlink", bandwidth_bytes_per_s=100e9, latency_s=0.0),
        inter_node=dict(kind="infiniband", bandwidth_bytes_per_s=10e9, latency_s=0.0),
        efficiency=dict(gemm=0.5, attention_fwd=[{"tokens": 512, "efficiency": 0.5}],
                        attention_bwd=[{"tokens": 512, "efficiency": 0.4}], intra_node=ones, inter_node=ones),
        memory_reserve_bytes=0,
    )


def test_prediction_by_hand():
    from sp_planner.executor.predict import predict
    from sp_planner.specs.hardware import MEMORY_BOUND_DEFAULT

    # tp 2, ulysses 2, no ring, non-causal: 8 heads -> 4 per TP rank -> 2 per rank after the all-to-all;
    # 4 KV heads -> 2 per TP rank (no replication). b 1, S 4096, d 64, bf16.
    cfg = RunConfig(ulysses=2, ring=1, tp=2, seq_len=4096, num_heads=8, num_kv_heads=4, head_dim=64,
                    dtype="bfloat16", causal=False)
    got = predict(cfg, _flat_hardware(), gpus_per_node=8)
    # Flash forward 4 * S * S * d * heads = 4 * 4096^2 * 64 * 2 FLOPs at 50 TFLOP/s; backward 2.5x at 40.
    flops = 4 * 4096 * 4096 * 64 * 2
    kernels = flops / 50e12 + 2.5 * flops / 40e12
    # All-to-alls: per tensor 2048 local tokens x heads x 64 x 2 B, half of it sent, at 100 GB/s;
    # forward Q, O (4 heads) and K, V (2 heads), backward the same.
    q_bytes, kv_bytes = 2048 * 4 * 64 * 2 / 2, 2048 * 2 * 64 * 2 / 2
    a2a = 2 * (2 * q_bytes + 2 * kv_bytes) / 100e9
    # Each all-to-all'd tensor's two layout copies (seq_to_head / head_to_seq: .contiguous() before,
    # the permuted reshape after), a read and a write of its 2048 x heads x 64 bf16 elements, forward
    # and backward, through 1e12 B/s HBM at the default memory-bound share.
    copies = 2 * 2 * 2 * 2048 * (4 + 4 + 2 + 2) * 64 * 2 / (1e12 * MEMORY_BOUND_DEFAULT)
    assert got.time_s == pytest.approx(kernels + a2a + copies, rel=1e-12)
    # The plan's layer figure (attention_layer_memory_bytes), named in the note beside the replay of
    # sp-run's own step that is the prediction: 2048 tokens, q 4 x 64 and kv 2 x 64 elements per token,
    # both sides of the all-to-all: Q, K, V, O (2 x 2048 x 768 x 2 B), fp32 LSE (4 x 2048 x 4),
    # dO on both sides (2 x 2048 x 256 x 2), dQ, dK, dV where attention runs and sent back
    # (2 x 2048 x 512 x 2).
    q, kv = 2048 * 4 * 64, 2048 * 2 * 64
    forward = 2 * (2 * q + 2 * kv) * 2
    backward = 2 * q * 2 + 2 * (q + 2 * kv) * 2
    assert f"counts {forward + 4 * 2048 * 4 + backward:,} bytes for a framework's attention layer" in got.note
    assert got.memory_bytes == step_peak_bytes(cfg)


def test_plan_prediction_uses_one_tp_ranks_heads():
    from sp_planner.catalog.hardware import load_hardware
    from sp_planner.cost.attention import attention_layer_memory_bytes
    from sp_planner.executor.predict import predict

    cfg = RunConfig(ulysses=2, ring=2, tp=2, seq_len=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                    dtype="bfloat16", causal=True, ring_layout="zigzag")
    got = predict(cfg, load_hardware("h100-sxm"), gpus_per_node=8)
    assert got.time_s > 0
    # 16 query heads and 4 KV heads per TP rank reach the plan's layer figure (in the note) and the
    # replay of the step (the prediction; one TP rank's heads, as executor.config.heads_per_tp_rank)
    layer = attention_layer_memory_bytes(
        batch=1, seq_len=4096, num_heads=16, num_kv_heads=4, head_dim=128, ulysses=2, ring=2, elem_bytes=2)
    assert f"counts {layer:,} bytes" in got.note
    assert got.memory_bytes == step_peak_bytes(cfg.model_copy(update=dict(tp=1, num_heads=16, num_kv_heads=4)))
    assert "h100" in got.note.lower()


def test_a_cuda_run_is_predicted_with_the_kernel_sp_run_runs():
    # A Megatron plan on an H200 carries cuDNN's curves; sp-run's bf16 CUDA run calls aten's flash
    # op (SDPA's flash backend), measured on an H200 at about 0.36 of peak forward against cuDNN's ~0.6.
    from sp_planner.catalog.hardware import load_hardware
    from sp_planner.cost.attention import attention_layer_time_s
    from sp_planner.cost.attention_kernels import with_attention_kernel
    from sp_planner.executor.predict import predict

    h200 = load_hardware("h200")
    plan_hardware = with_attention_kernel(h200, "cudnn")
    shape = dict(ulysses=1, ring=2, seq_len=65536, num_heads=16, num_kv_heads=16, head_dim=128,
                 dtype="bfloat16", causal=True, ring_layout="zigzag")

    def layer_s(hardware):
        return attention_layer_time_s(hardware, batch=1, seq_len=65536, num_heads=16, num_kv_heads=16,
                                      head_dim=128, tp=1, ulysses=1, ring=2, causal=True, ring_layout="zigzag",
                                      gpus_per_node=8, elem_bytes=2)

    cuda = predict(RunConfig(**shape, device="cuda"), plan_hardware, gpus_per_node=8)
    assert cuda.time_s == pytest.approx(layer_s(with_attention_kernel(h200, "sdpa")), rel=1e-12)
    assert cuda.time_s > 1.4 * layer_s(plan_hardware)  # the plan's cuDNN curves would be far too fast
    assert "SDPA flash curves" in cuda.note
    # On CPU no curve of sp-run's kernel exists: the profile's own, said so.
    cpu = predict(RunConfig(**shape, device="cpu"), plan_hardware, gpus_per_node=8)
    assert cpu.time_s == pytest.approx(layer_s(plan_hardware), rel=1e-12)
    assert "profile's own attention curves" in cpu.note


def test_a_calibrated_profile_keeps_its_own_curves():
    from pathlib import Path

    from sp_planner.catalog.hardware import read_hardware_file
    from sp_planner.executor.predict import executor_kernel_hardware

    measured = read_hardware_file(Path(__file__).resolve().parents[2] / "hardware_profiles" / "measured"
                                  / "h200-2026-12-04.yaml")
    cfg = RunConfig(ulysses=1, ring=1, seq_len=1024, num_heads=4, num_kv_heads=4, head_dim=64, dtype="bfloat16",
                    device="cuda")
    hardware, curves = executor_kernel_hardware(cfg, measured)
    assert hardware == measured and "sp-calibrate" in curves


def test_a_plan_whose_framework_rings_otherwise_names_its_own_bytes():
    # ring 4, one K (or V) block 1 x 256 tokens x 2 KV heads x 8 = 4096 elements, bf16. The executor
    # (yunchang's ring): K/V 2 x 3 hops x 2 B each way (49,152 forward, 49,152 backward) and dK/dV in
    # fp32 for 4 hops, 2 x 4 x 4096 x 4 = 131,072: 229,376. Megatron's (Transformer Engine's ring):
    # dK/dV in bf16 for 3 hops, 49,152: 147,456, which the note names.
    from sp_planner.executor.predict import predict

    cfg = RunConfig(ulysses=1, ring=4, seq_len=1024, num_heads=4, num_kv_heads=2, head_dim=8, dtype="bfloat16")
    assert predict(cfg).comm_bytes.p2p == 229_376
    assert "sends 147,456 per layer" in predict(cfg, framework="megatron").note
    assert "ring bytes" not in predict(cfg, framework="yunchang").note  # the same ring


def test_blocks_beyond_a_calibrated_curve_are_named():
    # The measured H200 profile's attention curves: a block past their last point takes its
    # efficiency, and the note says so (a spec-sheet profile's curves are left unremarked).
    from pathlib import Path

    from sp_planner.catalog.hardware import load_hardware, read_hardware_file
    from sp_planner.executor.predict import predict

    measured = read_hardware_file(Path(__file__).resolve().parents[2] / "hardware_profiles" / "measured"
                                  / "h200-2026-12-04.yaml")
    reach = measured.efficiency.attention_fwd[-1].tokens
    long = RunConfig(ulysses=1, ring=2, seq_len=4 * reach, num_heads=4, num_kv_heads=4, head_dim=64,
                     dtype="bfloat16", device="cuda")
    assert f"({2 * reach:,} tokens) are longer than its measured curves reach" in predict(long, measured, 8).note
    short = long.model_copy(update={"seq_len": reach})
    assert "longer than its measured curves" not in predict(short, measured, 8).note
    assert "longer than its measured curves" not in predict(long, load_hardware("h200"), 8).note
