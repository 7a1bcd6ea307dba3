"""Result types of the cost model: one evaluated plan, and a whole search.

Every number is per GPU and per optimizer step unless its name says otherwise. The search keeps
all candidates in a pandas frame (one row per candidate, columns named as the fields below with
the prefixes of FRAME_PREFIXES); `PlanEstimate.from_row` turns a row back into a typed result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field, PrivateAttr, field_serializer, model_serializer

from sp_planner.plan import ParallelPlan
from sp_planner.specs.base import FrozenModel, whole_bytes  # noqa: F401 (whole_bytes was defined here)

if TYPE_CHECKING:  # pandas loads where a frame is met (the functions below), not with the planner: sp-plan
    import pandas as pd  # refuses bad input without it (benchmarks/startup.py)

Link = Literal["intra", "inter", "none"]
# Frame column prefix of each breakdown field of PlanEstimate (the CSV's column names).
FRAME_PREFIXES: dict[str, str] = {"memory": "mem_", "time": "time_", "comm_bytes": "comm_", "comm_links": "link_"}


def whole_byte_parts(parts: ArrayLike) -> np.ndarray:
    """Parts of a total (the last axis, in the order they were summed) as whole bytes that add up
    to the total's whole bytes: each part is the step between its running totals' whole bytes, so
    it lies within a byte of its value, and the parts of a peak sum to round(peak) (rounding each
    part alone left plans.csv's mem_ columns 1-3 bytes off memory_peak_bytes). Rows with a part
    that is not finite keep it, the rest rounded alone."""
    parts = np.asarray(parts, dtype=np.float64)
    stepped = np.diff(np.rint(np.cumsum(parts, axis=-1)), axis=-1, prepend=0.0)
    finite = np.isfinite(parts).all(axis=-1, keepdims=True)
    return np.where(finite, stepped, np.where(np.isfinite(parts), np.rint(parts), parts))


class MemoryBreakdown(FrozenModel):
    params_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    logits_bytes: float
    comm_buffers_bytes: float
    reserve_bytes: float

    def whole_bytes(self) -> dict[str, int | float]:
        """The parts as files hold them: whole bytes summing to the peak's (whole_byte_parts)."""
        values = whole_byte_parts([getattr(self, name) for name in type(self).model_fields])
        return {name: whole_bytes(float(v)) for name, v in zip(type(self).model_fields, values)}

    @model_serializer(when_used="json")
    def _json_bytes(self) -> dict[str, int | float]:
        return self.whole_bytes()

    @property
    def total_bytes(self) -> float:
        return sum(getattr(self, name) for name in type(self).model_fields)


class TimeBreakdown(FrozenModel):
    """Seconds of the critical path, per step. `step_time_s` is their sum."""

    gemm_s: float
    attention_s: float
    recompute_s: float
    tp_comm_s: float
    ulysses_comm_s: float
    ring_comm_exposed_s: float
    pp_comm_s: float
    dp_comm_exposed_s: float
    bubble_s: float
    optimizer_s: float
    moe_comm_s: float = 0.0
    host_overhead_s: float = 0.0  # host (CPU) time the GPU work does not hide (cost.host)
    offload_s: float = 0.0  # activation CPU offloading's copies compute does not hide (cost.offload)
    mfu_ceiling_s: float = 0.0  # stretch to the best published MFU for the hardware (cost.mfu_ceiling)


class CommBytes(FrozenModel):
    """Bytes one GPU sends per step, by collective."""

    ulysses_all_to_all: int
    ring_p2p: int
    tp_all_gather: int
    tp_reduce_scatter: int
    pp_p2p: int
    dp_reduce_scatter: int
    dp_all_gather: int
    cp_all_gather: int = 0  # all-gather CP: K/V gathered over the ring axis
    cp_reduce_scatter: int = 0  # all-gather CP: dK/dV reduce-scattered
    dp_all_reduce: int = 0  # HSDP: the gradient shard all-reduced across replicas
    ep_all_to_all: int = 0
    etp_all_gather: int = 0
    edp_reduce_scatter: int = 0
    edp_all_gather: int = 0
    # step end: the sequence-parallel parameters' and DSA indexer's gradients; torchtitan's
    # per-parameter Partial-gradient all-reduces (cost.partial_tp_grads)
    tp_all_reduce: int = 0


class CommLinks(FrozenModel):
    """Which link each collective's group spans: NVLink/PCIe inside a node, or the network."""

    ulysses_all_to_all: Link
    ring_p2p: Link
    tp_all_gather: Link
    tp_reduce_scatter: Link
    pp_p2p: Link
    dp_reduce_scatter: Link
    dp_all_gather: Link
    cp_all_gather: Link = "none"
    cp_reduce_scatter: Link = "none"
    dp_all_reduce: Link = "none"
    ep_all_to_all: Link = "none"
    etp_all_gather: Link = "none"
    edp_reduce_scatter: Link = "none"
    edp_all_gather: Link = "none"
    tp_all_reduce: Link = "none"


class PlanEstimate(FrozenModel):
    plan: ParallelPlan
    fits: bool
    # None when the plan is valid and fits; otherwise the first rule or the memory shortfall.
    reason: str | None = None
    memory: MemoryBreakdown
    memory_peak_bytes: float
    time: TimeBreakdown
    step_time_s: float
    tokens_per_s: float
    # Full-square model FLOPs: 6*params*tokens + attention over the whole s x s square, no
    # recompute (Megatron-LM to core_v0.11; cost.flops.model_flops_per_step).
    model_tflops_per_gpu: float
    # FLOPs actually executed: causal half of attention, plus recompute.
    hardware_tflops_per_gpu: float
    mfu: float
    hardware_mfu: float
    comm_bytes: CommBytes
    comm_links: CommLinks
    # Step time from the event simulator (sp_planner.sim), when the plan was re-ranked by it.
    simulated_step_time_s: float | None = None

    @field_serializer("memory_peak_bytes", when_used="json")
    def _json_bytes(self, value: float) -> int | float:
        return whole_bytes(value)

    @classmethod
    def from_row(cls, row: pd.Series) -> "PlanEstimate":
        """One row of SearchResult.frame as an estimate."""
        import pandas as pd

        def part(field: str) -> dict[str, object]:
            model = cls.model_fields[field].annotation
            assert isinstance(model, type) and issubclass(model, FrozenModel), field
            return {name: plain(row[f"{FRAME_PREFIXES[field]}{name}"]) for name in model.model_fields}

        plan = plan_of_row(row)
        reason = row["reason"]
        return cls(
            plan=plan,
            fits=bool(row["fits"]),
            reason=None if (reason is None or reason == "" or pd.isna(reason)) else str(reason),
            memory=MemoryBreakdown(**part("memory")),
            memory_peak_bytes=float(row["memory_peak_bytes"]),
            time=TimeBreakdown(**part("time")),
            step_time_s=float(row["step_time_s"]),
            tokens_per_s=float(row["tokens_per_s"]),
            model_tflops_per_gpu=float(row["model_tflops_per_gpu"]),
            hardware_tflops_per_gpu=float(row["hardware_tflops_per_gpu"]),
            mfu=float(row["mfu"]),
            hardware_mfu=float(row["hardware_mfu"]),
            comm_bytes=CommBytes(**part("comm_bytes")),
            comm_links=CommLinks(**part("comm_links")),
        )


def plain(value: object) -> object:
    """numpy scalars -> Python scalars, so pydantic's strict int/bool fields accept them; a missing
    value of a nullable column (pandas NA, e.g. the even pipeline split) -> None."""
    import pandas as pd

    if value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _deep_copy() -> bool:
    """pandas >= 3 copies on write: a shallow copy already keeps the result's frame as the search made
    it whatever a caller does to its copy, without copying the ~200,000 rows of a 4096-GPU search."""
    import pandas as pd

    return int(pd.__version__.split(".")[0]) < 3


def plan_of_row(row: pd.Series | Mapping[str, object]) -> ParallelPlan:
    """The plan of one row of SearchResult.frame (PlanEstimate.from_row's), or of its plan columns'
    values by name (plain makes numpy and Python scalars alike)."""
    return ParallelPlan(**{name: plain(row[name]) for name in ParallelPlan.model_fields})


class SearchResult(FrozenModel):
    candidates_evaluated: int = Field(ge=0)
    # Best first: plans that fit ranked by step time, then the rest by how close they came.
    ranked: tuple[PlanEstimate, ...]
    # How many candidates each rule removed ("heads", "seq_len", "oom", ...).
    prune_counts: dict[str, int]
    _frame: pd.DataFrame | None = PrivateAttr(default=None)
    _make_frame: Callable[[], pd.DataFrame] | None = PrivateAttr(default=None)
    _head: pd.DataFrame | None = PrivateAttr(default=None)

    def __init__(self, *, frame: pd.DataFrame | Callable[[], pd.DataFrame], head: pd.DataFrame | None = None,
                 **fields: object) -> None:
        """`frame`: every candidate, or a function that builds them (called once, on first access);
        `head`: the first rows of that frame when they are already at hand."""
        import pandas as pd

        super().__init__(**fields)
        if isinstance(frame, pd.DataFrame):
            self._frame = frame.copy(deep=_deep_copy())
        else:
            self._make_frame = frame
        self._head = None if head is None else head.copy(deep=_deep_copy())

    @property
    def frame(self) -> pd.DataFrame:
        """Every candidate, one row each, in rank order (see module docstring for the columns).
        A copy: the result stays as the search made it whatever a caller does to the frame."""
        if self._frame is None:
            assert self._make_frame is not None
            self._frame = self._make_frame()
            self._make_frame = None
        return self._frame.copy(deep=_deep_copy())

    def head(self, n: int) -> pd.DataFrame:
        """The first `n` rows of `frame`, without building the whole frame when the search kept them."""
        if self._frame is None and self._head is not None and n <= len(self._head):
            return self._head.head(n).copy(deep=_deep_copy())
        if self._frame is not None:  # built: copy its first rows only, not every row as `frame` would
            return self._frame.head(n).copy(deep=_deep_copy())
        return self.frame.head(n)
