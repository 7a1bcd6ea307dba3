"""Seeded global inputs and the fp32 single-device reference every rank checks its shard against."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernels import AttentionKernel


class Tensors(NamedTuple):
    out: torch.Tensor
    dq: torch.Tensor
    dk: torch.Tensor
    dv: torch.Tensor


class GlobalInputs(NamedTuple):
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor


def global_inputs(cfg: RunConfig, device: torch.device) -> GlobalInputs:
    """Full (b, S, heads, d) fp32 tensors, identical on every rank (CPU generator, then moved)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch, cfg.seq_len)
    heads, kv = cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank
    q, k, v, dout = (torch.randn(*shape, n, cfg.head_dim, generator=gen) for n in (heads, kv, kv, heads))
    return GlobalInputs(*(t.to(device) for t in (q, k, v, dout)))


def reference_attention(inputs: GlobalInputs, *, causal: bool) -> Tensors:
    """Plain softmax attention in fp32 with autograd gradients (independent of our kernels)."""
    q, k, v = (t.detach().float().requires_grad_() for t in inputs[:3])
    groups = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2)  # (b, S, h, d) -> (b, h, S, d)
    kh, vh = (t.transpose(1, 2).repeat_interleave(groups, dim=1) for t in (k, v))  # -> (b, h, S, d)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        s = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2)  # (b, h, S, d) -> (b, S, h, d)
    out.backward(inputs.dout.float())
    return Tensors(out.detach(), q.grad, k.grad, v.grad)


def single_device_run(inputs: GlobalInputs, *, causal: bool, kernel: AttentionKernel,
                      dtype: torch.dtype) -> Tensors:
    """The same kernel on the full tensors in the run dtype: the error a bf16/fp16 run may have."""
    q, k, v, dout = (t.to(dtype) for t in inputs)
    scale = 1.0 / math.sqrt(q.shape[-1])
    out, lse = kernel.forward(q, k, v, causal=causal, scale=scale)
    dq, dk, dv = kernel.backward(dout, q, k, v, out, lse, causal=causal, scale=scale)
    return Tensors(out, dq, dk, dv)
