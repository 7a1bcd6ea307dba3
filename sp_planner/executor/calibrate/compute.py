"""Time the kernels the cost model prices: layer GEMMs, flash attention fwd/bwd, memory copies.

Attention calls PyTorch's flash ops directly on contiguous (b, h, s, d) tensors (through the op
calls sp_planner.executor.kernels shares), so the timed region holds the kernel only (the kernel
classes transpose from (b, s, h, d) on every call, right for a run but it would time the copies).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from sp_planner.calibration.measurements import AttentionSample, CopySample, GemmSample
from sp_planner.calibration.schedule import CalibrationSchedule
from sp_planner.executor.calibrate.timing import mean_time_s
from sp_planner.executor.kernels import cuda_flash_backward, cuda_flash_forward


def measure_gemm(schedule: CalibrationSchedule, device: torch.device, dtype: torch.dtype, rank: int,
                 stage: Callable[[str], None]) -> list[GemmSample]:
    gen = torch.Generator(device="cpu").manual_seed(rank)
    samples = []
    for shape in schedule.gemm:
        stage(f"GEMM {shape.name} {shape.m}x{shape.k}x{shape.n}")
        a = torch.randn(shape.m, shape.k, generator=gen).to(device=device, dtype=dtype)
        b = torch.randn(shape.k, shape.n, generator=gen).to(device=device, dtype=dtype)
        out = torch.empty(shape.m, shape.n, device=device, dtype=dtype)
        time_s = mean_time_s(lambda: torch.matmul(a, b, out=out), device, warmup=schedule.warmup,
                             iters=schedule.iters)
        samples.append(GemmSample(name=shape.name, m=shape.m, n=shape.n, k=shape.k, rank=rank, time_s=time_s))
    return samples


def _flash(device: torch.device, q, k, v, causal: bool, scale: float):
    """(forward closure, backward closure) of the flash kernel for this device, both on (b, h, s, d)."""
    aten = torch.ops.aten
    dout = torch.randn_like(q)
    if device.type == "cuda":
        out, lse, state = cuda_flash_forward(q, k, v, causal=causal, scale=scale)

        def fwd():
            return cuda_flash_forward(q, k, v, causal=causal, scale=scale)

        def bwd():  # with the forward's own state: no cumulative lengths (dense), unused philox
            return cuda_flash_backward(dout, q, k, v, out, lse, state, causal=causal, scale=scale)
    else:
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)

        def fwd():
            return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)

        def bwd():
            return aten._scaled_dot_product_flash_attention_for_cpu_backward(
                dout, q, k, v, out, lse, 0.0, causal, scale=scale)
    return fwd, bwd


def measure_attention(schedule: CalibrationSchedule, device: torch.device, dtype: torch.dtype, rank: int,
                      stage: Callable[[str], None]) -> list[AttentionSample]:
    gen = torch.Generator(device="cpu").manual_seed(1000 + rank)
    heads, head_dim = schedule.attention_heads, schedule.attention_head_dim
    scale = 1.0 / math.sqrt(head_dim)
    samples = []
    for tokens in schedule.attention_tokens:
        batch = max(1, schedule.attention_batch_tokens // tokens)
        q, k, v = (torch.randn(batch, heads, tokens, head_dim, generator=gen).to(device=device, dtype=dtype)
                   for _ in range(3))
        for causal in (False, True):
            stage(f"attention {'causal' if causal else 'full'} at {tokens} tokens")
            fwd, bwd = _flash(device, q, k, v, causal, scale)
            for direction, fn in (("fwd", fwd), ("bwd", bwd)):
                time_s = mean_time_s(fn, device, warmup=schedule.warmup, iters=schedule.iters)
                samples.append(AttentionSample(direction=direction, causal=causal, batch=batch, heads=heads,
                                               tokens=tokens, head_dim=head_dim, rank=rank, time_s=time_s))
    return samples


def measure_copy(schedule: CalibrationSchedule, device: torch.device, rank: int,
                 stage: Callable[[str], None]) -> list[CopySample]:
    samples = []
    for size in schedule.copy_sizes_bytes:
        stage(f"memory copy of {size} bytes")
        src = torch.ones(size, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        time_s = mean_time_s(lambda: dst.copy_(src), device, warmup=schedule.warmup, iters=schedule.iters)
        samples.append(CopySample(size_bytes=size, rank=rank, time_s=time_s))
    return samples
