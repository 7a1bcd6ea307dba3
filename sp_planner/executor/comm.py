"""Communication with byte counting at the call sites: Ulysses all-to-all, ring P2P, and the
all-gather / reduce-scatter of all-gather CP.

Every process group is an argument. `CommCounter` records the bytes this rank hands to the
network, by collective, so they can be compared with sp_planner.cost.attention_comm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

ALL_TO_ALL = "all_to_all"
P2P = "p2p"
ALL_GATHER = "all_gather"
REDUCE_SCATTER = "reduce_scatter"


@dataclass
class CommCounter:
    """Bytes this rank sent, by collective. Mutable on purpose: the call sites add to it."""

    sent_bytes: dict[str, int] = field(
        default_factory=lambda: {ALL_TO_ALL: 0, P2P: 0, ALL_GATHER: 0, REDUCE_SCATTER: 0})

    def add(self, collective: str, nbytes: int) -> None:
        self.sent_bytes[collective] += int(nbytes)


def _all_to_all_dim0(x: torch.Tensor, group: dist.ProcessGroup, counter: CommCounter) -> torch.Tensor:
    """Chunk i of dim 0 goes to group rank i; the chunk a rank keeps for itself is not counted."""
    size = dist.get_world_size(group)
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    counter.add(ALL_TO_ALL, x.numel() // size * (size - 1) * x.element_size())
    return out


def _staged(x: torch.Tensor, group: dist.ProcessGroup) -> bool:
    """CUDA tensors on a gloo group go through host copies (see RingComm)."""
    return x.is_cuda and dist.get_backend(group) == dist.Backend.GLOO


def all_gather_dim0(x: torch.Tensor, group: dist.ProcessGroup, counter: CommCounter) -> torch.Tensor:
    """(n, ...) on each rank -> (P*n, ...), rank i's rows at [i*n, (i+1)*n). Counts (P-1)/P of the
    gathered tensor, the share a ring all-gather sends per rank (nccl-tests PERFORMANCE.md)."""
    size = dist.get_world_size(group)
    x = x.contiguous()
    staged = _staged(x, group)
    send = x.cpu() if staged else x
    out = torch.empty((size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=send.device)
    dist.all_gather_single(out, send, group=group)
    counter.add(ALL_GATHER, x.numel() * (size - 1) * x.element_size())
    return out.to(x.device) if staged else out


def reduce_scatter_dim0(x: torch.Tensor, group: dist.ProcessGroup, counter: CommCounter) -> torch.Tensor:
    """(P*n, ...) on each rank -> (n, ...): rank i gets the sum over ranks of rows [i*n, (i+1)*n).
    Counts (P-1)/P of the input, the share a ring reduce-scatter sends per rank."""
    size = dist.get_world_size(group)
    x = x.contiguous()
    staged = _staged(x, group)
    send = x.cpu() if staged else x
    out = torch.empty((x.shape[0] // size, *x.shape[1:]), dtype=x.dtype, device=send.device)
    dist.reduce_scatter_single(out, send, group=group)
    counter.add(REDUCE_SCATTER, x.numel() // size * (size - 1) * x.element_size())
    return out.to(x.device) if staged else out


def seq_to_head(x: torch.Tensor, group: dist.ProcessGroup, counter: CommCounter) -> torch.Tensor:
    """Ulysses scatter of heads, gather of sequence: (b, s/P, h, d) -> (b, s, h/P, d)."""
    p = dist.get_world_size(group)
    b, s_local, h, d = x.shape
    # (b, s/P, h, d) -> (b, s/P, P, h/P, d) -> (P, b, s/P, h/P, d): chunk i holds head group i
    send = x.reshape(b, s_local, p, h // p, d).permute(2, 0, 1, 3, 4).contiguous()
    recv = _all_to_all_dim0(send, group, counter)  # recv[j]: rank j's tokens, our head group
    # (P, b, s/P, h/P, d) -> (b, P, s/P, h/P, d) -> (b, s, h/P, d)
    return recv.permute(1, 0, 2, 3, 4).reshape(b, p * s_local, h // p, d)


def head_to_seq(x: torch.Tensor, group: dist.ProcessGroup, counter: CommCounter) -> torch.Tensor:
    """The inverse all-to-all: (b, s, h/P, d) -> (b, s/P, h, d)."""
    p = dist.get_world_size(group)
    b, s, h_local, d = x.shape
    # (b, s, h/P, d) -> (b, P, s/P, h/P, d) -> (P, b, s/P, h/P, d): chunk i holds rank i's tokens
    send = x.reshape(b, p, s // p, h_local, d).permute(1, 0, 2, 3, 4).contiguous()
    recv = _all_to_all_dim0(send, group, counter)  # recv[j]: our tokens, head group j
    # (P, b, s/P, h/P, d) -> (b, s/P, P, h/P, d) -> (b, s/P, h, d)
    return recv.permute(1, 2, 0, 3, 4).reshape(b, s // p, p * h_local, d)


class _HostStagedRecv:
    """A receive into a host buffer, copied to the device tensor once it has arrived."""

    def __init__(self, work, host: torch.Tensor, device_tensor: torch.Tensor):
        self.work, self.host, self.device_tensor = work, host, device_tensor

    def wait(self) -> None:
        self.work.wait()
        self.device_tensor.copy_(self.host)


def send_recv_order(requests: list, sends: int) -> list:
    """`requests` (the sends, then the receives, as started) with the receives first, the order they
    are waited on. When the previous rank dies, its receive fails at once and names that rank's
    address; a send to a live but stalled next rank fails only at the group timeout and names no
    one (sp_planner.executor.failure ranks the two). Every request is already started, so the
    order changes which error is raised first, not what completes."""
    return list(requests[sends:]) + list(requests[:sends])


class RingComm:
    """P2P to the next ring rank, from the previous one (group ranks mapped to global ranks, as
    ring-flash-attention's RingComm). Sends go through batch_isend_irecv so NCCL pairs them.

    gloo's send/recv hand the tensor's data pointer to its TCP transport with no device check
    (ProcessGroupGloo::send/recv; its all-to-all, in contrast, stages CUDA tensors itself), so
    CUDA tensors on a gloo group (several ranks sharing one GPU) travel through host copies.
    The bytes counted are the same."""

    def __init__(self, group: dist.ProcessGroup, counter: CommCounter):
        self.group = group
        self.counter = counter
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.next_rank = dist.get_global_rank(group, (self.rank + 1) % self.size)
        self.prev_rank = dist.get_global_rank(group, (self.rank - 1) % self.size)
        self.host_staging = dist.get_backend(group) == dist.Backend.GLOO

    def send_recv(self, send: list[torch.Tensor], recv: list[torch.Tensor], tag: int,
                  via_host: bool | None = None) -> list:
        """Start sending `send` to the next rank and receiving into `recv`; returns the requests,
        receives first (send_recv_order). via_host: stage through host copies (default: for CUDA
        tensors on a gloo group)."""
        for t in send:
            self.counter.add(P2P, t.numel() * t.element_size())
        if via_host is None:
            via_host = self.host_staging and any(t.is_cuda for t in (*send, *recv))
        if via_host:
            return self._send_recv_via_host(send, recv, tag)
        ops = [dist.P2POp(dist.isend, t, self.next_rank, self.group, tag) for t in send]
        ops += [dist.P2POp(dist.irecv, t, self.prev_rank, self.group, tag) for t in recv]
        return send_recv_order(dist.batch_isend_irecv(ops), len(send))

    def _send_recv_via_host(self, send: list[torch.Tensor], recv: list[torch.Tensor], tag: int) -> list:
        host_recv = [torch.empty(t.shape, dtype=t.dtype, device="cpu") for t in recv]
        ops = [dist.P2POp(dist.isend, t.detach().cpu(), self.next_rank, self.group, tag) for t in send]
        ops += [dist.P2POp(dist.irecv, h, self.prev_rank, self.group, tag) for h in host_recv]
        works = dist.batch_isend_irecv(ops)
        staged = [_HostStagedRecv(w, h, t) for w, h, t in zip(works[len(send):], host_recv, recv)]
        return send_recv_order(works[:len(send)] + staged, len(send))

    @staticmethod
    def wait(requests: list) -> None:
        """Wait for send_recv's requests in their order, receives first (send_recv_order)."""
        for request in requests:
            request.wait()
