"""What a simulation returns: step time, stream usage, critical path and the timeline (JSON-ready)."""

from __future__ import annotations


from pydantic import Field

from sp_planner.plan import ParallelPlan
from sp_planner.sim.flows import PhaseResult
from sp_planner.sim.streams import Stream
from sp_planner.specs.base import FrozenModel



# Every kind of work a critical path can hold, in the order timeline.json lists them; each key is
# present in critical_path_by_kind_s (0.0 when the plan has none), so tools read one schema.
CRITICAL_PATH_KINDS: tuple[str, ...] = (
    "gemm", "attention", "recompute_gemm", "recompute_attention", "recompute_elementwise", "ulysses_comm", "ring_comm",
    "tp_comm",
    "moe_comm", "pp_comm", "dp_comm", "optimizer", "idle", "host_overhead", "activation_offload", "mfu_ceiling",
)


class TimelineEvent(FrozenModel):
    stage: int
    rank: int  # the stage's representative global rank
    stream: Stream
    kind: str  # gemm, attention, ring_comm, ulysses_comm, tp_comm, pp_comm, dp_comm, recompute_*, ...
    name: str
    micro_batch: int | None = None
    start_s: float
    end_s: float


class StreamUsage(FrozenModel):
    stage: int
    rank: int
    stream: Stream
    busy_s: float
    idle_s: float


class CriticalSegment(FrozenModel):
    stage: int
    kind: str
    name: str
    start_s: float
    end_s: float


class SimResult(FrozenModel):
    plan: ParallelPlan
    num_nodes: int
    gpus_per_node: int
    topology: str  # the fabric simulated: --topology, or the profile's where it is "profile"
    # What was simulated, so that two timelines can be told apart (keys that are not plan-file keys:
    # planfile.load_plan_file knows a timeline by its lack of "model").
    model_name: str
    hardware_name: str
    seq_len: int
    global_batch: int
    nics_per_node: int  # NICs a node's network rate is split over: --nics-per-node, else one per GPU
    step_time_s: float
    # The analytic model's step time for the same plan, when it could be evaluated.
    analytic_step_time_s: float | None = None
    tokens_per_s: float
    num_micro_batches: int
    # Idle fraction of the compute stream of the busiest stage's representative (pipeline bubble
    # plus waits on exposed communication).
    compute_idle_fraction: float
    streams: tuple[StreamUsage, ...]
    # Seconds of the critical path by kind of work, every CRITICAL_PATH_KINDS key; they sum to step_time_s.
    critical_path_by_kind_s: dict[str, float]
    # Seconds the data-parallel traffic adds to the step (before the MFU ceiling): the step less
    # the same schedule without it; the analytic model's dp_comm_exposed_s.
    dp_exposed_s: float = 0.0
    critical_path: tuple[CriticalSegment, ...]
    # Communication phases: one collective run by all its groups at once, contention included.
    phases: tuple[PhaseResult, ...]
    # Whole step, one block per stage forward/backward of a micro-batch (all stages).
    events: tuple[TimelineEvent, ...]
    # Op-level detail of one forward and one backward of the first micro-batch, per stage.
    detail_events: tuple[TimelineEvent, ...] = Field(default=())


def timeline_text(result: SimResult) -> str:
    """timeline.json as sp-simulate writes it; TIMELINE_SIGNATURE is its head."""
    return result.model_dump_json(indent=1) + "\n"


def _timeline_head() -> bytes:
    """What every timeline_text starts with: the result's first field (the plan) opening on the
    plan's first degree, so a later sp-simulate knows an earlier one's timeline.json by its content
    (a timeline.json of the user's stays)."""
    first, field = next(iter(SimResult.model_fields.items()))
    assert field.annotation is ParallelPlan, "timeline.json opens on the plan"
    plan_first = next(iter(ParallelPlan.model_fields))
    return f'{{\n "{first}": {{\n  "{plan_first}": '.encode()


TIMELINE_SIGNATURE = _timeline_head()
