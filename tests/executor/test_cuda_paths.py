"""The CUDA call paths, run on CPU through stand-ins for the CUDA ops (tests/executor/cuda_standins):
the kernels' op calls, the calibration's flash backward, the head-dim rule, the GPU-count check.
tests/executor/test_cuda.py runs the same paths on a real GPU where one is present."""

from __future__ import annotations

import math

import pytest
import torch

from sp_planner.cli.run_cmd import main
from sp_planner.errors import UserInputError
from sp_planner.executor.calibrate.compute import _flash
from sp_planner.executor.config import RunConfig, config_problems
from sp_planner.executor.devices import check_local_gpus
from sp_planner.executor.kernel_check import KernelShape, kernel_accuracy
from sp_planner.executor.kernel_rules import head_dim_problem, kernel_problems
from sp_planner.executor.kernels import CpuFlashKernel, CudaEfficientKernel, CudaFlashKernel, MathKernel, check_kernel

from .cuda_standins import _flash_bwd, cuda_ops_on_cpu

KERNELS = [CudaFlashKernel, CudaEfficientKernel]


@pytest.fixture
def cuda_ops():
    with cuda_ops_on_cpu():
        yield


@pytest.mark.parametrize("kernel_type", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 1, 64), (4, 4, 128)])
def test_cuda_kernel_calls_meet_the_2x_rule(cuda_ops, kernel_type, dtype, causal, heads, kv_heads, head_dim):
    # seq 40: not a multiple of the efficient kernel's 32-row LSE padding.
    shape = KernelShape(batch=2, seq_len=40, heads=heads, kv_heads=kv_heads, head_dim=head_dim, causal=causal)
    result = kernel_accuracy(kernel_type(), "cpu", dtype, shape)
    assert result.passed, result
    assert result.max_abs_err.lse < 1e-3  # the LSE is the fp32 one, not zeros or another base


@pytest.mark.parametrize("kernel_type", KERNELS)
def test_cuda_kernels_pass_the_guard(cuda_ops, kernel_type):
    check_kernel(kernel_type(), "cpu", torch.bfloat16)


@pytest.mark.parametrize("kernel_type", KERNELS)
def test_ring_block_with_fewer_keys_than_queries(cuda_ops, kernel_type):
    # A zigzag step attends half the visiting block: backward's max lengths must be the block's.
    gen = torch.Generator().manual_seed(3)
    q, dout = (torch.randn(1, 16, 4, 64, generator=gen).bfloat16() for _ in range(2))
    k, v = (torch.randn(1, 8, 2, 64, generator=gen).bfloat16() for _ in range(2))
    kernel, scale = kernel_type(), 1 / 8
    out, lse = kernel.forward(q, k, v, causal=False, scale=scale)
    grads = kernel.backward(dout, q, k, v, out, lse, causal=False, scale=scale)
    ref = MathKernel().backward(dout, q, k, v, out, lse, causal=False, scale=scale)
    for got, want in zip(grads, ref):
        assert got.shape == want.shape
        torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=0)


def test_the_standin_rejects_float32_cumulative_lengths():
    # What sp-calibrate --device cuda did before: a defined float32 cum_seq_q.
    x = torch.zeros(1, 2, 4, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="cu_seqlens_q must have dtype int32"):
        _flash_bwd(x, x, x, x, x, torch.zeros(1, 2, 4), torch.empty(0), torch.empty(0), 4, 4, 0.0, False,
                   torch.empty(0), torch.empty(0), scale=0.3)


@pytest.mark.parametrize("causal", [False, True])
def test_calibration_flash_backward_runs_the_dense_kernel(cuda_ops, causal):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 48, 64, generator=gen).bfloat16() for _ in range(3))  # (b, h, s, d)
    fwd, bwd = _flash(torch.device("cuda"), q, k, v, causal, 1 / math.sqrt(64))
    out = fwd()[0]
    dq, dk, dv = bwd()
    assert out.shape == dq.shape == dk.shape == dv.shape == q.shape
    assert all(bool(torch.isfinite(t.float()).all()) for t in (dq, dk, dv))


