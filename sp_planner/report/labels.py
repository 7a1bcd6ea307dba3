"""Human-readable names for plans and for the fields of the result types, shared by tables and figures."""

from __future__ import annotations

from sp_planner.estimate import CommBytes, MemoryBreakdown, TimeBreakdown
from sp_planner.plan import ParallelPlan

MEMORY_LABELS: dict[str, str] = {
    "params_bytes": "parameters",
    "grads_bytes": "gradients",
    "optimizer_bytes": "optimizer states",
    "activations_bytes": "activations",
    "logits_bytes": "logits",
    "comm_buffers_bytes": "comm buffers",
    "reserve_bytes": "reserve (CUDA, NCCL, fragmentation)",
}

TIME_LABELS: dict[str, str] = {
    "gemm_s": "GEMMs",
    "attention_s": "attention kernels",
    "recompute_s": "recomputation",
    "tp_comm_s": "TP communication",
    "ulysses_comm_s": "Ulysses all-to-all",
    "ring_comm_exposed_s": "exposed ring P2P",
    "pp_comm_s": "PP send/recv",
    "dp_comm_exposed_s": "exposed DP gradient sync",
    "bubble_s": "pipeline bubble",
    "optimizer_s": "optimizer step",
}

COMM_LABELS: dict[str, str] = {
    "ulysses_all_to_all": "Ulysses all-to-all",
    "ring_p2p": "ring P2P",
    "tp_all_gather": "TP all-gather",
    "tp_reduce_scatter": "TP reduce-scatter",
    "pp_p2p": "PP P2P",
    "dp_reduce_scatter": "DP reduce-scatter",
    "dp_all_gather": "DP all-gather",
}

RECOMPUTE_SHORT: dict[str, str] = {"none": "no-rc", "selective": "sel-rc", "full": "full-rc"}

# Every field of the result types must have a label (checked here, at import, not at render time).
assert set(MEMORY_LABELS) == set(MemoryBreakdown.model_fields)
assert set(TIME_LABELS) == set(TimeBreakdown.model_fields)
assert set(COMM_LABELS) == set(CommBytes.model_fields)


def plan_label(plan: ParallelPlan) -> str:
    """One line naming every choice of a plan, e.g. 'tp2 u4 r2 dp2 pp1 | z1 sel-rc mb1'."""
    degrees = f"tp{plan.tp} u{plan.ulysses} r{plan.ring} dp{plan.dp} pp{plan.pp}"
    layout = " contig" if (plan.ring > 1 and plan.ring_layout == "contiguous") else ""
    return f"{degrees} | z{plan.zero} {RECOMPUTE_SHORT[plan.recompute]} mb{plan.micro_batch}{layout}"


def reason_key(reason: object) -> str:
    """The short rule key of a search reason ('heads', 'seq_len', 'oom', ...); '' when it fits.

    The search writes reasons as '<rule>: <message naming the values>'.
    """
    if not isinstance(reason, str) or not reason:
        return ""
    return reason.split(":", 1)[0].strip()
