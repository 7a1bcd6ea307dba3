"""The search's candidates costed as typed columns (Evaluated), with each shown row's reason: what
search.search ranks and search.evaluate answers for one plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.cost.comm import CommColumns, comm_columns
from sp_planner.cost.fsdp import candidates_as_run
from sp_planner.cost.memory import MemoryColumns, memory_columns, stage_states_bytes
from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.cost.stage_states import FirstMiddleLastStates
from sp_planner.cost.step import time_columns
from sp_planner.cost.step_bound import StepBound, step_lower_bound
from sp_planner.cost.step_columns import StepColumns
from sp_planner.cost.step_layers import LayerParts
from sp_planner.cost.step_options import StepOptions
from sp_planner.distinct import distinct_rows
from sp_planner.estimate import (
    FRAME_PREFIXES,
    CommBytes,
    CommLinks,
    MemoryBreakdown,
    PlanEstimate,
    TimeBreakdown,
    plain,
)
from sp_planner.layout import GRID_ORDER, group_size
from sp_planner.plan import PRECISIONS, RECOMPUTE, RULES, RuleFacts, facts_violations, fp8_recipe_names
from sp_planner.space import DEGREES, EXPERT_DEGREES, Axes, first_rule, rule_masks
from sp_planner.candidates import Candidates
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import GIB

if TYPE_CHECKING:  # pandas loads in frame(), not with the planner: sp-plan refuses bad input without it
    import pandas as pd


def search_axes(model: ModelSpec, hardware: HardwareProfile) -> Axes:
    """What the non-degree axes read: the model's layers, the precisions the hardware runs and the
    model's routed experts (0 for dense models), whether it has MLA (recompute mla_up_proj) and its
    multi-token prediction depths (the split, pipeline_split.search_split)."""
    return Axes(num_layers=model.num_layers, precisions=hardware.precisions,  # type: ignore[arg-type]
                num_experts=model.moe.num_experts if model.moe else 0, mla=model.mla is not None,
                mtp_layers=model.mtp_layers)


def _rule_messages(model: ModelSpec, workload: Workload, c: Candidates, code: np.ndarray) -> np.ndarray:
    """The first broken rule's message from `plan.facts_violations`, computed once per distinct plan
    shape, and for that rule only (the masks have already said which rule comes first)."""
    reasons = np.full(len(code), "", dtype=object)
    bad = np.flatnonzero(code >= 0)
    if len(bad) == 0:
        return reasons
    # The rules read the degrees, the micro-batch, the ring layout and the pipeline split only.
    keys = np.stack([getattr(c, n)[bad] for n in (*DEGREES, *EXPERT_DEGREES, "micro_batch", "zigzag", "vpp",
                                                   "first_stage_layers", "last_stage_layers",
                                                   "cpu_offload_layers")], axis=1)
    first, inverse = distinct_rows(keys)
    facts = RuleFacts.of(model, workload)
    texts = []
    for i in bad[first]:
        rule = RULES[code[i]]
        (broken,) = facts_violations(facts, c.plan(i), (rule,))  # the scalar rule agrees with the mask
        texts.append(f"{rule}: {broken.message}")
    reasons[bad] = np.array(texts, dtype=object)[inverse.reshape(-1)]
    return reasons


class Evaluated(NamedTuple):
    """Every candidate's estimate as typed arrays, and whether and why it cannot run."""

    candidates: Candidates
    memory: MemoryColumns
    step: StepColumns
    # Priced by explained_rows on the rows it shows (None before): only the shown rows read them, and
    # comm_columns is per row, so they get what pricing every costed row gives them.
    comm: CommColumns | None
    fits: np.ndarray
    reason: np.ndarray
    rule_code: np.ndarray  # index into RULES, len(RULES) for OOM, -1 when it fits

    def estimate(self, i: int) -> PlanEstimate:
        reason, comm = self.reason[i], self.comm
        assert comm is not None  # explained_rows prices it
        return PlanEstimate(
            plan=self.candidates.plan(i),
            fits=bool(self.fits[i]),
            reason=str(reason) if reason else None,
            memory=MemoryBreakdown(**_at(self.memory, MemoryBreakdown, i)),
            memory_peak_bytes=float(self.memory.peak_bytes[i]),
            time=TimeBreakdown(**_at(self.step.time, TimeBreakdown, i)),
            step_time_s=float(self.step.step_time_s[i]),
            tokens_per_s=float(self.step.tokens_per_s[i]),
            model_tflops_per_gpu=float(self.step.model_tflops_per_gpu[i]),
            hardware_tflops_per_gpu=float(self.step.hardware_tflops_per_gpu[i]),
            mfu=float(self.step.mfu[i]),
            hardware_mfu=float(self.step.hardware_mfu[i]),
            comm_bytes=CommBytes(**_at(comm.sent_bytes, CommBytes, i)),
            comm_links=CommLinks(**_at(comm.links, CommLinks, i)),
        )

    def frame(self) -> pd.DataFrame:
        """One row per candidate; columns named as estimate.FRAME_PREFIXES says."""
        import pandas as pd  # here, not with the module (see the import above)

        c, step, comm = self.candidates, self.step, self.comm
        assert comm is not None  # explained_rows prices it
        cols: dict[str, object] = {name: getattr(c, name) for name in DEGREES}
        cols["zero"] = c.zero
        cols["recompute"] = np.array(RECOMPUTE, dtype=object)[c.recompute]
        cols["micro_batch"] = c.micro_batch
        cols["ring_layout"] = np.where(c.zigzag, "zigzag", "contiguous").astype(object)
        cols["cp_comm"] = np.where(c.allgather, "allgather", "p2p").astype(object)
        cols["dp_replicate"] = c.dp_replicate
        cols["reshard_after_forward"] = c.reshard
        cols.update({name: getattr(c, name) for name in EXPERT_DEGREES})
        cols["vpp"] = c.vpp
        # A candidate's own micro-batch group (--vpp-group), else NA: the one priced (ParallelPlan.vpp_group None).
        cols["vpp_group"] = pd.arrays.IntegerArray(c.vpp_group.astype(np.int64), c.vpp_group == 0)
        # 0 (the even split) as missing, as in the plan (None).
        for name in ("first_stage_layers", "last_stage_layers"):
            layers = getattr(c, name)
            split = pd.array(layers, dtype="Int64")
            split[layers == 0] = pd.NA
            cols[name] = split
        cols["precision"] = np.array(PRECISIONS, dtype=object)[c.precision]
        cols["fp8_recipe"] = fp8_recipe_names(c.fp8_current, c.fp8_blockwise)
        cols["fp8_attention"] = c.fp8_attention
        cols["cpu_offload_layers"] = c.cpu_offload_layers
        cols["adam_moments_bf16"] = c.adam_moments_bf16
        cols.update(_prefixed("memory", self.memory, MemoryBreakdown))
        cols["memory_peak_bytes"] = self.memory.peak_bytes
        cols.update(_prefixed("time", step.time, TimeBreakdown))
        cols.update({name: getattr(step, name) for name in step._fields if name != "time"})
        cols.update(_prefixed("comm_bytes", comm.sent_bytes, CommBytes))
        cols.update(_prefixed("comm_links", comm.links, CommLinks))
        cols["fits"] = self.fits
        cols["reason"] = self.reason  # rule_code is internal: left out, so the frame needs no drop (a copy)
        # copy=False: the columns as they are, not consolidated into 2-D blocks (a copy of every row,
        # GBs for a report's millions of candidates); pandas copies on write, so the frame stays apart.
        return pd.DataFrame(cols, copy=False)


