"""A schedule on streams (compute, communication, data-parallel communication) and its critical path.

Ops on one stream run in program order, as CUDA kernels on one stream do; an op also waits for
the ops it depends on (data dependencies across streams, e.g. attention waits for the Ulysses
all-to-all). Each op remembers which predecessor released it, so walking back from the last op
gives the critical path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Stream = Literal["compute", "comm", "dp_comm"]
STREAMS: tuple[Stream, ...] = get_args(Stream)


@dataclass(slots=True)
class Op:
    stream: Stream
    kind: str
    name: str
    duration_s: float
    start_s: float
    end_s: float
    pred: int  # index of the op that released this one, -1 at the start
    # When its dependencies on other streams allowed it to start (its stream's order aside): a
    # data-parallel call's release, for queueing it behind an earlier block's calls (queued_dp_end).
    ready_s: float = 0.0


@dataclass
class Program:
    ops: list[Op] = field(default_factory=list)
    _tail: dict[str, int] = field(default_factory=lambda: {s: -1 for s in STREAMS})

    def add(self, stream: Stream, kind: str, name: str, duration_s: float, after: tuple[int, ...] = ()) -> int:
        """Append an op; returns its index. `after` lists ops it must wait for."""
        assert stream in STREAMS and duration_s >= 0, (stream, duration_s)
        pred = self._tail[stream]
        start = self.ops[pred].end_s if pred >= 0 else 0.0
        ready = max((self.ops[dep].end_s for dep in after if dep >= 0), default=0.0)
        for dep in after:
            if dep >= 0 and self.ops[dep].end_s > start:
                start, pred = self.ops[dep].end_s, dep
        self.ops.append(Op(stream, kind, name, duration_s, start, start + duration_s, pred, ready))
        self._tail[stream] = len(self.ops) - 1
        return len(self.ops) - 1

    def tail(self, stream: str) -> int:
        return self._tail[stream]

    @property
    def end_s(self) -> float:
        return max((op.end_s for op in self.ops), default=0.0)

    def busy_s(self, stream: str) -> float:
        return sum(op.duration_s for op in self.ops if op.stream == stream)

    def critical_path(self, streams: tuple[str, ...] = STREAMS) -> list[int]:
        """Op indices on the critical path to the last op on `streams`, first to last."""
        ends = [i for i, op in enumerate(self.ops) if op.stream in streams]
        if not ends:
            return []
        last = max(ends, key=lambda i: (self.ops[i].end_s, i))
        path = []
        while last >= 0:
            path.append(last)
            last = self.ops[last].pred
        return path[::-1]

    def critical_by_kind(self, streams: tuple[str, ...] = STREAMS) -> dict[str, float]:
        """Seconds of the critical path spent in each kind of op (they sum to its end)."""
        totals: dict[str, float] = {}
        for i in self.critical_path(streams):
            op = self.ops[i]
            totals[op.kind] = totals.get(op.kind, 0.0) + op.duration_s
        return totals


def idle_overlap_s(span: tuple[float, float], busy: list[tuple[float, float]]) -> float:
    """Seconds of `span` (start, end) outside every `busy` (start, end) interval (one stage's
    blocks, in order, not overlapping): the time a data-parallel call runs while its stage idles."""
    start, end = span
    covered = sum(max(0.0, min(end, b_end) - max(start, b_start)) for b_start, b_end in busy)
    return max(0.0, end - start - covered)


def program_dp_calls(program: Program) -> list[tuple[float, float]]:
    """(release, seconds) of a program's data-parallel calls, in stream order."""
    return [(op.ready_s, op.duration_s) for op in program.ops if op.stream == "dp_comm"]


def queued_dp_end(calls: list[tuple[float, float]], start_s: float, free_s: float) -> float:
    """When a block started at start_s has its data-parallel calls (program_dp_calls) done, each
    released when its program's other streams allow (Op.ready_s) and queued behind the stage's
    earlier calls, the stream being free at free_s: the calls of one communicator run in order,
    and a model chunk's gradient sync outlives the block that issued it (Megatron schedules.py,
    forward_backward_pipelining_with_interleaving, backward_step_helper_postprocess: each chunk's
    grad_sync_func after its last micro-batch; finalize_model_grads waits for all of them)."""
    for release_s, seconds in calls:
        free_s = max(free_s, start_s + release_s) + seconds
    return free_s
