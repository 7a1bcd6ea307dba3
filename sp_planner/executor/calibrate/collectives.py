"""Time all-reduce, all-gather, reduce-scatter, all-to-all and ring P2P on real process groups.

Buffers follow nccl-tests' size S (sp_planner.specs.calibration): all-gather gathers S/n per rank
into S, reduce-scatter reduces S into S/n, all-to-all exchanges a send buffer of S, a P2P step
sends S to the next group rank while receiving S from the previous one.
"""

from __future__ import annotations

import datetime
from typing import Callable

import torch
import torch.distributed as dist

from sp_planner.calibration.measurements import CollectiveSample
from sp_planner.calibration.schedule import CalibrationSchedule, GroupSpec
from sp_planner.executor.calibrate.timing import mean_time_s

# torch 2.13 deprecates reduce_scatter_tensor / all_gather_into_tensor for the *_single names;
# older torch has only the former.
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def build_groups(schedule: CalibrationSchedule, timeout_s: float) -> list[tuple[GroupSpec, dist.ProcessGroup]]:
    """Every rank creates every group, in schedule order (new_group is collective over the world).
    new_group takes the backend's default timeout (10 or 30 min) unless given one."""
    timeout = datetime.timedelta(seconds=timeout_s)
    return [(spec, dist.new_group(list(spec.ranks), timeout=timeout)) for spec in schedule.groups]


def collective_call(collective: str, group: dist.ProcessGroup, size_bytes: int, device: torch.device,
                    dtype: torch.dtype) -> tuple[Callable[[], None], int]:
    """A closure running one collective of about `size_bytes`, and the exact S it moves (the
    element count rounded down to a multiple of the group size)."""
    n = dist.get_world_size(group)
    elem = torch.empty(0, dtype=dtype).element_size()
    count = max(size_bytes // elem // n, 1) * n
    full = torch.ones(count, dtype=dtype, device=device)
    part = torch.ones(count // n, dtype=dtype, device=device)
    if collective == "all_reduce":
        return (lambda: dist.all_reduce(full, group=group)), count * elem
    if collective == "all_gather":
        return (lambda: _all_gather(full, part, group=group)), count * elem
    if collective == "reduce_scatter":
        return (lambda: _reduce_scatter(part, full, group=group)), count * elem
    if collective == "all_to_all":
        out = torch.empty_like(full)
        return (lambda: dist.all_to_all_single(out, full, group=group)), count * elem
    if collective == "p2p":
        me = dist.get_rank(group)
        nxt, prev = (dist.get_global_rank(group, (me + d) % n) for d in (1, -1))
        recv = torch.empty_like(full)

        def ring_step() -> None:
            ops = [dist.P2POp(dist.isend, full, nxt, group), dist.P2POp(dist.irecv, recv, prev, group)]
            for request in dist.batch_isend_irecv(ops):
                request.wait()

        return ring_step, count * elem
    raise ValueError(f"unknown collective {collective!r}")


def measure_collectives(schedule: CalibrationSchedule, groups, device: torch.device, dtype: torch.dtype,
                        stage: Callable[[str], None]) -> list[CollectiveSample]:
    """This rank's mean time for every (group it belongs to, collective, size). One group runs at
    a time: the other ranks wait at the world barrier that ends each group."""
    rank = dist.get_rank()
    samples = []
    for spec, group in groups:
        if rank in spec.ranks:
            for collective in schedule.collectives:
                for size in schedule.sizes_bytes:
                    stage(f"{collective} of {size} bytes on ranks {list(spec.ranks)}")
                    fn, size_bytes = collective_call(collective, group, size, device, dtype)
                    time_s = mean_time_s(fn, device, warmup=schedule.warmup, iters=schedule.iters,
                                         before=lambda: dist.barrier(group=group))
                    samples.append(CollectiveSample(collective=collective, link=spec.link,
                                                    group_size=len(spec.ranks), rank=rank,
                                                    size_bytes=size_bytes, time_s=time_s))
        stage(f"waiting for the other ranks after group {list(spec.ranks)}")
        dist.barrier()
    return samples
