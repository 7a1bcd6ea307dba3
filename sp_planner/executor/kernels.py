"""Local attention kernels that return the log-sum-exp (LSE), which the ring merge needs.

Layout: q, k, v, out are (b, s, h, d) in the run dtype; lse is (b, h, s) in fp32, natural log.
GQA: KV heads are expanded to the query heads locally (no communication) and their gradients
summed back. A kernel that drops or fakes the LSE is never used: `check_kernel` compares each
kernel with the explicit math implementation before a run (yunchang's TORCH_MATH path returns
zeros for the LSE and silently breaks the ring merge; see shared reference usp_yunchang_notes 3.1).
"""

from __future__ import annotations

from typing import Protocol

import torch

from sp_planner.executor.head_dims import PaddedHeadDims
from sp_planner.executor.kernel_rules import FLASH, cuda_kernel_for
from sp_planner.executor.score_mod import BlockMod, cap_scores, uncap_grad
from sp_planner.specs.model import softmax_scale_or_default


class AttentionKernel(Protocol):
    name: str

    def forward(self, q, k, v, *, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]: ...

    def backward(self, dout, q, k, v, out, lse, *, causal: bool, scale: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def _bhsd(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, s, h_kv, d) -> (b, heads, s, d), repeating each KV head for its query group."""
    x = x.transpose(1, 2)  # (b, s, h, d) -> (b, h, s, d)
    if x.shape[1] != heads:
        x = x.repeat_interleave(heads // x.shape[1], dim=1)  # (b, h_kv, s, d) -> (b, h, s, d)
    return x.contiguous()


def _bshd_grad(g: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(b, h, s, d) -> (b, s, h_kv, d), summing the gradient of each repeated KV head."""
    b, h, s, d = g.shape
    if h != kv_heads:
        g = g.reshape(b, kv_heads, h // kv_heads, s, d).sum(dim=2)  # (b, h, s, d) -> (b, h_kv, s, d)
    return g.transpose(1, 2)  # (b, h_kv, s, d) -> (b, s, h_kv, d)


class MathKernel:
    """Explicit attention in fp32 that computes its own LSE (any device, any dtype). The one kernel
    that takes a BlockMod (softcap, window; sp_planner.executor.score_mod), and different q/k and
    v head dims (MLA)."""

    name = "math (explicit fp32 softmax, own LSE)"

    @staticmethod
    def _scores(q, k, causal, scale, mod: BlockMod | None = None):
        """Masked (capped) scores (b, h, sq, sk) and tanh(s / softcap) (None without a cap)."""
        scores, tanh = cap_scores(torch.matmul(q, k.transpose(-1, -2)) * scale, mod.softcap if mod else None)
        sq, sk = scores.shape[-2:]
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).triu(1) if causal else None
        if mod is not None and mod.masked is not None:
            mask = mod.masked.to(q.device) if mask is None else mask | mod.masked.to(q.device)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        return scores, tanh

    @staticmethod
    def _finite(lse: torch.Tensor) -> torch.Tensor:
        """The LSE with rows that see no key (a window can hide a whole ring block from a query:
        lse = -inf) at 0, so that their probabilities are exp(-inf) = 0, not NaN. (b, h, sq, 1)"""
        return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)).unsqueeze(-1)

    def forward(self, q, k, v, *, causal, scale, mod: BlockMod | None = None):
        heads = q.shape[2]
        qf, kf, vf = (_bhsd(x, heads).float() for x in (q, k, v))
        scores, _ = self._scores(qf, kf, causal, scale, mod)
        lse = torch.logsumexp(scores, dim=-1)  # (b, h, sq)
        out = torch.matmul(torch.exp(scores - self._finite(lse)), vf)
        return out.transpose(1, 2).to(v.dtype), lse  # (b, h, s, d_v) -> (b, s, h, d_v)

    def backward(self, dout, q, k, v, out, lse, *, causal, scale, mod: BlockMod | None = None):
        heads, kv_heads = q.shape[2], k.shape[2]
        qf, kf, vf, of, gf = (_bhsd(x, heads).float() for x in (q, k, v, out, dout))
        scores, tanh = self._scores(qf, kf, causal, scale, mod)
        probs = torch.exp(scores - self._finite(lse.float()))
        dprobs = torch.matmul(gf, vf.transpose(-1, -2))
        delta = (gf * of).sum(dim=-1, keepdim=True)  # rowsum(dO * O), as flash-attention's D
        dscores = uncap_grad(probs * (dprobs - delta), tanh)  # through the cap's tanh
        dq = torch.matmul(dscores, kf) * scale
        dk = torch.matmul(dscores.transpose(-1, -2), qf) * scale
        dv = torch.matmul(probs.transpose(-1, -2), gf)
        return (dq.transpose(1, 2).to(q.dtype), _bshd_grad(dk, kv_heads).to(k.dtype),
                _bshd_grad(dv, kv_heads).to(v.dtype))


