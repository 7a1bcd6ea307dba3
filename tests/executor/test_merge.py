"""The fp32 log-sum-exp merge (sp_planner.executor.merge) against one softmax over all keys."""

import math

import torch

from sp_planner.executor.kernels import MathKernel
from sp_planner.executor.merge import merge_partial


def _inputs(seed=0, b=2, s=6, h=3, d=4, keys=10):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, s, h, d, generator=gen)
    k = torch.randn(b, keys, h, d, generator=gen) * 3  # spread the scores so the max matters
    v = torch.randn(b, keys, h, d, generator=gen)
    return q, k, v


def _softmax_attention(q, k, v):
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhst,bthd->bshd", torch.softmax(scores, dim=-1), v), torch.logsumexp(scores, dim=-1)


def test_merging_key_blocks_equals_full_softmax():
    q, k, v = _inputs()
    scale = 1 / math.sqrt(q.shape[-1])
    out_full, lse_full = _softmax_attention(q, k, v)
    blocks = [slice(0, 3), slice(3, 7), slice(7, 10)]
    out, lse = MathKernel().forward(q, k[:, blocks[0]], v[:, blocks[0]], causal=False, scale=scale)
    for rows in blocks[1:]:
        out_b, lse_b = MathKernel().forward(q, k[:, rows], v[:, rows], causal=False, scale=scale)
        out, lse = merge_partial(out, lse, out_b, lse_b)
    torch.testing.assert_close(out, out_full, atol=1e-6, rtol=0)
    torch.testing.assert_close(lse, lse_full, atol=1e-6, rtol=0)


def test_zero_lse_trap_gives_a_wrong_merge():
    """A kernel that returns zeros for the LSE (yunchang TORCH_MATH) merges two halves with equal
    weights; the result is wrong, which is why kernels are checked before use."""
    q, k, v = _inputs(seed=1)
    scale = 1 / math.sqrt(q.shape[-1])
    out_full, _ = _softmax_attention(q, k, v)
    out_a, lse_a = MathKernel().forward(q, k[:, :5], v[:, :5], causal=False, scale=scale)
    out_b, lse_b = MathKernel().forward(q, k[:, 5:], v[:, 5:], causal=False, scale=scale)
    merged, _ = merge_partial(out_a, torch.zeros_like(lse_a), out_b, torch.zeros_like(lse_b))
    assert (merged - out_full).abs().max() > 0.05
    torch.testing.assert_close(merged, (out_a + out_b) / 2, atol=1e-6, rtol=0)