def _prefixed(part: str, columns: tuple, model: type[FrozenModel]) -> dict[str, object]:
    return {f"{FRAME_PREFIXES[part]}{name}": getattr(columns, name) for name in model.model_fields}


def _at(columns: tuple, model: type[FrozenModel], i: int) -> dict[str, object]:
    """Entry `i` of typed columns as the fields of `model` (numpy scalars -> Python scalars)."""
    return {name: plain(getattr(columns, name)[i]) for name in model.model_fields}


def evaluate_rows(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                  gpus_per_node: int, code: np.ndarray | None = None,
                  runtime: Runtime = MEGATRON_RUNTIME, memory: MemoryColumns | None = None,
                  layers: LayerParts | None = None) -> Evaluated:
    """Costs of `c`; `code` is first_rule's answer when the caller has it. Reasons and the comm
    columns are left out: `explained_rows` writes them for the rows that are shown. `runtime`: the
    framework's overlap, training states and CUDA graphs (cost.runtime); `memory`: the rows'
    candidate_memory, `layers` the layers their candidate_step_bound priced (BoundLayers.at_rows),
    where the caller has them."""
    run, domain = _as_run(hardware, c, gpus_per_node, runtime)
    if memory is None:
        memory = _run_memory(model, hardware, workload, run, domain, runtime)
    step = time_columns(model, hardware, workload, run, layers, **_time_options(runtime, domain))
    if code is None:
        code = first_rule(rule_masks(model, workload, c), len(c))
    oom = (code < 0) & (memory.peak_bytes > hardware.hbm_bytes)
    return Evaluated(candidates=c, memory=memory, step=step, comm=None, fits=(code < 0) & ~oom,
                      reason=np.full(len(c), "", dtype=object), rule_code=np.where(oom, len(RULES), code))


