"""Human-readable names for plans and for the fields of the result types: the one set used by the
terminal tables, the why-this-plan text, the report and its figures."""

from __future__ import annotations

from collections.abc import Sequence

from sp_planner.estimate import CommBytes, MemoryBreakdown, TimeBreakdown
from sp_planner.layout import GRID_ORDER
from sp_planner.plan import ParallelPlan

# The model MFU (PlanEstimate.mfu, JSON mfu and model_tflops_per_gpu) counts every layer's whole
# s x s attention square and no recompute (cost.flops.model_flops_per_step), as PaLM's MFU and
# Korthikanti et al. 2022's model FLOPs do; it is named by that count, not by Megatron: Megatron-LM's
# num_floating_point_operations counted so until 8873b55d (2025-03-06, "Fixes in number of
# floating-point operation estimates", first in core_v0.12.0) and halves causal attention since.
FULL_SQUARE_MFU = "model MFU (full square)"
FULL_SQUARE_MEGATRON = "Megatron-LM to core_v0.11"

MEMORY_LABELS: dict[str, str] = {
    "params_bytes": "parameters",
    "grads_bytes": "gradients",
    "optimizer_bytes": "optimizer states",
    "activations_bytes": "activations",
    "logits_bytes": "logits",
    "comm_buffers_bytes": "comm buffers",
    "reserve_bytes": "runtime reserve",
}

TIME_LABELS: dict[str, str] = {
    "gemm_s": "GEMMs",
    "attention_s": "attention kernels",
    "recompute_s": "recomputation",
    "tp_comm_s": "TP communication",
    "ulysses_comm_s": "Ulysses all-to-all",
    "ring_comm_exposed_s": "exposed ring-axis comm",
    "pp_comm_s": "PP send/recv",
    "dp_comm_exposed_s": "exposed DP gradient sync",
    "bubble_s": "pipeline bubble",
    "optimizer_s": "optimizer, grad buffers",
    "moe_comm_s": "MoE dispatch/combine",
    "host_overhead_s": "host (CPU) overhead",
    "offload_s": "activation offload copies",
    "mfu_ceiling_s": "held to the best published MFU",
}

COMM_LABELS: dict[str, str] = {
    "ulysses_all_to_all": "Ulysses all-to-all",
    "ring_p2p": "ring P2P",
    "tp_all_gather": "TP all-gather",
    "tp_reduce_scatter": "TP reduce-scatter",
    "pp_p2p": "PP P2P",
    "dp_reduce_scatter": "DP reduce-scatter",
    "dp_all_gather": "DP all-gather",
    "cp_all_gather": "CP K/V all-gather",
    "cp_reduce_scatter": "CP dK/dV reduce-scatter",
    "dp_all_reduce": "HSDP replica all-reduce",
    "ep_all_to_all": "EP dispatch/combine",
    "etp_all_gather": "ETP all-gather/RS",
    "edp_reduce_scatter": "expert-DP reduce-scatter",
    "edp_all_gather": "expert-DP all-gather",
    "tp_all_reduce": "TP replicated-grad all-reduce",
}

RECOMPUTE_SHORT: dict[str, str] = {"none": "no-rc", "selective": "sel-rc", "full": "full-rc",
                                   "mla_up_proj": "mla-rc", "moe_act": "act-rc", "moe_act+layernorm": "act+ln-rc",
                                   "mlp": "mlp-rc", "mla_up_proj+mlp": "mla+mlp-rc"}
RECOMPUTE_LONG: dict[str, str] = {"none": "no recompute", "selective": "selective recompute",
                                  "full": "full recompute", "mla_up_proj": "MLA up-projection recompute",
                                  "moe_act": "MoE activation recompute",
                                  "moe_act+layernorm": "MoE activation and norm recompute",
                                  "mlp": "dense MLP recompute",
                                  "mla_up_proj+mlp": "MLA up-projection and dense MLP recompute"}
# Degrees as plans are named: tp first, then the sequence axes, dp, pp (layout.GRID_ORDER reversed).
NAME_ORDER: tuple[str, ...] = tuple(reversed(GRID_ORDER))
SHORT_AXIS: dict[str, str] = {"tp": "tp", "ulysses": "u", "ring": "r", "dp": "dp", "pp": "pp"}
EXPERT_AXES: tuple[str, ...] = ("ep", "etp")  # space.EXPERT_DEGREES

# Every field of the result types must have a label (checked here, at import, not at render time).
assert set(MEMORY_LABELS) == set(MemoryBreakdown.model_fields)
assert set(TIME_LABELS) == set(TimeBreakdown.model_fields)
assert set(COMM_LABELS) == set(CommBytes.model_fields)
assert set(SHORT_AXIS) == set(GRID_ORDER)


