"""DeepSpeed-Ulysses all-to-all as autograd functions (Jacobs et al. 2023, section 3.2).

Forward: Q, K, V go sequence-sharded -> head-sharded, O goes back; backward runs the inverse
all-to-alls on dO, dQ, dK, dV. One function moves Q, K and V together so every rank issues the
collectives in the same order in forward and backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from sp_planner.executor.comm import CommCounter, head_to_seq, seq_to_head


def replicate_kv_heads(x: torch.Tensor, ulysses: int) -> torch.Tensor:
    """Repeat each KV head so every Ulysses rank receives at least one (DeepSpeed ALST, verl).

    Head i of the result is original head i // (ulysses/kv), so Ulysses rank j's query heads keep
    their GQA group. Autograd sums the copies' gradients. (b, s, kv, d) -> (b, s, max(kv, U), d).
    """
    kv = x.shape[2]
    if kv >= ulysses:
        return x
    return x.repeat_interleave(ulysses // kv, dim=2)


class SeqToHead(torch.autograd.Function):
    """(b, s/U, h, d) -> (b, s, h/U, d) for each input; backward is the inverse all-to-all."""

    @staticmethod
    def forward(ctx, group: dist.ProcessGroup, counter: CommCounter, *tensors):
        ctx.group, ctx.counter = group, counter
        return tuple(seq_to_head(t, group, counter) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, *(head_to_seq(g.contiguous(), ctx.group, ctx.counter) for g in grads))


class HeadToSeq(torch.autograd.Function):
    """(b, s, h/U, d) -> (b, s/U, h, d); backward is the inverse all-to-all."""

    @staticmethod
    def forward(ctx, group: dist.ProcessGroup, counter: CommCounter, tensor):
        ctx.group, ctx.counter = group, counter
        return head_to_seq(tensor, group, counter)

    @staticmethod
    def backward(ctx, grad):
        return None, None, seq_to_head(grad.contiguous(), ctx.group, ctx.counter)
