"""CPU stand-ins for the CUDA attention ops, so the CUDA call paths run without a GPU.

Registered on the CPU dispatch key of the real aten ops (torch.library), they check the
arguments as the CUDA kernels do (torch 2.11: flash_api.cpp, attention_backward.cu) and compute
with PyTorch's CPU flash kernel. What they check:
- flash forward: fp16/bf16 only; head dim a multiple of 8 up to 256; returns cum_seq_q/k
  undefined (None) for dense inputs, as _scaled_dot_product_flash_attention_cuda does.
- flash backward: a defined cum_seq_q/k selects the varlen kernel, which requires int32
  ("cu_seqlens_q must have dtype int32") and is not the dense kernel we call; max_q/max_k
  must be the block's lengths.
- efficient forward: LSE padded to a multiple of 32 queries (the padding filled with NaN here,
  so a caller that fails to slice it off is caught); backward wants it padded the same way.
- efficient backward, fp16/bf16: the kernel reads `out` at a sequence stride of heads x
  head_dim whatever its strides (mem_eff_attention/kernel_backward.h Params::o_strideM), so
  an `out` in any other layout gives wrong dq and dk on a GPU (seen on an H200, 2026-12-04);
  the stand-in refuses it.
"""

from __future__ import annotations

import contextlib

import torch

ALIGN = 32


def _flash_fwd(q, k, v, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None):
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError("FlashAttention only support fp16 and bf16 data type")
    d = q.shape[-1]
    if d > 256 or d % 8:
        raise RuntimeError(f"head dim {d}: FlashAttention needs a multiple of 8 up to 256")
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, scale=scale)
    seed = torch.zeros(2, dtype=torch.int64)
    return out, lse, None, None, q.shape[2], k.shape[2], seed, torch.empty(0, dtype=torch.int64), torch.empty(0)


def _flash_bwd(dout, q, k, v, out, lse, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal, seed, offset,
               *, scale=None):
    for name, t in (("cu_seqlens_q", cum_seq_q), ("cu_seqlens_k", cum_seq_k)):
        if t is not None:
            if t.dtype != torch.int32:
                raise RuntimeError(f"{name} must have dtype int32")
            raise RuntimeError(f"{name} given: the varlen kernel expects (total, h, d) inputs")
    if (max_q, max_k) != (q.shape[2], k.shape[2]):
        raise RuntimeError(f"max_q/max_k {max_q}/{max_k} differ from the block's {q.shape[2]}/{k.shape[2]}")
    if lse.shape != (*q.shape[:2], q.shape[2]) or lse.dtype != torch.float32:
        raise RuntimeError(f"logsumexp of shape {tuple(lse.shape)} {lse.dtype}")
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        dout, q, k, v, out, lse, dropout_p, is_causal, scale=scale)


def _padded(s: int) -> int:
    return -(-s // ALIGN) * ALIGN


def _efficient_fwd(q, k, v, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False, *, scale=None):
    if attn_bias is not None or not compute_log_sumexp:
        raise RuntimeError("stand-in covers attn_bias=None, compute_log_sumexp=True only")
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, scale=scale)
    padded = torch.full((*lse.shape[:2], _padded(q.shape[2])), float("nan"))
    padded[..., :q.shape[2]] = lse
    return out, padded, torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)


def _efficient_bwd(dout, q, k, v, attn_bias, out, lse, seed, offset, dropout_p, grad_input_mask, is_causal=False,
                   *, scale=None):
    if lse.shape[-1] != _padded(q.shape[2]):
        raise RuntimeError(f"logsumexp has {lse.shape[-1]} rows, the kernel wants {_padded(q.shape[2])}")
    b, h, s, d = out.shape  # (b, h, s, d), as the op takes it
    if q.dtype != torch.float32 and s > 1 and out.stride(2) != h * d:
        raise RuntimeError(f"out has sequence stride {out.stride(2)}; the kernel reads it at heads x head_dim "
                           f"= {h * d}")
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        dout, q, k, v, out, lse[..., :q.shape[2]].contiguous(), dropout_p, is_causal, scale=scale)
    return dq, dk, dv, None


@contextlib.contextmanager
def cuda_ops_on_cpu():
    """Within the block, the CUDA attention ops accept CPU tensors (the stand-ins above)."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        lib.impl("_scaled_dot_product_flash_attention", _flash_fwd, "CPU")
        lib.impl("_scaled_dot_product_flash_attention_backward", _flash_bwd, "CPU")
        lib.impl("_scaled_dot_product_efficient_attention", _efficient_fwd, "CPU")
        lib.impl("_scaled_dot_product_efficient_attention_backward", _efficient_bwd, "CPU")
        yield
    finally:
        lib._destroy()
