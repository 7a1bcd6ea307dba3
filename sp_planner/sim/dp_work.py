"""The data-parallel calls of a plan's step for the simulator, timed on the cluster graph.

Which calls there are, and where they are issued, is cost.buckets' layout (Megatron's gradient
buckets, FSDP's units), the one the analytic model counts. Each kind of collective runs once as
a phase over the whole stage's parameters (all groups at once, so contention is in it); a call
then takes the phase's bandwidth time scaled to its parameters plus one ring latency
(sim.flows.run_phase gives that part apart, NCCL's ring model), as the analytic model's
cost.dp_times does with cost.links.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sp_planner.cost.buckets import BucketLayout, stage_layouts
from sp_planner.cost.collective_sizes import ring_tensor_bytes, sized
from sp_planner.cost.fp8_params import gathered_bytes, unit_gather_width
from sp_planner.cost.params import layer_params_per_rank
from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.cost.moe_params import expert_params_per_rank
from sp_planner.cost.stage_params import stage_moe_counts, stage_moe_flags, stage_params
from sp_planner.cost.nccl_protocols import fastest_ring
from sp_planner.cost.overlap import chunk_gathers_ahead
from sp_planner.cost.runtime import Runtime
from sp_planner.pipeline import StageLayers, stage_chunk
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.sim.flows import PhaseResult
from sp_planner.sim.work import DPCalls
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

Phase = Callable[..., PhaseResult]  # (name, groups, bytes per rank, algorithm, efficiency, rounds=, one_call=)


def _per_call(result: PhaseResult, params: float, phase_params: float, hardware: HardwareProfile) -> float:
    """One call moving `params` of the `phase_params` the phase moved: its share of the bandwidth
    time plus the whole latency, times the slowdown at the call's own size where the phase had
    one (cost.collective_sizes), or its LL or LL128 time where one is faster (cost.nccl_protocols);
    cost.dp_times prices each call so."""
    if params <= 0 or result.duration_s <= 0:
        return 0.0
    share = params / phase_params
    transfer = (result.duration_s / result.size_factor - result.latency_s) * share
    alpha_beta = transfer + result.latency_s
    measured = False
    if result.sized:
        n = result.group_size
        tensor = ring_tensor_bytes(result.collective, result.bytes_per_rank * share, n)
        call = sized(hardware, result.collective, tensor, n)
        alpha_beta, measured = alpha_beta * float(call.factor), bool(call.measured)
    return float(fastest_ring(hardware, result.collective, alpha_beta, transfer, result.bytes_per_rank * share,
                              result.intra_steps, result.inter_steps, where=not measured).time_s)


def _merge(layouts: tuple[BucketLayout, BucketLayout], timed: Callable[[float, bool], float],
           root_timed: Callable[[float, bool], float] | None = None) -> DPCalls:
    """DPCalls of the dense and expert layouts together, each bucket timed by timed(params, expert);
    the dense head and tail (FSDP's root units) by `root_timed` where given."""
    dense_layout, expert_layout = layouts
    root = root_timed or timed

    def at(buckets: tuple[float, ...], expert: bool, how=timed) -> tuple[float, ...]:
        return tuple(how(n, expert) for n in buckets)

    layers = tuple(at(d, False) + at(expert_layout.layers[i] if i < len(expert_layout.layers) else (), True)
                   for i, d in enumerate(dense_layout.layers))
    return DPCalls(head=at(dense_layout.head, False, root) + at(expert_layout.head, True), layers=layers,
                   tail=at(dense_layout.tail, False, root) + at(expert_layout.tail, True))


def dp_calls(phase: Phase, hardware: HardwareProfile, model: ModelSpec, plan: ParallelPlan, stages: StageLayers,
             layers_of: list[int], zgroups: np.ndarray, replicas: np.ndarray, egroups: np.ndarray,
             runtime: Runtime, *, seq_len: int
             ) -> tuple[tuple[DPCalls, ...], tuple[DPCalls, ...], tuple[float, ...], float]:
    """(reduce calls per stage, gather calls per stage, each stage's gather from the step's start
    (StepWork.dp_early_gather_s), the parameter gather after the optimizer when it is not
    overlapped). Each stage's calls carry its own non-layer parameters (cost.rank_tensors.stage_extras:
    the embedding on the first, the output layer and final norm on the last). Gradients and
    gathered parameters move in the framework's widths (cost.states), overlapped as it overlaps
    them (cost.overlap). A stage's calls are its own layers' (cost.buckets.stage_layouts by each
    layer's kind, cost.stage_params.stage_moe_flags); the phases, sized from the first stage's
    own parameters (`seq_len`: the workload's), only set each call's time per parameter."""
    tp, ep, etp, zero = plan.tp, plan.ep, plan.etp, plan.zero
    overlap = runtime.overlap
    grad_bytes = runtime.states.grad_bytes
    # The routed experts shard over `egroups` (edp / dp_replicate ranks under HSDP, sim.dp_groups);
    # their shards' all-reduce runs over the dense shards' replica groups, the same ranks (cost.fsdp).
    z, edp, rep = zgroups.shape[1], egroups.shape[1], plan.dp_replicate
    own = stage_params(model, tp, plan.pp, ep, etp, stages, stage_moe_counts(model, seq_len, plan, stages))
    params, experts = float(np.ravel(own.params[0])[0]), float(np.ravel(own.experts[0])[0])
    dense = params - experts
    # A first stage of dense layers (DeepSeek-V3's) moves no expert: the expert phases move one MoE
    # layer's instead, so the later stages' expert calls have a time per parameter.
    experts = experts or float(expert_params_per_rank(model, 1, ep, etp, layers=1))
    expert_share = experts or 1.0

    def share(nbytes: float, n: int) -> float:
        return nbytes * (n - 1) / n

    if zero == 0:
        ar = phase("dp grad all-reduce", zgroups, share(2 * grad_bytes * dense, z), "ring", "all_reduce", rounds=2,
                   one_call=False)
        ear = phase("edp grad all-reduce", egroups, share(2 * grad_bytes * experts, edp), "ring", "all_reduce",
                    rounds=2, one_call=False)

        def reduce_time(n: float, expert: bool) -> float:
            return _per_call(ear, n, expert_share, hardware) if expert else _per_call(ar, n, dense, hardware)
        gather_time: Callable[[float, bool], float] | None = None
        root_gather_time = None
    else:
        rs = phase("dp grad reduce-scatter", zgroups, share(grad_bytes * dense, z), "ring", "reduce_scatter",
                   one_call=False)
        ers = phase("edp grad reduce-scatter", egroups, share(grad_bytes * experts, edp), "ring",
                    "reduce_scatter", one_call=False)
        # HSDP: each call's gradient shard then all-reduced across the replicas (cost.fsdp).
        shard = dense / z
        rar = phase("hsdp shard all-reduce", replicas, share(2 * grad_bytes * shard, rep), "ring", "all_reduce",
                    rounds=2, one_call=False)
        # FP8 GEMM weights (per-tensor or block-scaled) gathered in FP8 under --fp8-param-gather (cost.fp8_params).
        code, reshard = PRECISIONS.index(plan.precision), plan.reshard_after_forward
        dense_gemm = np.ravel(own.dense_gemm[0])[0]
        dense_gathered = float(gathered_bytes(runtime.states, code, zero, reshard, dense, dense_gemm))
        experts_gathered = float(gathered_bytes(runtime.states, code, zero, reshard, experts, experts))
        ag = phase("dp param all-gather", zgroups, share(dense_gathered, z), "ring", "all_gather", one_call=False)
        eag = phase("edp param all-gather", egroups, share(experts_gathered, edp), "ring", "all_gather",
                    one_call=False)

        def reduce_time(n: float, expert: bool) -> float:
            own = _per_call(ers, n, expert_share, hardware) if expert else _per_call(rs, n, dense, hardware)
            return own + _per_call(rar, n / (edp if expert else z), shard, hardware)

        # ZeRO-3's units move their own widths (cost.dp_times): a layer's FP8 GEMM weights at 1 B
        # under Megatron-FSDP's FP8 parameters, the root units (embedding, output layer, norm) at
        # the framework's; the phase moved the stage's average.
        average = dense_gathered / dense if dense > 0 else 1.0
        layer = float(layer_params_per_rank(model, tp, ep, etp)) - float(expert_params_per_rank(model, 1, ep, etp,
                                                                                                  layers=1))
        layer_width = float(unit_gather_width(runtime.states, code, zero, reshard, layer,
                                              layer - model.norm_params_per_layer))
        layer_scale, root_scale = ((layer_width / average, runtime.states.compute_param_bytes / average)
                                   if zero == 3 else (1.0, 1.0))

        def gathered_at(scale: float) -> Callable[[float, bool], float]:
            """A unit's gather: its parameters at `scale` x the phase's average width."""
            def timed(n: float, expert: bool) -> float:
                return _per_call(eag, n, expert_share, hardware) if expert else _per_call(ag, n * scale, dense,
                                                                                          hardware)
            return timed

        gather_time, root_gather_time = gathered_at(layer_scale), gathered_at(root_scale)

    # Without overlap the gradients are reduced after the backward (DeepSpeed's stage 0 all-reduce,
    # cost.overlap): every call queued behind the last one.
    overlapped = overlap.grad_all_reduce if zero == 0 else overlap.grad_reduce or zero == 3
    by_chunk = bool(chunk_gathers_ahead(overlap, zero, plan.vpp))
    reduce_calls, gather_calls, early = [], [], []
    mixed = len(set(mlp_layer_is_moe(model))) > 1
    # A full model chunk's layers where an end stage does not divide by vpp (pipeline.stage_chunk).
    chunk = int(stage_chunk(stages.first, stages.middle, stages.last, plan.pp, plan.vpp).ravel()[0])
    for stage, n_layers in enumerate(layers_of):
        moe = stage_moe_flags(model, plan.pp, plan.vpp, plan.first_stage_layers or 0, plan.last_stage_layers or 0,
                              stage) if mixed else None
        layouts = stage_layouts(model, tp=tp, ep=ep, etp=etp, layers=n_layers, single_stage=plan.pp == 1,
                                dp=plan.dp, zero=zero, first_stage=stage == 0, vpp=plan.vpp,
                                last_stage=stage == plan.pp - 1, moe=moe, chunk=chunk)
        calls = _merge(layouts, reduce_time)
        if not overlapped:
            every = calls.head + tuple(t for at_layer in reversed(calls.layers) for t in at_layer) + calls.tail
            calls = DPCalls(layers=((),) * len(calls.layers), tail=every)
        reduce_calls.append(calls)
        gathers = _merge(layouts, gather_time, root_gather_time) if gather_time is not None else DPCalls()
        # Megatron launches the first bucket's gather in zero_grad, at the step's start, and the
        # others from the forward pre-hooks (distrib_optimizer.py step_with_ready_grads): a stage
        # held in one bucket (zero 1, after the first stage) has it whole before its first forward.
        # Megatron's interleaved schedule gathers chunk by chunk instead (sim.pipeline, by_chunk).
        one_bucket = stage > 0 and zero == 1 and not by_chunk
        early.append(gathers.total_s if one_bucket else 0.0)
        gather_calls.append(DPCalls() if one_bucket else gathers)
    after_step = 0.0
    if zero in (1, 2) and not overlap.param_gather:
        after_step = gather_calls[0].total_s + early[0]
        gather_calls, early = [], []
    return tuple(reduce_calls), tuple(gather_calls), tuple(early), after_step