class CpuFlashKernel:
    """PyTorch's flash attention for CPU, which returns the LSE (fp32, dtypes fp32/bf16/fp16)."""

    name = "cpu-flash (aten._scaled_dot_product_flash_attention_for_cpu)"

    def forward(self, q, k, v, *, causal, scale):
        heads = q.shape[2]
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            _bhsd(q, heads), _bhsd(k, heads), _bhsd(v, heads), 0.0, causal, scale=scale)
        return out.transpose(1, 2), lse  # (b, h, s, d) -> (b, s, h, d)

    def backward(self, dout, q, k, v, out, lse, *, causal, scale):
        heads, kv_heads = q.shape[2], k.shape[2]
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            _bhsd(dout, heads), _bhsd(q, heads), _bhsd(k, heads), _bhsd(v, heads), _bhsd(out, heads),
            lse.contiguous(), 0.0, causal, scale=scale)
        return dq.transpose(1, 2), _bshd_grad(dk, kv_heads), _bshd_grad(dv, kv_heads)


# The raw CUDA ops, on (b, h, s, d) tensors. Schemas: aten/src/ATen/native/native_functions.yaml.
# Their backward takes what the forward returned, as SDPA's own autograd does (derivatives.yaml).


def cuda_flash_forward(q, k, v, *, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """FlashAttention-2: (out, lse (b, h, s) fp32, state for `cuda_flash_backward`)."""
    out, lse, cum_seq_q, cum_seq_k, _, _, philox_seed, philox_offset, _ = (
        torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale))
    # Dense inputs: cum_seq_q/k come back undefined (None). A defined tensor there selects the
    # varlen kernel, which requires int32 cumulative lengths (flash_api.cpp mha_varlen_bwd).
    return out, lse, (cum_seq_q, cum_seq_k, philox_seed, philox_offset)


def cuda_flash_backward(dout, q, k, v, out, lse, state: tuple, *, causal: bool, scale: float):
    """(dq, dk, dv) of FlashAttention-2. `state` is a dense forward's (the same for any block
    without dropout); lse may be another (a ring's merged LSE); max lengths are this block's."""
    cum_seq_q, cum_seq_k, philox_seed, philox_offset = state
    return torch.ops.aten._scaled_dot_product_flash_attention_backward(
        dout, q, k, v, out, lse, cum_seq_q, cum_seq_k, q.shape[2], k.shape[2], 0.0, causal, philox_seed,
        philox_offset, scale=scale)


# The memory-efficient kernel pads its LSE to a multiple of 32 queries (kAlignLSE in
# mem_eff_attention/kernel_forward.h); backward takes it padded the same way.
EFFICIENT_LSE_ALIGN = 32


def cuda_efficient_forward(q, k, v, *, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """CUTLASS memory-efficient attention: (out, lse (b, h, s) fp32, philox state)."""
    out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, causal, scale=scale)
    return out, lse[..., :q.shape[2]], (seed, offset)


def cuda_efficient_backward(dout, q, k, v, out, lse, state: tuple, *, causal: bool, scale: float):
    seed, offset = state
    s = q.shape[2]
    padded = -(-s // EFFICIENT_LSE_ALIGN) * EFFICIENT_LSE_ALIGN
    lse = torch.nn.functional.pad(lse.float(), (0, padded - s)).contiguous()  # (b, h, s) -> (b, h, s_pad)
    # The fp16/bf16 kernels read `out` at a sequence stride of heads x head_dim whatever its
    # strides (mem_eff_attention/kernel_backward.h Params::o_strideM; attention_backward.cu takes
    # only its batch and head strides): hand it in the layout SDPA's forward returns.
    out = out.transpose(1, 2).contiguous().transpose(1, 2)  # (b, h, s, d) view of (b, s, h, d) memory
    dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
        dout, q, k, v, None, out, lse, seed, offset, 0.0, [True, True, True, False], causal, scale=scale)
    return dq, dk, dv