@pytest.mark.parametrize(("kernel", "head_dim", "elem_bytes", "refused"), [
    ("flash", 128, 2, False), ("flash", 256, 2, False), ("flash", 8, 2, False),
    ("flash", 264, 2, True), ("flash", 100, 2, True), ("flash", 4, 2, True),
    ("efficient", 100, 4, False), ("efficient", 300, 4, False), ("efficient", 102, 4, True),
    ("efficient", 100, 2, True),
])
def test_head_dim_rule(kernel, head_dim, elem_bytes, refused):
    assert (head_dim_problem(kernel, head_dim, elem_bytes) is not None) == refused


def test_head_dim_rule_in_config_problems_only_for_cuda_kernels():
    base = dict(ulysses=1, ring=1, seq_len=64, num_heads=4, num_kv_heads=4, head_dim=100, dtype="bfloat16")
    assert config_problems(RunConfig(**base)) == []  # CPU flash takes any head dim
    assert config_problems(RunConfig(**base, device="cuda", kernel="math")) == []
    assert config_problems(RunConfig(**base, device="cuda")) == kernel_problems(
        device="cuda", kernel="auto", head_dim=100, elem_bytes=2)
    (line,) = config_problems(RunConfig(**base, device="cuda"))
    assert "head dim 100: CUDA flash attention needs a multiple of 8 up to 256" in line and "--kernel math" in line


def test_bad_cuda_head_dim_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--device", "cuda", "--seq-len", "64", "--heads", "4", "--head-dim", "300", "--dtype", "bfloat16"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "head dim 300: CUDA flash attention needs a multiple of 8 up to 256" in err and err.count("\n") == 1


def test_more_cuda_ranks_than_gpus_is_refused():
    with pytest.raises(UserInputError, match="2 local ranks on --device cuda need one CUDA device each .* but 1 are"):
        check_local_gpus("cuda", 2, "torchrun ...", gpus=1)
    check_local_gpus("cuda", 2, "torchrun ...", gpus=2)
    check_local_gpus("cpu", 8, "torchrun ...", gpus=0)


def test_nproc_does_not_skip_the_gpu_count(capsys):
    # --nproc 2 equals ulysses*ring, which used to be enough to launch rank 1 on a missing GPU.
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= 2:
        pytest.skip("this machine has 2+ GPUs: --nproc 2 fits")
    with pytest.raises(SystemExit) as done:
        main(["--ring", "2", "--nproc", "2", "--device", "cuda", "--seq-len", "64", "--heads", "4",
              "--head-dim", "64", "--dtype", "bfloat16"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"2 local ranks on --device cuda need one CUDA device each (NCCL refuses two ranks on one device) " \
           f"but {gpus} are visible here" in err and err.count("\n") == 1


@pytest.mark.parametrize("head_dim", [8, 64, 128, 256])
def test_the_guard_runs_at_the_runs_head_dim(cuda_ops, head_dim):
    check_kernel(CudaFlashKernel(), "cpu", torch.bfloat16, head_dim)


def test_the_guard_names_the_head_dim_it_failed_at():
    class _ZeroLse(MathKernel):
        name = "zero-lse"

        def forward(self, q, k, v, *, causal, scale):
            out, lse = super().forward(q, k, v, causal=causal, scale=scale)
            return out, torch.zeros_like(lse)

    with pytest.raises(RuntimeError, match="wrong log-sum-exp at head dim 96"):
        check_kernel(_ZeroLse(), "cpu", torch.float32, 96)


def test_the_2x_rule_rejects_a_kernel_with_a_wrong_lse():
    class _ShiftedLse(CpuFlashKernel):  # natural-log LSE off by log(2): a base-2 LSE would do this
        def forward(self, q, k, v, *, causal, scale):
            out, lse = super().forward(q, k, v, causal=causal, scale=scale)
            return out, lse + math.log(2)

    shape = KernelShape(batch=1, seq_len=32, heads=4, kv_heads=2, head_dim=64, causal=True)
    result = kernel_accuracy(_ShiftedLse(), "cpu", torch.bfloat16, shape)
    assert not result.passed and result.max_abs_err.lse > result.bound.lse
