"""One training step of every pipeline stage under 1F1B, at the granularity of stage blocks.

A block is one stage's forward or backward of one micro-batch (of one model chunk when the pipeline
is interleaved); its inside is the stage program (sp_planner.sim.layer_program), identical for
every micro-batch, so it is scheduled once and reused. 1F1B (PipeDream-Flush; Narayanan et al.
2021, section 2.2): stage s runs min(pp-1-s, m) warm-up forwards, then alternates one forward and
one backward, then drains the remaining backwards; interleaved 1F1B (section 2.2.2) as Megatron
orders it (pipeline_order), each stage holding vpp chunks of its layers, chunk c of stage s being virtual
stage c*pp + s. A later chunk's gradient buckets may still be leaving when the next block's join
the data-parallel stream; each block's program times its own. A forward waits for the previous
stage's forward of the same micro-batch and its activation transfer; a backward waits for the next
stage's backward and its gradient transfer. Sends block the sender, as Megatron's 1F1B pairs them
with the next receive (`send_forward_recv_backward`) and waits for both; on the interleaved
schedule with overlap_p2p_comm (StepWork.pp_overlap, cost.overlap) a send runs beside the sender's
next blocks instead, and only the receiver waits for it (the wait is `pp_comm` on the critical
path). After its last backward a
stage waits for its gradient buckets (the two ends of a tied model's pipeline then for their
embedding all-reduce, cost.tied_embedding) and every other stage's (the gradient norm), steps its own
optimizer and, unless the framework overlaps it with the next step's first forward (cost.overlap),
all-gathers its parameter shards, then waits for every stage's update (train_step's model-parallel
all-reduces, cost.grad_buffer.slowest_stage_step_bytes); last, the compute lost to hidden
data-parallel traffic (StepWork.dp_overlap_slowdown of it, cost.overlap).
A stage's data-parallel calls share one stream (its data-parallel communicator's) across blocks:
a call issued in one block waits for those still leaving from earlier ones
(streams.queued_dp_end), so an interleaved stage's per-chunk gradient syncs queue behind each
other into the drain; under Megatron's aligned grad reduce (StepWork.dp_reduce_whole_chunk) a
chunk's whole sync joins it after a later backward (pipeline_order.grad_sync_launches). Under
its aligned parameter gather (StepWork.dp_gather_by_chunk) each later chunk's gather is a block of
its own, dispatched ahead of the chunk's first forward (pipeline_order.gather_dispatched). A stage
synced once a step (StepWork.dp_stage_sync) launches a chunk's whole sync after the chunk's last
backward and waits for it after its send (a dp_grad_sync block).
"""

from __future__ import annotations

from dataclasses import dataclass

from sp_planner.sim.layer_program import chunk_gather_s, chunk_sync_calls, stage_backward, stage_forward
from sp_planner.pipeline_order import (gather_dispatched, grad_sync_launches, micro_batch_group, stage_order,
                                      upstream_stage)
from sp_planner.sim.streams import Program, idle_overlap_s, program_dp_calls, queued_dp_end
from sp_planner.sim.work import StepWork, without_dp


@dataclass(slots=True)
class Block:
    stage: int
    # "forward", "backward", "optimizer", "dp_param_gather", "dp_grad_tail", "dp_grad_sync", "tied_all_reduce",
    # "dp_overlap_slowdown"
    kind: str
    micro_batch: int  # -1 for the step tail
    start_s: float
    end_s: float
    pred: int  # block that released this one, -1 at time 0
    send_s: float  # pipeline send at the end of the block (activation or its gradient)
    program: Program | None
    chunk: int = 0  # model chunk of the stage (interleaved 1F1B)
    # An overlapped send (StepWork.pp_overlap): it runs after the block's end beside the stage's
    # next blocks; the receiver starts no earlier than end_s + transfer_s.
    transfer_s: float = 0.0
    # Of this block's start, the seconds it waited for its upstream block's overlapped send.
    waited_s: float = 0.0


@dataclass
class PipelineSchedule:
    blocks: list[Block]
    templates: dict[tuple[int, int, str], Program]
    step_time_s: float

    def critical_blocks(self) -> list[int]:
        last = max(range(len(self.blocks)), key=lambda i: (self.blocks[i].end_s, i))
        path = []
        while last >= 0:
            path.append(last)
            last = self.blocks[last].pred
        return path[::-1]