class _CudaKernel:
    """A CUDA op pair on (b, s, h, d) tensors, GQA expanded. Forward keeps the op's returned state
    (unused without dropout, but of the types the backward op expects) for the backward calls."""

    name = ""
    _fwd = staticmethod(cuda_flash_forward)
    _bwd = staticmethod(cuda_flash_backward)

    def __init__(self):
        self._state: tuple | None = None

    def forward(self, q, k, v, *, causal, scale):
        heads = q.shape[2]
        out, lse, self._state = self._fwd(_bhsd(q, heads), _bhsd(k, heads), _bhsd(v, heads), causal=causal,
                                          scale=scale)
        return out.transpose(1, 2), lse  # (b, h, s, d) -> (b, s, h, d)

    def backward(self, dout, q, k, v, out, lse, *, causal, scale):
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before any forward")
        heads, kv_heads = q.shape[2], k.shape[2]
        dq, dk, dv = self._bwd(_bhsd(dout, heads), _bhsd(q, heads), _bhsd(k, heads), _bhsd(v, heads),
                               _bhsd(out, heads), lse.contiguous(), self._state, causal=causal, scale=scale)
        return dq.transpose(1, 2), _bshd_grad(dk, kv_heads), _bshd_grad(dv, kv_heads)


class CudaFlashKernel(_CudaKernel):
    """FlashAttention-2 through SDPA's aten op on CUDA (fp16/bf16), which returns the LSE."""

    name = "cuda-flash (aten._scaled_dot_product_flash_attention)"


class CudaEfficientKernel(_CudaKernel):
    """Memory-efficient attention through SDPA's aten op on CUDA (fp32/fp16/bf16), with LSE."""

    name = "cuda-efficient (aten._scaled_dot_product_efficient_attention)"
    _fwd = staticmethod(cuda_efficient_forward)
    _bwd = staticmethod(cuda_efficient_backward)


def select_kernel(device: str, dtype: torch.dtype, requested: str, *, qk_dim: int = 0, v_dim: int = 0,
                  mods: bool = False) -> tuple[AttentionKernel, str | None]:
    """The kernel for a run and, when it is not the device's flash kernel, why (reported in the
    result). Head dims the CUDA kernels refuse are refused before launch (kernel_rules).

    mods: the run has a logit softcap or a window (score_mod), which only the math kernel applies.
    qk_dim != v_dim (MLA): a flash kernel gets q, k, v zero-padded to one head dim (head_dims)."""
    if requested == "math":
        return MathKernel(), "math kernel requested (--kernel math)"
    if mods:
        return MathKernel(), (f"math kernel: the {device} flash kernels take no logit softcap or local-attention "
                              "window, which this run applies")
    kernel: AttentionKernel
    note = None
    if device == "cpu":
        kernel = CpuFlashKernel()
    elif cuda_kernel_for(torch.empty(0, dtype=dtype).element_size()) == FLASH:
        kernel = CudaFlashKernel()
    else:
        kernel = CudaEfficientKernel()
        note = f"CUDA flash attention does not support {dtype}; using the memory-efficient kernel"
    if qk_dim and v_dim and qk_dim != v_dim:
        kernel = PaddedHeadDims(kernel, qk_dim, v_dim)
    return kernel, note


def check_kernel(kernel: AttentionKernel, device: str, dtype: torch.dtype, head_dim: int = 16,
                 v_head_dim: int | None = None, scale: float | None = None) -> None:
    """Compare kernel and math implementation on a small causal GQA problem at the run's head dims
    (q/k head_dim, v v_head_dim, the same by default) and softmax scale (1/sqrt(head_dim) by
    default); raise on mismatch.

    Catches a kernel whose LSE is absent, zero or in another base before it corrupts a ring merge.
    """
    gen = torch.Generator().manual_seed(1234)
    b, s, h, kv, d, dv = 1, 16, 4, 2, head_dim, v_head_dim or head_dim
    q, k, v, dout = (torch.randn(b, s, n, width, generator=gen).to(device=device, dtype=dtype)
                     for n, width in ((h, d), (kv, d), (kv, dv), (h, dv)))
    scale = softmax_scale_or_default(scale, d)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    dims = f"head dim {d}" if dv == d else f"head dims {d} (q/k) and {dv} (v)"
    for causal in (False, True):
        out, lse = kernel.forward(q, k, v, causal=causal, scale=scale)
        ref_out, ref_lse = MathKernel().forward(q, k, v, causal=causal, scale=scale)
        if lse.shape != ref_lse.shape or not torch.allclose(lse.float(), ref_lse, atol=tol, rtol=0):
            raise RuntimeError(f"kernel {kernel.name} returns a wrong log-sum-exp at {dims}; refusing to use it")
        grads = kernel.backward(dout, q, k, v, ref_out, ref_lse, causal=causal, scale=scale)
        ref_grads = MathKernel().backward(dout, q, k, v, ref_out, ref_lse, causal=causal, scale=scale)
        for got, want in zip((out, *grads), (ref_out, *ref_grads)):
            if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=tol * 4, rtol=0):
                raise RuntimeError(f"kernel {kernel.name} disagrees with the math kernel at {dims}; "
                                   "refusing to use it")