def plan_name(plan: ParallelPlan, *, compact: bool = False) -> str:
    """Every choice of a plan in one line; the ring layout only when it is the non-default contiguous,
    all-gather CP, HSDP and ZeRO-3 without reshard only when chosen (defaults stay unnamed).

    Prose: 'tp 2 x ulysses 4 x ring 2 x dp 2 x pp 1, ZeRO-1, selective recompute, micro batch 1'.
    Compact (figure axes, tables): 'tp2 u4 r2 dp2 pp1 | z1 sel-rc mb1'. A pinned --vpp-group 6 at
    vpp 2: ', 2 virtual stages per rank in micro-batch groups of 6' and ' v2g6' (as pp_cell).
    """
    contiguous = plan.ring > 1 and plan.ring_layout == "contiguous"
    gather = plan.ring > 1 and plan.allgather
    # Expert degrees only when the plan splits experts (MoE): 'ep 8 x etp 1' after the dense grid.
    expert_axes = EXPERT_AXES if (plan.ep > 1 or plan.etp > 1) else ()
    uneven = plan.first_stage_layers is not None
    group = pinned_vpp_group(plan)  # --vpp-group, as the ranked table's pp cell shows it
    if compact:
        degrees = " ".join(f"{SHORT_AXIS.get(axis, axis)}{getattr(plan, axis)}" for axis in (*NAME_ORDER, *expert_axes))
        extras = (" contig" if contiguous else "") + (" ag" if gather else "")
        extras += (f" rep{plan.dp_replicate}" if plan.dp_replicate > 1 else "")
        extras += "" if plan.reshard_after_forward else " keep"
        extras += (f" v{plan.vpp}" if plan.vpp > 1 else "") + (f"g{group}" if group is not None else "") + (
            f" {plan.first_stage_layers}/{plan.last_stage_layers}" if uneven else "") + (
            f" {plan.precision}" if plan.precision != "bf16" else "") + (" cs" if plan.fp8_current else "") + (
            " bw" if plan.fp8_blockwise else "")
        extras += f" off{plan.cpu_offload_layers}" if plan.cpu_offload_layers else ""
        extras += " adam16" if plan.adam_moments_bf16 else ""
        return f"{degrees} | z{plan.zero} {RECOMPUTE_SHORT[plan.recompute]} mb{plan.micro_batch}{extras}"
    degrees = " x ".join(f"{axis} {getattr(plan, axis)}" for axis in (*NAME_ORDER, *expert_axes))
    extras = (", contiguous ring" if contiguous else "") + (", all-gather CP" if gather else "")
    extras += (f", HSDP {plan.dp_replicate} replicas" if plan.dp_replicate > 1 else "")
    extras += "" if plan.reshard_after_forward else ", no reshard after forward"
    extras += (f", {plan.vpp} virtual stages per rank" if plan.vpp > 1 else "") + (
        f" in micro-batch groups of {group}" if group is not None else "") + (
        f", {plan.first_stage_layers}/{plan.last_stage_layers} layers on the first/last stage" if uneven else "") + (
        f", {plan.precision} GEMMs" if plan.precision != "bf16" else "") + (
        " (current scaling)" if plan.fp8_current else "") + (" (block scaling)" if plan.fp8_blockwise else "") + (
        " and attention" if plan.fp8_attention else "")
    extras += (f", activations of {plan.cpu_offload_layers} layers offloaded to the CPU"
               if plan.cpu_offload_layers else "") + (", Adam moments in bf16" if plan.adam_moments_bf16 else "")
    return (f"{degrees}, ZeRO-{plan.zero}, {RECOMPUTE_LONG[plan.recompute]}, "
            f"micro batch {plan.micro_batch}{extras}")


def pinned_vpp_group(plan: ParallelPlan) -> int | None:
    """The interleaved schedule's micro-batch group sp-plan --vpp-group pinned (ParallelPlan.vpp_group
    of a search row), shown beside the plan's virtual stages; None where none was (the group priced
    then goes unshown: JSON and CSV hold it)."""
    return plan.vpp_group if plan.vpp > 1 else None


def pp_cell(plan: ParallelPlan) -> str:
    """The ranked table's pp: pp 16 with 4 virtual stages per rank (interleaved 1F1B) reads '16v4',
    and '16v4g32' with a pinned micro-batch group of 32."""
    group = f"g{pinned}" if (pinned := pinned_vpp_group(plan)) is not None else ""
    return f"{plan.pp}v{plan.vpp}{group}" if plan.vpp > 1 else str(plan.pp)


def pp_group_legend(plans: Sequence[ParallelPlan]) -> str | None:
    """What a pinned group in the pp cells means, by the first of `plans` that has one; None if none does."""
    plan = next((p for p in plans if pinned_vpp_group(p) is not None), None)
    return None if plan is None else f"pp {pp_cell(plan)}: micro-batch groups of {plan.vpp_group} (--vpp-group)"


def reason_key(reason: object) -> str:
    """The short rule key of a search reason ('heads', 'seq_len', 'oom', ...); '' when it fits.

    The search writes reasons as '<rule>: <message naming the values>'.
    """
    if not isinstance(reason, str) or not reason:
        return ""
    return reason.split(":", 1)[0].strip()


def breaks_hard_rule(reason: object) -> bool:
    """Whether a search reason is a hard rule's (the plan cannot run), not 'oom' or '' (it fits)."""
    return reason_key(reason) not in ("", "oom")


def peak_name(plan: ParallelPlan) -> str:
    """What "% peak" (hardware_mfu) divides by, in words: the BF16 peak, named so where the plan's
    GEMMs run FP8 (at up to twice it, so the share can pass 100%)."""
    return "peak" if plan.precision == "bf16" else "the BF16 peak"
