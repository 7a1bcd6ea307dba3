"""simulate(): one training step of a plan on the cluster graph, as a SimResult.

Symmetry keeps it fast at 100k+ GPUs: every collective is one phase whose flows are solved for
one period of ranks and replicated by translation (sim.symmetry; vectorised max-min over all
groups when no shift is a symmetry), and the timeline is scheduled for one representative
rank per pipeline stage (every rank of a stage runs the same ops; the slowest group of each
phase sets the phase's time), with each stage's forward and backward scheduled once and reused
for every micro-batch. The host (CPU) time the GPU work does not hide is not scheduled: it is the
analytic model's (cost.host), added as one block at the end of the step, as are activation CPU
offloading's exposed copies (cost.offload).
"""

from __future__ import annotations

from typing import NamedTuple

from sp_planner.cost.fp8_attention import with_fp8_attention
from sp_planner.cost.fsdp import plan_as_run
from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.cost.mfu_ceiling import bounded_flops_per_step, mfu_ceiling_s
from sp_planner.cost.step import time_columns
from sp_planner.plan import ParallelPlan
from sp_planner.plan_checks import check_plan_runs
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.pipeline import Block, PipelineSchedule, schedule_step
from sp_planner.sim.result import CRITICAL_PATH_KINDS, CriticalSegment, SimResult, StreamUsage, TimelineEvent
from sp_planner.sim.step_work import step_work
from sp_planner.sim.streams import STREAMS, Stream
from sp_planner.sim.work import without_dp
from sp_planner.candidates import Candidates
from sp_planner.estimate import PlanEstimate
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

BLOCK_STREAM: dict[str, Stream] = {"forward": "compute", "backward": "compute", "optimizer": "compute",
                "dp_grad_tail": "dp_comm", "dp_grad_sync": "dp_comm", "dp_param_gather": "dp_comm",
                "dp_overlap_slowdown": "compute",
                "mfu_ceiling": "compute", "host_overhead": "compute", "weight_cast": "compute",
                "activation_offload": "compute", "tied_all_reduce": "comm",
                "replicated_all_reduce": "comm"}
# The tied embedding's all-reduce runs over the pipeline's ends: the analytic model's pp_comm_s.
BLOCK_KIND = {"dp_grad_tail": "dp_comm", "dp_grad_sync": "dp_comm", "dp_param_gather": "dp_comm",
              "optimizer": "optimizer",
              "tied_all_reduce": "pp_comm", "replicated_all_reduce": "tp_comm",
              "dp_overlap_slowdown": "dp_comm", "mfu_ceiling": "mfu_ceiling", "host_overhead": "host_overhead",
              "weight_cast": "gemm", "activation_offload": "activation_offload"}


class AnalyticStep(NamedTuple):
    """The analytic model's figures for one plan that the simulator reads: the step time it sets the
    simulated one beside, and the host time and activation offload copies it adds as blocks."""

    step_time_s: float
    host_overhead_s: float  # exposed host (CPU) time (cost.host)
    offload_s: float  # exposed activation offload copies (cost.offload)

    @classmethod
    def of(cls, estimate: PlanEstimate) -> AnalyticStep:
        """search.evaluate's figures for the plan: the same time columns (cost.step.time_columns) on
        the same fast link domain, so the same floats analytic_step gives for its runtime."""
        return cls(estimate.step_time_s, estimate.time.host_overhead_s, estimate.time.offload_s)


