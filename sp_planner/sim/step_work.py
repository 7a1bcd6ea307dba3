"""Build a plan's StepWork: compute from the analytic cost model, communication from the graph.

Compute durations reuse sp_planner.cost (GEMM FLOPs, flash-attention kernels, Adam's HBM pass);
bytes come from sp_planner.cost.comm / attention_comm. Each collective is then run as a phase on
the cluster graph: every group of its axis at once, sharing links max-min.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.comm import comm_columns
from sp_planner.cost.tp_calls import (
    EMBEDDING_TP_ALL_GATHERS,
    EMBEDDING_TP_REDUCE_SCATTERS,
    OUTPUT_TP_BACKWARD_REDUCE_SCATTERS,
    output_tp_backward_all_gathers,
    output_tp_forward_all_gathers,
    embedding_tp_forward_all_gathers,
    tp_calls_per_step,
    tp_input_all_gathers,
)
from sp_planner.pipeline import stage_layers
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.layer_kinds import distinct_kinds
from sp_planner.cost.fp8_params import weight_cast_s
from sp_planner.cost.fsdp import root_gathers_per_micro_batch, stage_synced
from sp_planner.cost.gathered_transpose import layer_gather_bytes
from sp_planner.cost.embedding_work import embedding_work
from sp_planner.cost.gemm_work import gemm_work
from sp_planner.cost.mla_recompute import mla_up_proj_recompute_s
from sp_planner.cost.mlp_recompute import mlp_recompute_layers
from sp_planner.recompute import MLA_UP_PROJ_RECOMPUTES, MLP_RECOMPUTES, recompute_code
from sp_planner.cost.grad_buffer import stage_step_bytes
from sp_planner.cost.mtp import mtp_depth_extras_s, mtp_kind
from sp_planner.cost.pipeline_dp import LOSS_BACKWARD_SHARE
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.overlap import (chunk_gathers_ahead, overlap_compute_slowdown, pp_sends_beside_compute,
                                    slowed_by_overlap)
from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.estimate import CommBytes
from sp_planner.layout import rank_groups
from sp_planner.plan import ParallelPlan
from sp_planner.sim.attention_steps import AttentionSteps, attention_steps, dsa_phases, ulysses_work_s, windowed
from sp_planner.sim.cluster import Cluster
from sp_planner.sim.dp_groups import expert_shard_groups, shard_and_replicate_groups
from sp_planner.sim.dp_work import dp_calls
from sp_planner.sim.grad_all_reduces import step_end_all_reduces
from sp_planner.sim.flows import PhaseResult, run_phase
from sp_planner.sim.kind_work import NO_MOE, attention_share, kind_layer, kind_models, stage_kinds
from sp_planner.sim.moe_work import moe_work
from sp_planner.sim.work import LayerWork, StepWork
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


def step_work(cluster: Cluster, model: ModelSpec, workload: Workload, plan: ParallelPlan,
              runtime: Runtime = MEGATRON_RUNTIME) -> tuple[StepWork, list[PhaseResult]]:
    hw = cluster.hardware
    tp, u, r, pp, b = plan.tp, plan.ulysses, plan.ring, plan.pp, plan.micro_batch
    m = plan.num_micro_batches(workload)
    stages = stage_layers(model.num_layers, pp, plan.first_stage_layers or 0, plan.last_stage_layers or 0)
    layers = int(stages.first)  # the first stage's GPU, whose parameters and bytes cost.comm counts
    middle = int(stages.middle)
    one = Candidates.of_plan(plan)  # the plan as one-entry candidate columns, for the cost model's functions
    sp = runtime.sequence_parallel
    regathers = runtime.tp_gathers.regathers_saved_inputs  # the saved inputs gathered again (cost.tp_gathers)
    sent = comm_columns(model, workload, one, gpus_per_node=cluster.gpus_per_node,
                        states=runtime.states, ring_impl=runtime.ring, sequence_parallel=sp,
                        tp_gathers=runtime.tp_gathers,
                        sums_sequence_parallel_grads=runtime.sums_sequence_parallel_grads,
                        root_gathered_once=runtime.overlap.root_gathered_once,
                        pp_stage_grad_sync=runtime.overlap.pp_stage_grad_sync,
                        partial_tp_grads=runtime.partial_tp_grads).sent_bytes
    comm = CommBytes.model_validate({name: int(values[0]) for name, values in sent._asdict().items()})
    groups = {k: np.asarray(v, dtype=np.int64) for k, v in rank_groups(plan).items()}
    phases: list[PhaseResult] = []

    def phase_result(name, axis_groups, nbytes, algorithm, eff, rounds=1, nccl=True, one_call=True) -> PhaseResult:
        result = run_phase(cluster, name, axis_groups, nbytes, algorithm, eff, rounds=rounds, nccl=nccl,
                           one_call=one_call)
        phases.append(result)
        return result

    def phase(name, axis_groups, nbytes, algorithm, eff, rounds=1, nccl=True) -> float:
        return phase_result(name, axis_groups, nbytes, algorithm, eff, rounds=rounds, nccl=nccl).duration_s

    # Tensor parallel: one all-gather / reduce-scatter moves the same bytes (cost.comm), but the
    # layers' gathers, FP8 under per-tensor FP8, MXFP8 data and scales by tensor under MXFP8, where
    # the framework gathers them so (cost.tp_gathers, cost.gathered_transpose).
    scatters = tp_calls_per_step(layers=layers, micro_batches=m, full_recompute=plan.recompute == "full", pp=pp,
                                 position_embedding=model.position_embedding, sequence_parallel=sp,
                                 regathers=regathers, mlp_recomputes=mlp_recompute_layers(
                                     model, layers=layers, recompute=recompute_code(plan.recompute))).reduce_scatters
    tp_bytes = comm.tp_reduce_scatter / float(scatters)
    tp_ag = phase("tp all-gather", groups["tp"], tp_bytes, "ring", "all_gather")
    tp_rs = phase("tp reduce-scatter", groups["tp"], tp_bytes, "ring", "reduce_scatter")
    elem = layer_gather_bytes(model, tp=one.tp, precision=one.precision, gathers=runtime.tp_gathers,
                              fp8_blockwise=one.fp8_blockwise, sequence_parallel=sp)
    layer_elem, grad_elem = float(elem.fwd[0]), float(elem.grad[0])
    layer_ag = tp_ag if layer_elem == BF16_BYTES else phase(
        "tp all-gather (fp8)", groups["tp"], tp_bytes * layer_elem / BF16_BYTES, "ring", "all_gather")
    # MXFP8 gathers the output gradients both ways (cost.gathered_transpose).
    grad_ag = layer_ag if grad_elem == layer_elem else phase(
        "tp all-gather (grad, mxfp8)", groups["tp"], tp_bytes * grad_elem / BF16_BYTES, "ring", "all_gather")

    att = attention_steps(hw, model, batch=b, seq_len=workload.seq_len, tp=tp, ulysses=u, ring=r,
                          causal=workload.causal, zigzag=plan.ring_layout == "zigzag", elem_bytes=BF16_BYTES,
                          allgather=plan.allgather, ring_impl=runtime.ring, gpus_per_node=cluster.gpus_per_node)
    uly_q = phase("ulysses all-to-all (Q or O)", groups["ulysses"], att.ulysses_q_bytes, "all_to_all", "all_to_all")
    uly_kv = phase("ulysses all-to-all (K or V)", groups["ulysses"], att.ulysses_kv_bytes, "all_to_all", "all_to_all")
    uly_qkv, uly_out = ulysses_work_s(att, uly_q, uly_kv)
    ring_kv = phase("ring K/V step", groups["ring"], att.ring_kv_bytes, "p2p", "p2p")
    ring_dkv = phase("ring dK/dV step", groups["ring"], att.ring_dkv_bytes, "p2p", "p2p")
    s = overlap_compute_slowdown(hw)
    # All-gather CP: K and V each gathered, dK and dV each reduce-scattered (cost.attention).
    if att.dsa_tp_gather_bytes is not None:  # DSA: forward's key and input gathers, backward's one scatter
        cp_ag, cp_rs = dsa_phases(phase, model, att, groups)
    else:
        cp_ag = 2 * phase("cp K/V all-gather", groups["ring"], att.cp_gather_bytes, "ring", "all_gather")
        cp_rs = 2 * phase("cp dK/dV reduce-scatter", groups["ring"], att.cp_scatter_bytes, "ring", "reduce_scatter")

    tokens = b * workload.seq_len / plan.cp  # per rank, sequence-sharded regions
    # As cost.step: the layers' GEMMs at the plan's precision with FP8's casts (and current
    # scaling's amax all-reduces) and the memory-bound ops that ride with them; the logits GEMMs
    # (forward + 2x backward) plus the vocab-parallel cross entropy on the last stage (cost.gemm_work).
    # Each of the model's layer kinds priced as a model of that kind alone (sim.kind_work).
    kinds, models = distinct_kinds(model, workload.seq_len), kind_models(model, workload.seq_len)
    gemms = [gemm_work(kind_spec, hw, seq_len=workload.seq_len, tp=tp, micro_batch=b, cp=plan.cp, ep=plan.ep,
                     etp=plan.etp, precision=one.precision, fp8_current=one.fp8_current,
                     gpus_per_node=cluster.gpus_per_node, loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                     fp8_blockwise=one.fp8_blockwise, sequence_parallel=runtime.sequence_parallel,
                     tp_gathers=runtime.tp_gathers, unpads_attention=runtime.unpads_attention,
                     moe_router_dtype=runtime.moe_router_dtype) for kind_spec in models]
    logits_fwd = float(gemms[0].logits_s[0]) / 3  # the output layer's, whatever the layers' kind
    # The MoE kinds' experts (their collectives run once: the attention's kind does not change them).
    moe = moe_work(phase, hw, next((m for m, k in zip(models, kinds) if k.moe), model), plan, groups, tokens / tp,
                   cluster.gpus_per_node, runtime.tp_gathers, runtime.expert_row_padding, sp)
    # The embedding's work on the first stage (the first chunk) as cost.step counts it
    # (cost.embedding_work): a learned position table's add and the embedding dropout with its
    # forward, the tables' gradient passes and the dropout's backward after its backward.
    emb = embedding_work(model, hw, tp=tp, pp=pp, tokens=tokens, seq_len=workload.seq_len,
                         grad_bytes=runtime.states.grad_bytes,
                         wrapper=None if runtime.grad_sync is None else runtime.grad_sync.wrapper,
                         sequence_parallel=runtime.sequence_parallel)
    emb_fwd, emb_bwd = float(emb.fwd_s), float(emb.bwd_s)
    # The output layer's and the embedding's TP collectives (cost.tp_calls), beside their GEMMs.
    out_fwd = output_tp_forward_all_gathers(sp) * tp_ag
    out_ag_bwd = output_tp_backward_all_gathers(sp, regathers) * tp_ag
    out_rs_bwd = OUTPUT_TP_BACKWARD_REDUCE_SCATTERS * tp_rs
    emb_rs_fwd = EMBEDDING_TP_REDUCE_SCATTERS * tp_rs
    emb_ag_fwd = embedding_tp_forward_all_gathers(model.position_embedding, sp) * tp_ag
    emb_tp_bwd = EMBEDDING_TP_ALL_GATHERS * tp_ag
    # Multi-token prediction's depths (cost.mtp): each a layer of its kind (layer_program runs them)
    # and, beside the output head's block, its work beyond the layer.
    mtp_fwd, mtp_bwd = (float(np.asarray(v)) * model.mtp_layers for v in mtp_depth_extras_s(
        model, hw, tokens=tokens, tp=tp, logits_s=3 * logits_fwd, logits_bwd_share=LOSS_BACKWARD_SHARE,
        emb_fwd_s=emb_fwd, emb_bwd_s=emb_bwd, out_tp_fwd_s=out_fwd, out_tp_bwd_s=out_ag_bwd + out_rs_bwd,
        emb_tp_fwd_s=emb_rs_fwd + emb_ag_fwd, emb_tp_bwd_s=emb_tp_bwd)) if model.mtp_layers else (0.0, 0.0)
    mtp_kinds = (kinds.index(mtp_kind(model, workload.seq_len)),) * model.mtp_layers

    # Data parallel over dp x cp (routed experts over edp): Megatron's buckets or FSDP's units,
    # each a call of its own (sim.dp_work, cost.buckets).
    zgroups, replicas = shard_and_replicate_groups(plan)
    layers_of = [int(n) for n in _each_stage(stages.first, stages.middle, stages.last, pp)]
    dp_reduce, dp_gather, early, after_step = dp_calls(phase_result, hw, model, plan, stages, layers_of, zgroups,
                                                       replicas, expert_shard_groups(plan), runtime,
                                                       seq_len=workload.seq_len)
    # Adam over the rank's shard (cost.states) and the data-parallel wrapper's gradient passes
    # (cost.grad_buffer), each stage's own (first, middle ones, last).
    first_b, middle_b, last_b = stage_step_bytes(model, runtime.states, runtime.grad_sync, plan, stages=stages,
                                                 micro_batches=m, edp=groups["edp"].shape[1], seq_len=workload.seq_len)
    step_bytes = [float(np.ravel(v)[0]) for v in _each_stage(first_b, middle_b, last_b, pp)]
    pp_bytes = comm.pp_p2p / (2 * m * plan.vpp) if pp > 1 else 0.0  # one activation or gradient
    pp_send = phase("pp send/recv", groups["pp"], pp_bytes, "chain", "p2p")
    # The gradients whole on every TP rank, then the embedding table's over each pipeline's two ends,
    # all-reduced at step end (sim.grad_all_reduces).
    replicated, tied = step_end_all_reduces(phase, model, one, runtime, tp_groups=groups["tp"],
                                            pp_groups=groups["pp"], micro_batches=m, seq_len=workload.seq_len)

    # A pipeline's ZeRO-3 stages synced once a step (torch.distributed.pipelining, cost.fsdp.stage_synced).
    synced = bool(stage_synced(runtime.overlap.pp_stage_grad_sync, pp, plan.zero))
    collectives = LayerWork(
        tp_all_gather_s=layer_ag,
        tp_grad_all_gather_s=grad_ag,
        tp_reduce_scatter_s=tp_rs,
        # The saved inputs gathered again for the weight gradients: sequence parallelism only, where
        # the framework saved their shards (cost.tp_calls, cost.tp_gathers).
        tp_input_all_gather_s=layer_ag if tp_input_all_gathers(sp, regathers) else 0.0,
        ulysses_qkv_s=uly_qkv,
        ulysses_out_s=uly_out,
        ring_kv_step_s=ring_kv,
        ring_dkv_step_s=ring_dkv,
        ring_dkv_home=att.ring_dkv_home,
        cp_all_gather_s=cp_ag,
        cp_reduce_scatter_s=cp_rs,
        cp_regathers=att.dsa_tp_gather_bytes is None,
        recompute_up_proj_s=float(mla_up_proj_recompute_s(model, hw, tokens=tokens, tp=tp, precision=one.precision,
                                                          fp8_blockwise=one.fp8_blockwise)[0])
        if plan.recompute in MLA_UP_PROJ_RECOMPUTES else 0.0,
    )
    layers_by_kind = []
    for kind, kind_spec, gemm in zip(kinds, models, gemms):
        fwd_steps, bwd_steps = _ring_steps(windowed(att, hw, kind_spec, batch=b, seq_len=workload.seq_len, tp=tp,
                                                    ulysses=u), ring_kv, ring_dkv, s)
        layers_by_kind.append(kind_layer(
            collectives, gemm_fwd_s=float(gemm.fwd_s[0]), gemm_bwd_s=float(gemm.bwd_s[0]),
            attn_share=attention_share(kind_spec), moe=moe if kind.moe else NO_MOE,
            attn_fwd_steps_s=fwd_steps, attn_bwd_steps_s=bwd_steps,
            # Megatron re-runs the MLP of dense layers only (transformer_layer.py at d98e8a64 lines 537-539).
            recompute_mlp=not kind.moe and plan.recompute in MLP_RECOMPUTES))
    work = StepWork(
        pp=pp, vpp=plan.vpp, num_micro_batches=m, vpp_group=plan.vpp_group, layers_per_stage=middle,
        recompute=plan.recompute,
        kind_layers=tuple(layers_by_kind),
        stage_kinds=stage_kinds(model, workload.seq_len, pp, plan.vpp, plan.first_stage_layers or 0,
                                plan.last_stage_layers or 0),
        first_stage_layers=int(stages.first), last_stage_layers=int(stages.last),
        first_stage_fwd_s=emb_rs_fwd + emb_fwd + emb_ag_fwd,
        first_stage_bwd_s=emb_tp_bwd + emb_bwd,
        last_stage_fwd_s=logits_fwd + out_fwd + mtp_fwd,
        last_stage_bwd_s=2 * logits_fwd + out_ag_bwd + out_rs_bwd + mtp_bwd,
        mtp_kinds=mtp_kinds,
        pp_transfer_s=pp_send,
        pp_overlap=bool(pp_sends_beside_compute(runtime.overlap, plan.vpp)),
        dp_reduce=dp_reduce,
        dp_every_micro_batch=plan.zero >= 2 and not synced,
        dp_reduce_whole_chunk=runtime.overlap.aligned_grad_reduce and plan.vpp > 1 and plan.zero <= 1,
        dp_gather=dp_gather,
        dp_gather_every_forward=plan.zero == 3 and not synced,
        dp_stage_sync=synced,
        dp_root_gather_once=bool(root_gathers_per_micro_batch(runtime.overlap.root_gathered_once, plan.zero,
                                                              plan.reshard_after_forward, m) < 1),
        dp_early_gather_s=early,
        dp_gather_by_chunk=bool(chunk_gathers_ahead(runtime.overlap, plan.zero, plan.vpp)),
        dp_backward_gather=plan.reshard_after_forward,
        replicated_all_reduce_s=replicated,
        tied_all_reduce_s=tied,
        optimizer_s=tuple(float(memory_pass_time_s(hw, b)) for b in step_bytes),
        weight_cast_s=tuple(float(weight_cast_s(hw, model, runtime.states, one, n, m, runtime.tp_gathers)[0])
                            for n in layers_of),
        dp_overlap_slowdown=s,
        dp_param_gather_s=after_step,
    )
    return work, phases


def _ring_steps(att: AttentionSteps, ring_kv_s: float, ring_dkv_s: float,
                slowdown: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each ring step's compute, forward and backward, slowed by the transfer beside it: step k
    computes while it runs (layer_program), sending K/V forward for k < R-1, and in backward K/V
    for k < R-1 plus dK/dV for k > 0; NCCL's SMs slow it (cost.overlap). All-gather CP has one
    step each way with its gathers exposed before it: nothing slows it."""
    steps = len(att.fwd_steps_s)
    fwd = tuple(float(slowed_by_overlap(t, ring_kv_s if k < steps - 1 else 0.0, slowdown))
                for k, t in enumerate(att.fwd_steps_s))
    bwd = tuple(float(slowed_by_overlap(t, (ring_kv_s if k < steps - 1 else 0.0) + (ring_dkv_s if k > 0 else 0.0),
                                        slowdown))
                for k, t in enumerate(att.bwd_steps_s))
    return fwd, bwd


def _each_stage(first, middle, last, pp: int) -> list:
    """Stage by stage, a (first, middle, last) triple over a pp-stage pipeline: the middle one on
    every stage between the ends, the first alone without a pipeline."""
    return [first, *([middle] * (pp - 2)), last][:pp]
