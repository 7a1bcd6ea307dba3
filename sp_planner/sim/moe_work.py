"""Mixture-of-experts work of a layer for the simulator: the token dispatch/combine all-to-alls
over the expert-parallel groups and the etp token collectives, run as phases on the cluster graph,
the busiest rank's extra expert GEMMs (its load and the small-M grouped-GEMM slowdown) and the
dispatcher's permutations, all from cost.moe.moe_times, so the two models agree; HybridEP inside
one NVLink domain is timed from its benchmark (cost.hybridep), and DeepEP from its (cost.deepep), as
the analytic model times them.

Bytes and counts are cost.moe's (Megatron-Core's alltoall dispatcher, the busiest rank's load).
Each collective is scaled by the share of the model's layers that are MoE: the simulator passes
a model whose every layer is MoE (sim.kind_work, cost.layer_kinds.kind_model), a share of 1, and
puts the work on its MoE layers only.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from sp_planner.cost.hybridep import hybridep_timed
from sp_planner.cost.links import ranks_per_node
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.activations import sequence_parallel_region_tokens
from sp_planner.cost.expert_padding import NO_PADDING, padding_align_rows, router_pad_load
from sp_planner.cost.module_recompute import module_recompute_s
from sp_planner.recompute import recompute_code
from sp_planner.cost.moe import busiest_rank_load, dispatch_bytes, moe_layer_fraction, moe_times, nccl_dispatch
from sp_planner.cost.precision import gemm_peak_flops
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers, expert_precision
from sp_planner.layout import axis_stride
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class MoEWork(NamedTuple):
    all_to_all_s: float  # one dispatch or combine (or its gradient)
    etp_collective_s: float  # one token all-gather or reduce-scatter over etp
    extra_expert_gemm_fwd_s: float  # busiest rank: forward expert GEMMs beyond the mean at flat efficiency
    permute_s: float  # the dispatcher's permutations, forward (backward the same; cost.moe)
    # The activation and standalone norms re-run in backward (recompute moe_act, moe_act+layernorm;
    # cost.module_recompute), 0 otherwise.
    recompute_modules_s: float = 0.0


def dispatch_timed_off_graph(hardware: HardwareProfile, model: ModelSpec, plan: ParallelPlan,
                             gpus_per_node: int) -> bool:
    """Whether the plan's token dispatch and combine are timed from the dispatcher's benchmark
    (HybridEP inside one NVLink domain, cost.hybridep; DeepEP anywhere, cost.deepep) rather than
    run as flows on the cluster graph, so that the graph's fabric does not reach them."""
    if model.moe is None:
        return False
    return bool(hybridep_timed(hardware, model, plan.ep, axis_stride(plan, "ep"), gpus_per_node)
                or model.moe.dispatcher == "deepep")


def network_dispatch_off_graph(hardware: HardwareProfile, model: ModelSpec, plan: ParallelPlan,
                               gpus_per_node: int) -> bool:
    """Whether a dispatch timed off the graph (dispatch_timed_off_graph) crosses nodes: DeepEP's
    over an EP group wider than a node, its internode kernels over the NICs at their H800
    benchmark's rates (cost.deepep), which no fabric option of the simulator changes."""
    return (plan.ep > 1 and dispatch_timed_off_graph(hardware, model, plan, gpus_per_node)
            and int(ranks_per_node(plan.ep, axis_stride(plan, "ep"), gpus_per_node)) < plan.ep)


def moe_work(phase: Callable[..., float], hardware: HardwareProfile, model: ModelSpec, plan: ParallelPlan,
             groups: dict[str, np.ndarray], tokens_per_tp_rank: float, gpus_per_node: int,
             gathers: TpGathers = TE_TP_GATHERS, expert_row_padding: str = NO_PADDING,
             sequence_parallel: bool = True) -> MoEWork:
    """`phase(name, groups, bytes per rank, algorithm, efficiency)` runs one collective phase;
    `gathers`: the framework's linears, whether its expert GEMMs run in the plan's precision
    (cost.tp_gathers); `expert_row_padding`: who pads each local expert's rows for FP8
    (cost.expert_padding, Runtime.expert_row_padding); `sequence_parallel`: where the norms run
    (cost.activations.sequence_parallel_region_tokens)."""
    if model.moe is None:
        return MoEWork(0.0, 0.0, 0.0, 0.0)
    share = moe_layer_fraction(model)
    # The expert GEMMs at the precision they run in (the plan's, or bf16: cost.tp_gathers), as
    # cost.step times them.
    experts = expert_precision(np.array([PRECISIONS.index(plan.precision)]), gathers)
    copies_align, router_align = (float(a[0]) for a in padding_align_rows(experts, expert_row_padding))
    # The router's padding rows travel with the routed copies (cost.moe.moe_times).
    pad_load = router_pad_load(model, tokens_per_tp_rank, router_align)
    load = busiest_rank_load(model, plan.ep, pad_load)
    copies = float(dispatch_bytes(model, tokens_per_tp_rank, BF16_BYTES) * load)
    rate = float(gemm_peak_flops(hardware, experts, plan.fp8_blockwise)[0])
    # The EP group's stride in global rank (etp > 1 spreads it): whether it fits one NVLink domain,
    # as the analytic model asks it (cost.step).
    stride = axis_stride(plan, "ep")
    times = moe_times(hardware, model, tokens_per_tp_rank=tokens_per_tp_rank, ep=plan.ep, etp=plan.etp,
                      ep_stride=stride, elem_bytes=BF16_BYTES, gpus_per_node=gpus_per_node, gemm_flops_per_s=rate,
                      pad_align_rows=copies_align, router_pad_align_rows=router_align)
    if dispatch_timed_off_graph(hardware, model, plan, gpus_per_node):
        # HybridEP's or DeepEP's kernels at their measured speed, not flows on the cluster graph:
        # cost.moe's time (cost.hybridep, cost.deepep), already scaled by the share of MoE layers.
        a2a = float(times.all_to_all_s)
    else:
        a2a = share * phase("ep dispatch/combine all-to-all", groups["ep"], copies * (plan.ep - 1) / plan.ep,
                            "all_to_all", "all_to_all", nccl=nccl_dispatch(model))
    # Each rank sends its copies to the etp-1 others (a ring all-gather; the reduce-scatter back alike).
    etp = phase("etp token all-gather", groups["etp"], copies * (plan.etp - 1), "ring", "all_gather")
    tokens = tokens_per_tp_rank * plan.tp
    again = module_recompute_s(model, hardware, tokens=tokens, tp=plan.tp, ep=plan.ep, pad_load=pad_load,
                               region=sequence_parallel_region_tokens(tokens, plan.tp, sequence_parallel),
                               recompute=recompute_code(plan.recompute))
    return MoEWork(a2a, share * etp, float(times.extra_expert_gemm_fwd_s), float(times.permute_s), float(again))
