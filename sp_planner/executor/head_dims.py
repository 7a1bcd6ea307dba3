"""Q/K and V of different head dims (MLA: DeepSeek-V2/V3 queries and keys of qk_nope + qk_rope =
192, values of 128) through kernels that take one head dim for all three.

PyTorch's CPU flash kernel refuses them ("Q/K/V should have the same head size") and so does
FlashAttention-2 (flash_api.cpp mha_fwd). Zero columns change nothing: a zero-padded q or k adds
0 to every score (the scale is passed, not taken from the width), a zero-padded v adds zero
columns to the output, and in the backward the padded dO and O leave D = rowsum(dO * O) and
dP = dO V^T as they were, so the first columns of dQ, dK, dV are the unpadded gradients (the
padding Transformer Engine and Megatron-Core apply for MLA on FlashAttention-2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # kernels imports this module
    from sp_planner.executor.kernels import AttentionKernel


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """(b, s, h, d) -> (b, s, h, width), zero columns after the d given."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


class PaddedHeadDims:
    """`inner` run on q/k of qk_dim and v of v_dim, each zero-padded to the larger of the two."""

    def __init__(self, inner: "AttentionKernel", qk_dim: int, v_dim: int):
        self.inner, self.qk_dim, self.v_dim = inner, qk_dim, v_dim
        self.width = max(qk_dim, v_dim)
        self.name = f"{inner.name}; q/k of head dim {qk_dim} and v of {v_dim} zero-padded to {self.width}"

    def forward(self, q, k, v, *, causal, scale):
        w = self.width
        out, lse = self.inner.forward(_pad_to(q, w), _pad_to(k, w), _pad_to(v, w), causal=causal, scale=scale)
        return out[..., :self.v_dim].contiguous(), lse  # (b, s, h, width) -> (b, s, h, d_v)

    def backward(self, dout, q, k, v, out, lse, *, causal, scale):
        w = self.width
        dq, dk, dv = self.inner.backward(_pad_to(dout, w), _pad_to(q, w), _pad_to(k, w), _pad_to(v, w),
                                         _pad_to(out, w), lse, causal=causal, scale=scale)
        # (b, s, h, width) -> (b, s, h, d_qk) for dq, dk; (b, s, h_kv, d_v) for dv
        return (dq[..., :self.qk_dim].contiguous(), dk[..., :self.qk_dim].contiguous(),
                dv[..., :self.v_dim].contiguous())