def _compute_end(program: Program) -> float:
    """When the stage can hand its output on: everything but the data-parallel stream is done."""
    return max((op.end_s for op in program.ops if op.stream != "dp_comm"), default=0.0)


def _block_length(program: Program, work: StepWork) -> float:
    """How long a block holds its stage. With ZeRO-2/3 every micro-batch's gradient traffic must
    leave before the next block's joins the same data-parallel stream, so it counts."""
    return program.end_s if work.dp_every_micro_batch else _compute_end(program)


def _templates(work: StepWork) -> dict[tuple[int, int, str], Program]:
    templates: dict[tuple[int, int, str], Program] = {}
    for stage in range(work.pp):
        for chunk in range(work.vpp):
            templates[(stage, chunk, "forward")] = stage_forward(work, stage, chunk=chunk)
            templates[(stage, chunk, "forward_first")] = stage_forward(work, stage, first_micro_batch=True,
                                                                       chunk=chunk)
            templates[(stage, chunk, "backward")] = stage_backward(work, stage, last_micro_batch=False, chunk=chunk)
            templates[(stage, chunk, "backward_last")] = stage_backward(work, stage, last_micro_batch=True,
                                                                        chunk=chunk)
    return templates


def _template_key(kind: str, mb: int, m: int) -> str:
    if kind == "forward":
        return "forward_first" if mb == 0 else "forward"
    return "backward_last" if mb == m - 1 else "backward"


