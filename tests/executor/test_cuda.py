"""The executor on a real CUDA device: skipped where none is visible (a skip is not a pass: the
same paths run on CPU in tests/executor/test_cuda_paths.py and test_comm_staging.py).

On a GPU this runs the flash and memory-efficient kernels forward and backward against the fp32
reference (flash-attention's 2x rule), the calibration kernels on a tiny shape, sp-run with one
NCCL rank, and the multi-rank paths with gloo ranks sharing the one GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernel_check import KernelShape, kernel_accuracy
from sp_planner.executor.kernels import CudaEfficientKernel, CudaFlashKernel, check_kernel
from sp_planner.executor.predict import predicted_comm_bytes
from sp_planner.executor.result import rank_failures

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

KERNELS = [CudaFlashKernel, CudaEfficientKernel]


@pytest.mark.parametrize("kernel_type", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(8, 2, 64), (8, 8, 128)])
def test_kernel_meets_the_2x_rule(kernel_type, dtype, causal, heads, kv_heads, head_dim):
    shape = KernelShape(batch=2, seq_len=1000, heads=heads, kv_heads=kv_heads, head_dim=head_dim, causal=causal)
    result = kernel_accuracy(kernel_type(), "cuda", dtype, shape)
    assert result.passed, result
    assert result.max_abs_err.lse < 1e-2


def test_efficient_kernel_in_fp32():
    shape = KernelShape(batch=1, seq_len=300, heads=4, kv_heads=2, head_dim=64, causal=True)
    assert kernel_accuracy(CudaEfficientKernel(), "cuda", torch.float32, shape).passed


@pytest.mark.parametrize("kernel_type", KERNELS)
def test_kernels_pass_the_guard(kernel_type):
    check_kernel(kernel_type(), "cuda", torch.bfloat16)


def test_calibration_kernels_on_a_tiny_shape():
    from sp_planner.calibration.schedule import CalibrationSchedule, GemmShape
    from sp_planner.executor.calibrate.compute import measure_attention, measure_copy, measure_gemm

    schedule = CalibrationSchedule(
        device="cuda", dtype="bfloat16", world_size=1, ranks_per_node=1, sizes_bytes=(65536,), groups=(),
        gemm=(GemmShape(name="qkv", m=256, k=512, n=768),), attention_tokens=(256, 1024), attention_heads=4,
        attention_head_dim=128, attention_batch_tokens=2048, copy_sizes_bytes=(1 << 20,), warmup=1, iters=2)
    device, stages = torch.device("cuda", 0), []
    gemm = measure_gemm(schedule, device, torch.bfloat16, 0, stages.append)
    attention = measure_attention(schedule, device, torch.bfloat16, 0, stages.append)
    copy = measure_copy(schedule, device, 0, stages.append)
    assert len(gemm) == 1 and len(attention) == 2 * 2 * 2 and len(copy) == 1  # lengths x masks x fwd/bwd
    assert all(s.time_s > 0 for s in (*gemm, *attention, *copy))


def test_sp_run_one_nccl_rank(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "sp_planner.cli.run_cmd", "--device", "cuda", "--seq-len", "2048", "--heads", "8",
         "--kv-heads", "2", "--head-dim", "128", "--causal", "--dtype", "bfloat16", "--iters", "2",
         "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0")))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["passed"] and result["kernel"].startswith("cuda-flash")
    assert result["comm_bytes_measured"] == result["comm_bytes_predicted"] == {"all_to_all": 0, "p2p": 0}


@pytest.mark.parametrize(("ulysses", "ring", "layout"), [(2, 1, "contiguous"), (1, 2, "zigzag"),
                                                          (1, 2, "contiguous")])
def test_two_gloo_ranks_on_one_gpu(tmp_path, ulysses, ring, layout):
    from sp_planner.executor.spawn import run_cases

    cfg = RunConfig(ulysses=ulysses, ring=ring, seq_len=512, num_heads=8, num_kv_heads=2, head_dim=128,
                    causal=True, ring_layout=layout, dtype="bfloat16", device="cuda", iters=0)
    outcomes = run_cases(2, [cfg], tmp_path, device="cuda")
    for rank in range(2):
        result = outcomes[rank][0]
        assert not isinstance(result, str), result
        assert rank_failures(result, predicted_comm_bytes(cfg)) == []
        assert result.kernel.startswith("cuda-flash")