def analytic_step(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
                  gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> AnalyticStep:
    """The analytic model's step time, exposed host time and exposed offload copies for one plan."""
    hardware = with_fp8_attention(hardware) if plan.fp8_attention else hardware
    plan = plan_as_run(plan, runtime.states.param_shard_stage)
    step = time_columns(model, hardware, workload, Candidates.of_plan(plan), gpus_per_node=gpus_per_node,
                        overlap=runtime.overlap, states=runtime.states, cuda_graphs=runtime.cuda_graphs,
                        ring_impl=runtime.ring, grad_sync=runtime.grad_sync,
                        loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                        sequence_parallel=runtime.sequence_parallel,
                        sums_sequence_parallel_grads=runtime.sums_sequence_parallel_grads,
                        partial_tp_grads=runtime.partial_tp_grads, tp_gathers=runtime.tp_gathers,
                        unpads_attention=runtime.unpads_attention, moe_router_dtype=runtime.moe_router_dtype,
                        expert_row_padding=runtime.expert_row_padding)
    return AnalyticStep(float(step.step_time_s[0]), float(step.time.host_overhead_s[0]),
                        float(step.time.offload_s[0]))


def analytic_step_time_s(model: ModelSpec, hardware: HardwareProfile, workload: Workload,
                         plan: ParallelPlan, *, gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> float:
    return analytic_step(model, hardware, workload, plan, gpus_per_node=gpus_per_node, runtime=runtime)[0]


def simulate(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
             num_nodes: int, gpus_per_node: int, topology: str | None = None,
             nics_per_node: int | None = None, detail: bool = True,
             runtime: Runtime = MEGATRON_RUNTIME, analytic: AnalyticStep | None = None) -> SimResult:
    """Simulate one optimizer step. `topology` overrides the profile's fabric ('rail_optimized' or
    'fat_tree'); `detail` adds op-level events of micro-batch 0 for each stage; `runtime` is what
    the framework overlaps, the widths its gradients and gathered parameters move in and the CUDA
    graphs whose host time the analytic model counts (cost.runtime); `analytic`: the analytic
    model's figures for the plan with that runtime where the caller has them (AnalyticStep.of an
    estimate; sp-simulate evaluates the plan for its fit), else computed here."""
    check_plan_runs(plan, model, workload, num_nodes=num_nodes, gpus_per_node=gpus_per_node)
    if runtime.overlap.ep_comm:  # only corpus rows state it; no framework runtime sp-plan emits does
        raise ValueError("the simulator does not schedule Megatron's EP all-to-all overlap (cost.ep_overlap); "
                         "simulate the run with Overlap.ep_comm False")
    if runtime.overlap.tp_comm:  # likewise: only corpus rows state --tp-comm-overlap
        raise ValueError("the simulator does not schedule Transformer Engine's userbuffers TP overlap "
                         "(cost.tp_overlap; it would run every TP collective exposed); simulate the run with "
                         "Overlap.tp_comm False")
    asked, hardware_name = plan, hardware.name  # as given: the copies below are the simulator's own
    plan = plan_as_run(plan, runtime.states.param_shard_stage)  # torch FSDP's ZeRO-1/2 (cost.fsdp)
    if plan.fp8_attention:  # its curves, once (cost.fp8_attention)
        hardware = with_fp8_attention(hardware)
    # The graph's "node" is the fast (NVLink) domain: on GB200 NVL72 one vertex of up to 72 GPUs
    # behind NVSwitch, with each GPU's NIC, while the hosts (4 GPUs) only matter to the launcher;
    # the share of a domain the job uses, as the analytic model takes it (link_domain_gpus).
    world = num_nodes * gpus_per_node
    domain = hardware.link_domain_gpus(gpus_per_node, world)
    graph_nodes = world // domain
    hardware = hardware.model_copy(update={"gpus_per_node": domain, "nvlink_domain_gpus": None})
    cluster = build_cluster(hardware, graph_nodes, topology=topology, nics_per_node=nics_per_node)
    work, phases = step_work(cluster, model, workload, plan, runtime)
    unheld = schedule_step(work)
    dp_exposed = unheld.step_time_s - schedule_step(without_dp(work)).step_time_s
    if analytic is None:
        analytic = analytic_step(model, hardware, workload, plan, gpus_per_node=cluster.gpus_per_node, runtime=runtime)
    analytic_s, host_s, offload_s = analytic
    # The simulator schedules GPU work only; the host time it does not hide is the analytic
    # model's (cost.host, less the data-parallel traffic that runs beside its stalls, cost.step),
    # added as a block at the end like the MFU ceiling's, and so are the
    # activation offload copies the layers do not hide (cost.offload).
    extended = _extended(_extended(unheld, "host_overhead", host_s), "activation_offload", offload_s)
    sched = _held_to_ceiling(extended, model, hardware, workload, plan)
    step = sched.step_time_s
    reps = [stage * (plan.world_size // plan.pp) for stage in range(plan.pp)]
    streams = _stream_usage(sched, reps, step)
    crit, by_kind = _critical_path(sched)
    compute_idle = max(s.idle_s for s in streams if s.stream == "compute") / step if step > 0 else 0.0
    return SimResult(
        plan=asked,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        topology=cluster.topology,
        model_name=model.name,
        hardware_name=hardware_name,
        seq_len=workload.seq_len,
        global_batch=workload.global_batch,
        nics_per_node=gpus_per_node if nics_per_node is None else nics_per_node,
        step_time_s=step,
        analytic_step_time_s=analytic_s,
        tokens_per_s=workload.tokens_per_step / step if step > 0 else 0.0,
        num_micro_batches=work.num_micro_batches,
        compute_idle_fraction=compute_idle,
        streams=streams,
        critical_path_by_kind_s=by_kind,
        dp_exposed_s=dp_exposed,
        critical_path=crit,
        phases=tuple(phases),
        events=_block_events(sched, reps),
        detail_events=_detail_events(sched, reps) if detail else (),
    )


def _held_to_ceiling(sched: PipelineSchedule, model: ModelSpec, hardware: HardwareProfile, workload: Workload,
                     plan: ParallelPlan) -> PipelineSchedule:
    """The schedule stretched, as the analytic step is, to the best published MFU (cost.mfu_ceiling)."""
    flops = bounded_flops_per_step(model, workload)
    extra = float(mfu_ceiling_s(hardware, flops / plan.world_size, sched.step_time_s, plan.precision))
    return _extended(sched, "mfu_ceiling", extra)


def _extended(sched: PipelineSchedule, kind: str, extra: float) -> PipelineSchedule:
    """The schedule with a block of `extra` seconds of `kind` after its last block (none if 0)."""
    if extra <= 0:
        return sched
    last = max(range(len(sched.blocks)), key=lambda i: (sched.blocks[i].end_s, i))
    end = sched.blocks[last].end_s
    tail = Block(sched.blocks[last].stage, kind, -1, end, end + extra, last, 0.0, None)
    return PipelineSchedule(blocks=[*sched.blocks, tail], templates=sched.templates, step_time_s=end + extra)


def _stream_usage(sched: PipelineSchedule, reps: list[int], step: float) -> tuple[StreamUsage, ...]:
    busy = {(s, st): 0.0 for s in range(len(reps)) for st in STREAMS}
    # Blocks share their stage's template programs: sum each program's ops once.
    per_program: dict[int, dict[Stream, float]] = {}
    for b in sched.blocks:
        if b.program is not None:
            if id(b.program) not in per_program:
                per_program[id(b.program)] = {st: b.program.busy_s(st) for st in STREAMS}
            for st, seconds in per_program[id(b.program)].items():
                busy[(b.stage, st)] += seconds
            busy[(b.stage, "comm")] += b.send_s + b.transfer_s
        elif b.kind not in ("dp_grad_tail", "dp_grad_sync"):  # a backward's buckets, counted with its program
            busy[(b.stage, BLOCK_STREAM[b.kind])] += b.end_s - b.start_s
    return tuple(StreamUsage(stage=s, rank=reps[s], stream=st, busy_s=v, idle_s=max(0.0, step - v))
                 for (s, st), v in busy.items())


def _critical_path(sched: PipelineSchedule) -> tuple[tuple[CriticalSegment, ...], dict[str, float]]:
    segments: list[CriticalSegment] = []
    by_kind = dict.fromkeys(CRITICAL_PATH_KINDS, 0.0)

    def add(kind: str, seconds: float) -> None:
        if seconds > 0:
            by_kind[kind] += seconds  # a kind missing from CRITICAL_PATH_KINDS is a KeyError here

    previous_end = 0.0
    per_program: dict[int, dict[str, float]] = {}  # template programs are shared by blocks
    for i in sched.critical_blocks():
        b = sched.blocks[i]
        # A wait for the upstream block's overlapped send is pipeline communication, not idling.
        gap = b.start_s - previous_end
        add("pp_comm", min(b.waited_s, gap))
        add("idle", gap - min(b.waited_s, gap))
        previous_end = b.end_s
        label = f"{b.kind} mb {b.micro_batch}" if b.micro_batch >= 0 else b.kind
        segments.append(CriticalSegment(stage=b.stage, kind=BLOCK_KIND.get(b.kind, b.kind), name=label,
                                        start_s=b.start_s, end_s=b.end_s))
        if b.program is None:
            add(BLOCK_KIND[b.kind], b.end_s - b.start_s)
            continue
        if id(b.program) not in per_program:
            # A ZeRO-2/3 block lasts until its data-parallel traffic has left (sim.pipeline).
            holds_dp = b.end_s - b.send_s - b.start_s >= b.program.end_s * (1 - 1e-12)
            streams = STREAMS if holds_dp else ("compute", "comm")
            per_program[id(b.program)] = b.program.critical_by_kind(streams)
        for kind, seconds in per_program[id(b.program)].items():
            add(kind, seconds)
        add("pp_comm", b.send_s)
    return tuple(segments), by_kind


def _block_events(sched: PipelineSchedule, reps: list[int]) -> tuple[TimelineEvent, ...]:
    events = []
    for b in sched.blocks:
        mb = b.micro_batch if b.micro_batch >= 0 else None
        end = b.end_s - b.send_s
        events.append(TimelineEvent(stage=b.stage, rank=reps[b.stage], stream=BLOCK_STREAM[b.kind],
                                    kind=BLOCK_KIND.get(b.kind, b.kind), name=_label(b), micro_batch=mb,
                                    start_s=b.start_s, end_s=end))
        if b.send_s > 0:
            events.append(TimelineEvent(stage=b.stage, rank=reps[b.stage], stream="comm", kind="pp_comm",
                                        name=f"pp send {_label(b)}", micro_batch=mb, start_s=end, end_s=b.end_s))
        if b.transfer_s > 0:  # an overlapped send, beside the stage's next blocks
            events.append(TimelineEvent(stage=b.stage, rank=reps[b.stage], stream="comm", kind="pp_comm",
                                        name=f"pp send {_label(b)}", micro_batch=mb, start_s=b.end_s,
                                        end_s=b.end_s + b.transfer_s))
    return tuple(events)


def _label(b: Block) -> str:
    if b.micro_batch < 0:
        return b.kind
    chunk = f" chunk {b.chunk}" if b.program is not None and b.chunk else ""
    return f"{b.kind[0].upper()}{b.micro_batch}{chunk}"


def _detail_events(sched: PipelineSchedule, reps: list[int]) -> tuple[TimelineEvent, ...]:
    events = []
    for b in sched.blocks:
        if b.micro_batch != 0 or b.program is None:
            continue
        for op in b.program.ops:
            if op.duration_s > 0:
                events.append(TimelineEvent(stage=b.stage, rank=reps[b.stage], stream=op.stream, kind=op.kind,
                                            name=f"{_label(b)} {op.name}", micro_batch=0,
                                            start_s=b.start_s + op.start_s, end_s=b.start_s + op.end_s))
    return tuple(events)
