"""Local kernels (sp_planner.executor.kernels): LSE of the math fallback, agreement, the LSE guard."""

import math

import pytest
import torch

from sp_planner.executor.kernels import (
    CpuFlashKernel,
    CudaEfficientKernel,
    CudaFlashKernel,
    MathKernel,
    check_kernel,
    select_kernel,
)


def _qkv(heads=4, kv_heads=2, s=7, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, s, n, d, generator=gen) for n in (heads, kv_heads, kv_heads, heads))


@pytest.mark.parametrize("causal", [False, True])
def test_math_kernel_lse_is_logsumexp_of_scaled_scores(causal):
    q, k, v, _ = _qkv()
    scale = 1 / math.sqrt(8)
    _, lse = MathKernel().forward(q, k, v, causal=causal, scale=scale)
    # query head h uses kv head h // 2
    scores = torch.einsum("bshd,bthd->bhst", q, k.repeat_interleave(2, dim=2)) * scale
    if causal:
        scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1), atol=1e-6, rtol=0)
    if causal:  # the first query sees only the first key: lse = its score
        torch.testing.assert_close(lse[..., 0], scores[..., 0, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_math_kernel_gradients_match_autograd(causal):
    q, k, v, dout = _qkv()
    scale = 1 / math.sqrt(8)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = MathKernel().forward(*leaves, causal=causal, scale=scale)
    out.backward(dout)
    grads = MathKernel().backward(dout, q, k, v, out.detach(), lse.detach(), causal=causal, scale=scale)
    for got, leaf in zip(grads, leaves):
        torch.testing.assert_close(got, leaf.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cpu_flash_kernel_passes_the_guard(dtype):
    check_kernel(CpuFlashKernel(), "cpu", dtype)


class _ZeroLseKernel(MathKernel):
    name = "zero-lse"

    def forward(self, q, k, v, *, causal, scale):
        out, lse = super().forward(q, k, v, causal=causal, scale=scale)
        return out, torch.zeros_like(lse)


def test_guard_rejects_a_kernel_with_zero_lse():
    with pytest.raises(RuntimeError, match="wrong log-sum-exp"):
        check_kernel(_ZeroLseKernel(), "cpu", torch.float32)


def test_fallback_is_selected_explicitly_and_reported():
    kernel, note = select_kernel("cuda", torch.float32, "auto")
    assert isinstance(kernel, CudaEfficientKernel) and "does not support torch.float32" in note
    kernel, note = select_kernel("cuda", torch.bfloat16, "auto")
    assert isinstance(kernel, CudaFlashKernel) and note is None
    kernel, note = select_kernel("cpu", torch.bfloat16, "auto")
    assert isinstance(kernel, CpuFlashKernel) and note is None
    kernel, note = select_kernel("cpu", torch.float32, "math")
    assert isinstance(kernel, MathKernel) and "requested" in note