def _time_options(runtime: Runtime, domain: int) -> StepOptions:
    """cost.step's options for the framework `runtime` on a fast link domain of `domain` GPUs."""
    return StepOptions(gpus_per_node=domain, overlap=runtime.overlap, states=runtime.states,
                       cuda_graphs=runtime.cuda_graphs, ring_impl=runtime.ring, grad_sync=runtime.grad_sync,
                       loss_bytes_per_logit=runtime.loss_bytes_per_logit, sequence_parallel=runtime.sequence_parallel,
                       sums_sequence_parallel_grads=runtime.sums_sequence_parallel_grads,
                       partial_tp_grads=runtime.partial_tp_grads,
                       tp_gathers=runtime.tp_gathers, unpads_attention=runtime.unpads_attention,
                       moe_router_dtype=runtime.moe_router_dtype, expert_row_padding=runtime.expert_row_padding)


def candidate_step_bound(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                         gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME,
                         skip: Callable[[np.ndarray], np.ndarray] | None = None) -> StepBound:
    """A lower bound of the step evaluate_rows gives `c` (cost.step_bound.step_lower_bound; search_prune)
    and the layers it priced, which evaluate_rows takes back for these rows; `skip`: the rows that
    need none, asked of a partial sum below the bound (step_lower_bound's)."""
    run, domain = _as_run(hardware, c, gpus_per_node, runtime)
    return step_lower_bound(model, hardware, workload, run, skip=skip, **_time_options(runtime, domain))


def _as_run(hardware: HardwareProfile, c: Candidates, gpus_per_node: int, runtime: Runtime) -> tuple[Candidates, int]:
    """(the candidates as the framework runs them, the GPUs of the fast link domain)."""
    # Links are classified by the fast domain (the host, or a rack-scale NVLink domain).
    world = int(np.asarray(group_size(c, GRID_ORDER))[0]) if len(c) else None  # every candidate's
    domain = hardware.link_domain_gpus(gpus_per_node, world)
    # torch FSDP's ZeRO-1/2 run as ZeRO-3 kept (cost.fsdp)
    return candidates_as_run(c, runtime.states.param_shard_stage), domain


def _run_memory(model: ModelSpec, hardware: HardwareProfile, workload: Workload, run: Candidates, domain: int,
                runtime: Runtime, stage_states: FirstMiddleLastStates | None = None) -> MemoryColumns:
    return memory_columns(model, hardware, workload, run, runtime.states, domain_gpus=domain, ring_impl=runtime.ring,
                          loss_memory=runtime.loss_memory, sequence_parallel=runtime.sequence_parallel,
                          tp_gathers=runtime.tp_gathers, compiled_layers=runtime.compiled_layers,
                          expert_row_padding=runtime.expert_row_padding, stage_states=stage_states)


def candidate_memory(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                     gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME,
                     stage_states: FirstMiddleLastStates | None = None) -> MemoryColumns:
    """The memory columns evaluate_rows gives `c`, without the times (search_pruned_scan: which rows
    fit); `stage_states`: their candidate_stage_states, where the caller has them."""
    run, domain = _as_run(hardware, c, gpus_per_node, runtime)
    return _run_memory(model, hardware, workload, run, domain, runtime, stage_states)


def candidate_stage_states(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                           gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> FirstMiddleLastStates:
    """The stages' model states candidate_memory prices for `c` (cost.memory.stage_states_bytes, on
    the framework's run of it), whose floor bounds its peak from below (cost.memory.states_floor_bytes;
    search_pruned_scan: which rows are out of memory before their memory is priced)."""
    run, _ = _as_run(hardware, c, gpus_per_node, runtime)
    return stage_states_bytes(model, hardware, workload, run, runtime.states, tp_gathers=runtime.tp_gathers)


def explained_rows(model: ModelSpec, hardware: HardwareProfile, workload: Workload, e: Evaluated,
                   gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> Evaluated:
    """`e` with each row's reason (the first broken rule's message, or the memory shortfall) and
    its comm columns (cost.comm, as evaluate_rows's run of the framework prices the rest)."""
    oom = e.rule_code == len(RULES)
    reason = _rule_messages(model, workload, e.candidates, np.where(oom, -1, e.rule_code))
    peak = e.memory.peak_bytes
    oom_idx = np.flatnonzero(oom)
    reason[oom_idx] = [
        f"oom: needs {p / GIB:.1f} GiB per GPU, {hardware.hbm_bytes / GIB:.1f} GiB available"
        for p in peak[oom_idx]
    ]
    if e.comm is None:
        run, domain = _as_run(hardware, e.candidates, gpus_per_node, runtime)
        e = e._replace(comm=comm_columns(model, workload, run, gpus_per_node=domain, states=runtime.states,
                                         ring_impl=runtime.ring, sequence_parallel=runtime.sequence_parallel,
                                         tp_gathers=runtime.tp_gathers,
                                         sums_sequence_parallel_grads=runtime.sums_sequence_parallel_grads,
                                         root_gathered_once=runtime.overlap.root_gathered_once,
                                         pp_stage_grad_sync=runtime.overlap.pp_stage_grad_sync,
                                         partial_tp_grads=runtime.partial_tp_grads))
    return e._replace(reason=reason)


