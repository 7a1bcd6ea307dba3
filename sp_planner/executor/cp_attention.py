"""One autograd wrapper for context-parallel attention, parameterised by the algorithm's forward
and backward (ring: sp_planner.executor.ring; all-gather: sp_planner.executor.allgather).

Both save the same tensors: the local q, k, v, the output and the fp32 log-sum-exp (never the
K/V of other ranks, which the backward moves or gathers again).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from sp_planner.executor.allgather import allgather_backward, allgather_forward
from sp_planner.executor.ring import ring_backward, ring_forward


class CpAlgorithm(NamedTuple):
    """forward(q, k, v, setup) -> (out, lse); backward(dout, q, k, v, out, lse, setup) -> (dq, dk, dv)."""

    forward: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


RING = CpAlgorithm(ring_forward, ring_backward)
ALLGATHER = CpAlgorithm(allgather_forward, allgather_backward)


class ContextParallelAttention(torch.autograd.Function):
    """apply(q, k, v, algorithm, setup): the algorithm's forward, its backward from the saved tensors."""

    @staticmethod
    def forward(ctx, q, k, v, algorithm: CpAlgorithm, setup: Any):
        out, lse = algorithm.forward(q, k, v, setup)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.algorithm, ctx.setup = algorithm, setup
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = ctx.algorithm.backward(dout.contiguous(), q, k, v, out, lse, ctx.setup)
        return dq, dk, dv, None, None
