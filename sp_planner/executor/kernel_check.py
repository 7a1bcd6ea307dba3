"""Accuracy of one local attention kernel against the fp32 reference, by flash-attention's rule.

A kernel in bf16/fp16 is correct when the error of its O, LSE, dQ, dK, dV against the fp32
reference (the explicit math kernel on the same rounded inputs) is at most twice the error of a
plain same-dtype PyTorch implementation, plus one ulp at the largest reference value
(flash-attention's tests/test_flash_attn.py; sp_planner.executor.case uses the same rule for
runs). In fp32 the bound is a fixed 1e-4 (inputs are O(1)).

Used by the kernel tests (CPU, and CUDA where present) and by `make gpu-check` step 1.
"""

from __future__ import annotations

import math

import torch

from sp_planner.executor.kernels import AttentionKernel, MathKernel
from sp_planner.executor.result import TensorErrors
from sp_planner.specs.base import FrozenModel

FIELDS = ("out", "lse", "dq", "dk", "dv")
FP32_BOUND = 1e-4


class KernelShape(FrozenModel):
    batch: int
    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool


class KernelErrors(TensorErrors):
    """Max absolute error per output (or the bound for each), the LSE included."""

    lse: float


class KernelAccuracy(FrozenModel):
    kernel: str
    device: str
    dtype: str
    shape: KernelShape
    max_abs_err: KernelErrors
    bound: KernelErrors
    passed: bool


def _plain(q, k, v, dout, *, causal: bool, scale: float):
    """Attention with every op in the inputs' dtype, autograd for the gradients (the rule's
    baseline). (b, s, h, d) in and out; GQA by repeating KV heads."""
    heads = q.shape[2]
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    qh, kh, vh = (x.transpose(1, 2) for x in leaves)  # (b, s, h, d) -> (b, h, s, d)
    kh, vh = (x.repeat_interleave(heads // x.shape[1], dim=1) for x in (kh, vh))
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if causal:
        sq, sk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(sq, sk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    lse = torch.logsumexp(scores.float(), dim=-1)
    out = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2)  # (b, h, s, d) -> (b, s, h, d)
    out.backward(dout)
    return out.detach(), lse.detach(), *(leaf.grad for leaf in leaves)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def kernel_accuracy(kernel: AttentionKernel, device: str, dtype: torch.dtype, shape: KernelShape,
                    seed: int = 0) -> KernelAccuracy:
    """Run `kernel` forward and backward once on seeded inputs and compare with the reference."""
    gen = torch.Generator().manual_seed(seed)
    b, s, d = shape.batch, shape.seq_len, shape.head_dim
    q, k, v, dout = (torch.randn(b, s, n, d, generator=gen).to(device=device, dtype=dtype)
                     for n in (shape.heads, shape.kv_heads, shape.kv_heads, shape.heads))
    scale = 1.0 / math.sqrt(d)
    ref_out, ref_lse = MathKernel().forward(q.float(), k.float(), v.float(), causal=shape.causal, scale=scale)
    ref = (ref_out, ref_lse, *MathKernel().backward(dout.float(), q.float(), k.float(), v.float(), ref_out, ref_lse,
                                                    causal=shape.causal, scale=scale))
    out, lse = kernel.forward(q, k, v, causal=shape.causal, scale=scale)
    # Backward from the kernel's own forward, as a local attention runs it.
    got = (out, lse, *kernel.backward(dout, q, k, v, out, lse, causal=shape.causal, scale=scale))
    errors = {name: _max_abs(g, r) for name, g, r in zip(FIELDS, got, ref)}
    if dtype == torch.float32:
        bounds = {name: FP32_BOUND for name in FIELDS}
    else:
        plain = _plain(q, k, v, dout, causal=shape.causal, scale=scale)
        eps = torch.finfo(dtype).eps
        bounds = {name: 2 * _max_abs(p, r) + eps * float(r.abs().max()) for name, p, r in zip(FIELDS, plain, ref)}
    shapes_ok = all(g.shape == r.shape for g, r in zip(got, ref))
    return KernelAccuracy(kernel=kernel.name, device=device, dtype=str(dtype).removeprefix("torch."), shape=shape,
                          max_abs_err=KernelErrors(**errors), bound=KernelErrors(**bounds),
                          passed=shapes_ok and all(errors[n] <= bounds[n] for n in FIELDS))