def schedule_step(work: StepWork) -> PipelineSchedule:
    pp, m, vpp = work.pp, work.num_micro_batches, work.vpp
    templates = _templates(work)
    bare = _templates(without_dp(work))
    # Megatron's micro-batch group N: the plan's own, else pp where m % pp == 0 (micro_batch_group)
    group = int(micro_batch_group(pp, m, work.vpp_group))
    orders = [stage_order(pp, m, s, vpp, group) for s in range(pp)]
    cursor = [0] * pp
    done: dict[tuple[int, int, str, int], int] = {}
    blocks: list[Block] = []
    stage_tail = [-1] * pp
    # Per stage: DP seconds on the stream, and how much longer DP traffic made the blocks.
    dp_busy, dp_exposed = [0.0] * pp, [0.0] * pp
    remaining = pp * 2 * m * vpp
    # Per stage: when its data-parallel stream is free, and the block that last queued on it.
    dp_free, dp_last = [0.0] * pp, [-1] * pp
    calls = {key: program_dp_calls(program) for key, program in templates.items()}
    by_chunk = work.dp_gather_by_chunk
    lumps = [[chunk_gather_s(work, s, c) for c in range(vpp)] for s in range(pp)] if by_chunk else []
    gathers: dict[tuple[int, int], int] = {}  # (stage, chunk) -> its gather block (by_chunk)
    waits: dict[int, float] = {}  # gather block -> the seconds its chunk's first forward waited
    forwards, backwards = [0] * pp, [0] * pp
    launches = [grad_sync_launches(pp, m, s, vpp, group) if work.dp_reduce_whole_chunk else {} for s in range(pp)]
    early = list(work.dp_early_gather_s)
    if by_chunk:  # after the first stage, chunk 0 is one bucket, gathered from the step's start
        early = [0.0] + [lumps[s][0] for s in range(1, pp)]
    # A stage's single parameter bucket gathered from the step's start (Megatron launches the
    # first gather in zero_grad, sim.work.StepWork.dp_early_gather_s): its first forward waits.
    for stage, seconds in enumerate(early):
        if seconds > 0:
            blocks.append(Block(stage, "dp_param_gather", -1, 0.0, seconds, -1, 0.0, None))
            stage_tail[stage] = len(blocks) - 1
            dp_free[stage], dp_last[stage] = seconds, len(blocks) - 1

    def dispatch(stage: int, chunk: int, at_s: float, after: int) -> None:
        """Queue a chunk's parameter all-gather on the stage's stream at at_s (by_chunk)."""
        if lumps[stage][chunk] <= 0:
            return
        queued = dp_free[stage] > at_s
        begin = max(dp_free[stage], at_s)
        blocks.append(Block(stage, "dp_param_gather", -1, begin, begin + lumps[stage][chunk],
                            dp_last[stage] if queued else after, 0.0, None, chunk))
        gathers[(stage, chunk)] = len(blocks) - 1
        waits[len(blocks) - 1] = 0.0
        dp_free[stage], dp_last[stage] = begin + lumps[stage][chunk], len(blocks) - 1
        dp_busy[stage] += lumps[stage][chunk]
    while remaining:
        progressed = False
        for stage in range(pp):
            if cursor[stage] == len(orders[stage]):
                continue
            kind, chunk, mb = orders[stage][cursor[stage]]
            upstream = upstream_stage(kind, stage, chunk, pp, vpp)
            dep = -1
            if upstream is not None:
                dep = done.get((*upstream, kind, mb), -2)
                if dep == -2:
                    continue
            key = _template_key(kind, mb, m)
            program = templates[(stage, chunk, key)]
            start, pred, waited = 0.0, -1, 0.0
            if stage_tail[stage] >= 0:
                start, pred = blocks[stage_tail[stage]].end_s, stage_tail[stage]
            if dep >= 0 and blocks[dep].end_s + blocks[dep].transfer_s > start:
                arrival = blocks[dep].end_s + blocks[dep].transfer_s
                waited = min(blocks[dep].transfer_s, arrival - start)
                start, pred = arrival, dep
            if kind == "forward" and by_chunk:
                # A chunk's first forward waits for its gather (Megatron's forward pre-hook).
                gather = gathers.get((stage, chunk), -1) if mb == 0 else -1
                if gather >= 0 and blocks[gather].end_s > start:
                    dp_exposed[stage] += blocks[gather].end_s - start
                    waits[gather] = blocks[gather].end_s - start
                    start, pred, waited = blocks[gather].end_s, gather, 0.0
                # The gather Megatron dispatches before this forward runs from its start.
                later = gather_dispatched(pp, vpp, stage, forwards[stage], group)
                if later > 0:
                    dispatch(stage, later, start, pred)
            # Every virtual stage boundary is a send (the last forward and the first backward not).
            sends = upstream_stage("backward" if kind == "forward" else "forward", stage, chunk, pp, vpp) is not None
            # Blocking, the send holds the stage; overlapped, it runs after the block (`transfer`).
            send, transfer = 0.0, 0.0
            if sends:
                send, transfer = (0.0, work.pp_transfer_s) if work.pp_overlap else (work.pp_transfer_s, 0.0)
            length = _block_length(program, work)
            # The stage's last block's gradient tail counts too (it delays the optimizer).
            tail = cursor[stage] == len(orders[stage]) - 1
            busy = program.busy_s("dp_comm")
            dp_busy[stage] += busy
            plain = bare[(stage, chunk, key)]
            dp_exposed[stage] += ((program.end_s if tail else length)
                                  - (plain.end_s if tail else _block_length(plain, work)))
            blocks.append(Block(stage, kind, mb, start, start + length + send, pred, send, program, chunk,
                                transfer, waited))
            done[(stage, chunk, kind, mb)] = len(blocks) - 1
            stage_tail[stage] = len(blocks) - 1
            if busy > 0:
                dp_free[stage] = queued_dp_end(calls[(stage, chunk, key)], start, dp_free[stage])
                dp_last[stage] = len(blocks) - 1
            if kind == "backward":  # the chunk syncs launched after it (a synced stage's: its last one's)
                own = (chunk,) if work.dp_stage_sync and key == "backward_last" else ()
                for sync in (chunk_sync_calls(work, stage, c) for c in launches[stage].get(backwards[stage], ()) + own):
                    dp_free[stage] = queued_dp_end([(_compute_end(program), t) for t in sync], start, dp_free[stage])
                    dp_busy[stage] += sum(sync)
                backwards[stage] += 1
                if own and not tail and dp_free[stage] > blocks[-1].end_s:
                    # The stage's compute waits for them after its send (torch.distributed.pipelining's
                    # perform_reduce_grad, cost.fsdp.stage_synced); after its last backward, _step_tail.
                    blocks.append(Block(stage, "dp_grad_sync", -1, blocks[-1].end_s, dp_free[stage], len(blocks) - 1,
                                        0.0, None, chunk))
                    dp_exposed[stage] += dp_free[stage] - blocks[-2].end_s
                    stage_tail[stage] = len(blocks) - 1
            if kind == "forward" and by_chunk:
                if forwards[stage] == 0:  # chunk 1's gather goes at the step's start, behind chunk 0's
                    dispatch(stage, 1, 0.0, -1)
                forwards[stage] += 1
            cursor[stage] += 1
            remaining -= 1
            progressed = True
        assert progressed, "1F1B schedule deadlocked"
    # A dispatched gather beside its stage's idle time (the fill) slows no compute (cost.overlap's
    # charge is SM/HBM sharing); its waits are counted exposed already.
    for (stage, _), index in gathers.items():
        runs = [(b.start_s, b.end_s) for b in blocks if b.stage == stage and b.kind in ("forward", "backward")]
        dp_busy[stage] -= idle_overlap_s((blocks[index].start_s, blocks[index].end_s), runs) - waits[index]
    _step_tail(work, blocks, stage_tail, dp_free, dp_busy, dp_exposed)
    step = max(b.end_s for b in blocks)
    return PipelineSchedule(blocks=blocks, templates=templates, step_time_s=step)


def _step_tail(work: StepWork, blocks: list[Block], stage_tail: list[int], dp_free: list[float],
               dp_busy: list[float], dp_exposed: list[float]) -> None:
    """Append each stage's blocks after its last backward: the rest of its gradient sync, the
    compute its hidden data-parallel traffic cost, a tied table's all-reduce on the two ends, its
    own optimizer update and what follows it. The stages meet twice around the update
    (cost.grad_buffer.slowest_stage_step_bytes): each starts its update once every stage has its
    gradients synced (the gradient norm's all-reduce over the model-parallel group), and none goes
    on past its update and parameter gather before every stage is done (train_step's all-reduces
    over the same group), so the next step starts on every stage at once, as schedule_step starts
    them."""

    def synced(stage: int) -> int:
        """The block after which the stage's gradients are synced (its calls' tail, if any)."""
        last = stage_tail[stage]
        last_program = blocks[last].program
        assert last_program is not None, "a stage's last block is a backward, which has a program"
        own = blocks[last].start_s + last_program.end_s  # includes the gradient buckets
        # Earlier blocks' calls still queued on the stream (a chunk's sync behind the last ones).
        grads_done = max(own, dp_free[stage])
        dp_exposed[stage] += grads_done - own
        if grads_done <= blocks[last].end_s:
            return last
        blocks.append(Block(stage, "dp_grad_tail", -1, blocks[last].end_s, grads_done, last, 0.0, None))
        return len(blocks) - 1

    def latest(ends: list[int]) -> int:
        """Of the blocks `ends`, the one ending last: it releases a sync all of them join."""
        return max(ends, key=lambda i: (blocks[i].end_s, i))

    def run(stage: int, prev: int, after: list[tuple[str, float]]) -> int:
        for kind, duration in after:
            start = blocks[prev].end_s
            blocks.append(Block(stage, kind, -1, start, start + duration, prev, 0.0, None))
            prev = len(blocks) - 1
        return prev

    pp = work.pp
    # Hidden DP traffic slows the compute it hides behind (cost.overlap): charged once, at the end
    # of the stage's own compute.
    done = [run(stage, synced(stage), [("dp_overlap_slowdown", work.dp_overlap_slowdown
                                        * max(0.0, dp_busy[stage] - dp_exposed[stage]))]) for stage in range(pp)]
    if work.replicated_all_reduce_s > 0:
        # The sequence-parallel parameters' and DSA's indexer's gradients over each stage's TP group
        # (finalize_model_grads' _allreduce_non_tensor_model_parallel_grads, before the embedding's;
        # cost.replicated_grads).
        done = [run(stage, done[stage], [("replicated_all_reduce", work.replicated_all_reduce_s)])
                for stage in range(pp)]
    if work.tied_all_reduce_s > 0 and pp > 1:
        # The tied table's all-reduce (cost.tied_embedding): the two ends meet once both are
        # synced (finalize_model_grads), the later one releasing it.
        ends = (0, pp - 1)
        release = latest([done[stage] for stage in ends])
        start = blocks[release].end_s
        for stage in ends:
            blocks.append(Block(stage, "tied_all_reduce", -1, start, start + work.tied_all_reduce_s, release, 0.0,
                                None))
            done[stage] = len(blocks) - 1
    norm = latest(done)
    updated = [run(stage, norm, [("optimizer", work.optimizer_of(stage)),
                                 ("dp_param_gather", work.dp_param_gather_s)]) for stage in range(pp)]
    stepped = latest(updated)
    # The FP8 weights' cast, in the next step's first forward, after the gather it reads (none for
    # bf16 weights, which get no block).
    for stage, seconds in enumerate(work.weight_cast_s):
        if seconds > 0:
            run(stage, stepped, [("weight_cast", seconds)])
