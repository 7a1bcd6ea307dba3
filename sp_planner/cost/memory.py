"""Memory per GPU (vectorized over candidates): model states, activations, logits, buffers.

Model states of each stage's rank, with FP8's weight copies and ZeRO's sharding: cost.stage_states.

Activations per layer: cost.activations (Korthikanti et al. 2022 with sequence parallelism and
flash attention; recompute; FP8's saved inputs); on the first stage also the embedding dropout's
mask of each micro-batch in flight where the model has one (cost.dropout). Stages hold the layers
of the plan's split (pipeline.stage_layers; uneven first/last stages), and each rank the parameters
cost.params counts for its layers and stage. The peak is that of the busiest of the first rank, the
last (the loss) and, at pp >= 3, the second (the middle rank holding the most: with a first stage
lighter than the middle ones, as the counted split makes it, the second can hold more than the
first).

ZeRO-2/3 transients (comm buffers): a layer's gradients exist unsharded until their reduce-scatter
(in the framework's gradient width, cost.states); ZeRO-3 with
reshard_after_forward also holds the gathered parameters of the layer computing and of the one
prefetched behind it (FSDP2's implicit prefetch issues the next layer's all-gather during the
current one; Megatron-FSDP's --fsdp-double-buffer names the same two buffers). ZeRO-3's root
unit (cost.buckets: embedding, final norm, output layer) is gathered once per step and not
resharded after forward, so under reshard_after_forward its gathered bf16 parameters are held
beside the layers'; its gradients wait for the root's reduce-scatter after the whole backward
(torch fully_shard: the root's post-backward runs in the final callback), so the output layer's
and final norm's unsharded gradients, produced first in backward, are held throughout it
(wherever parameters are sharded into such units: ZeRO-3, and FSDP's ZeRO-1/2).

The peak: a stage's memory peaks at one of two moments, and the parts of the other are not held
then. At the loss (the loss stage) the logits are live (as much of them as the framework's loss
holds at its peak, forward or backward: cost.loss_memory; torchtitan 0.3.x's one chunk of eight
beside an fp32 gradient buffer of the hidden states) beside every layer's saved activations and
the TP all-gather buffer (Megatron's global memory buffer keeps it), and where the framework keeps
the output layer's input gathered (torchtitan) that input beyond its shard (cost.saved_inputs;
counted with the activations); the attention's buffers (Ulysses send/receive, ring K/V and
dK/dV, all-gather CP's gathered K/V; cost.comm_buffers) were freed when each layer's attention
returned, and under full recompute no layer is rebuilt yet. In a layer's
backward (the first one backward holds the most) the logits are gone (the output layer's backward
frees them before the layers' start), and the layer full recompute rebuilds and its attention's
buffers are live, and under unfused attention its score buffers beyond the saved ones (the larger
of its forward's and backward's: cost.unfused_memory; a forward holds no more saved layers). The
larger moment is the peak, and the breakdown shows its parts (logits 0 when the backward moment is
larger). Megatron-Core: GPTModel.forward computes the loss after the last
layer; the ring and Ulysses buffers are locals of the attention call (cost.ring_impl).
"""

from __future__ import annotations

from dataclasses import fields
from typing import NamedTuple

import numpy as np

from sp_planner.cost.activations import saved_activation_bytes_per_layer, sequence_parallel_region_tokens
from sp_planner.cost.deepep import deepep_buffer_bytes, deepep_sms
from sp_planner.cost.offload import resident_layers
from sp_planner.cost.stage_activations import stage_kind_layers, stage_saved_bytes
from sp_planner.cost.stage_params import placed_moe_layers, stage_params
from sp_planner.cost.stage_states import FirstMiddleLastStates, stage_state_bytes
from sp_planner.cost.comm_buffers import comm_buffer_bytes
from sp_planner.cost.compiled_layers import EAGER_LAYERS, CompiledLayers
from sp_planner.cost.dropout import embedding_dropout_saved_bytes_per_token
from sp_planner.cost.expert_padding import NO_PADDING
from sp_planner.cost.fp8_params import sharded_fp8_params
from sp_planner.cost.moe import nccl_dispatch
from sp_planner.cost.loss_memory import MEGATRON_LOSS, LossMemory, loss_peak_bytes
from sp_planner.cost.mtp import mtp_layer_model, mtp_saved_extra_bytes
from sp_planner.cost.params import (
    candidate_stage_layers,
    largest_adjacent_layers_params_per_rank,
    largest_layer_params_per_rank,
)
from sp_planner.cost.precision import fp8_weight_bytes_per_param
from sp_planner.cost.ring_impl import TE_RING, RingImpl
from sp_planner.cost.runtime_memory import runtime_bytes
from sp_planner.cost.saved_inputs import kept_output_input_bytes
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.cost.unfused_memory import te_causal_mask_cache_bytes
from sp_planner.cost.window import layer_is_local
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.distinct import distinct_key, per_distinct_rows, per_key
from sp_planner.layout import CP_AXES, group_size
from sp_planner.pipeline import first_stage_in_flight, stage_in_flight
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# ZeRO-3's gathered layers at once: the one computing and the one prefetched (module docstring).
ZERO3_GATHERED_LAYERS = 2


def zero_buffer_bytes(model: ModelSpec, *, tp, zero, reshard, ep=1, etp=1, states: TrainingStates = MEGATRON_STATES,
                      gathered_bytes_per_param=None):
    """ZeRO-2/3 transients on a rank (module docstring): one layer's unsharded gradients before
    their reduce-scatter (where the framework shards gradients, cost.states), and under ZeRO-3
    with reshard_after_forward the gathered parameters of ZERO3_GATHERED_LAYERS layers (kept
    parameters are counted whole instead), `gathered_bytes_per_param` each (default the
    framework's compute width; Megatron-FSDP's FP8 weights, cost.fp8_params: their FP8 bytes).
    Sized by the largest layers, not the average: the buffers peak when the largest layer is
    reduced, and when the two neighbours holding the most are gathered (with MoE on every 2nd
    layer, a MoE layer and a dense one)."""
    layer = largest_layer_params_per_rank(model, tp, ep, etp)  # the rank's share of one layer, unsharded
    pair = largest_adjacent_layers_params_per_rank(model, tp, ep, etp)  # ZERO3_GATHERED_LAYERS = 2 of them
    zero = np.asarray(zero)
    gathered = (zero == 3) & np.asarray(reshard, dtype=bool)
    width = states.compute_param_bytes if gathered_bytes_per_param is None else gathered_bytes_per_param
    return (np.where(zero >= states.grad_shard_stage, states.grad_bytes * layer, 0.0)
            + np.where(gathered, width * pair, 0.0))


class MemoryColumns(NamedTuple):
    """Bytes per GPU for each candidate (float64 arrays): estimate.MemoryBreakdown's fields, of
    the busiest pipeline rank, and that rank's total."""

    params_bytes: np.ndarray
    grads_bytes: np.ndarray
    optimizer_bytes: np.ndarray
    activations_bytes: np.ndarray
    logits_bytes: np.ndarray
    comm_buffers_bytes: np.ndarray
    reserve_bytes: np.ndarray
    peak_bytes: np.ndarray


def _columns_but(*unread: str) -> tuple[str, ...]:
    """The candidate columns but `unread`: a term's whole input, whose distinct rows (far fewer
    than a MoE search's 10^5 rows a batch) it is priced on once each (distinct.per_distinct_rows;
    a column added to Candidates is read until said otherwise)."""
    return tuple(f.name for f in fields(Candidates) if f.name not in unread)


# What _stage_states never reads: the micro-batch, recompute, the ring's layout and comm, FP8
# attention and CPU offloading.
STATE_COLUMNS = _columns_but("micro_batch", "recompute", "zigzag", "allgather", "fp8_attention",
                             "cpu_offload_layers")
# What cost.activations.saved_activation_bytes_per_layer never reads: the pipeline, ZeRO and the
# data-parallel layout, the optimizer's moments, CPU offloading and the ring's layout.
ACTIVATION_COLUMNS = _columns_but("pp", "vpp", "first_stage_layers", "last_stage_layers", "zero", "reshard", "dp",
                                  "dp_replicate", "adam_moments_bf16", "cpu_offload_layers", "zigzag")
# What cost.runtime_memory.runtime_bytes never reads: the choices of a rank's work, not its groups.
RUNTIME_COLUMNS = _columns_but("micro_batch", "recompute", "zero", "reshard", "vpp", "first_stage_layers",
                               "last_stage_layers", "precision", "fp8_current", "fp8_blockwise", "fp8_attention",
                               "cpu_offload_layers", "adam_moments_bf16", "zigzag")


def _stage_states(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                  states: TrainingStates, tp_gathers: TpGathers):
    """Each stage's (params, grads, optimizer) bytes (cost.stage_states) over its own layers: its
    count of MoE layers, not its layers x the share of them (cost.stage_params; DeepSeek-V3's first
    stage of 3 dense layers holds no expert), where the model's layers differ as Megatron places
    them, on its virtual stages too."""
    stages = candidate_stage_layers(model, c)
    held = stage_kind_layers(model, workload.seq_len, c)
    own = stage_params(model, c.tp, c.pp, c.ep, c.etp, stages, placed_moe_layers(model, workload.seq_len, stages, held))
    return stage_state_bytes(model, hardware, c, states, own, stages,
                             caches_weight_casts=tp_gathers.caches_weight_casts)


def memory_columns(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                   states: TrainingStates = MEGATRON_STATES, *, domain_gpus: int,
                   ring_impl: RingImpl = TE_RING, loss_memory: LossMemory = MEGATRON_LOSS,
                   sequence_parallel: bool = True, tp_gathers: TpGathers = TE_TP_GATHERS,
                   compiled_layers: CompiledLayers = EAGER_LAYERS,
                   expert_row_padding: str = NO_PADDING,
                   stage_states: FirstMiddleLastStates | None = None) -> MemoryColumns:
    """Memory of every candidate, for its busiest pipeline rank (first, second or last), with the framework's
    training states (cost.states); `domain_gpus`: the GPUs on one NVLink domain (the host, or a
    rack-scale domain), which decides how NCCL connects point-to-point peers (cost.runtime_memory);
    `loss_memory`: what the framework's cross entropy holds, per logit and chunk (cost.loss_memory);
    `sequence_parallel` False: TP without sequence parallelism (activation_bytes_per_layer);
    `tp_gathers`: the framework's TP gathers, whose linears save their shards or keep the gathered
    inputs (cost.saved_inputs); `compiled_layers`: the plans whose layers it compiles
    (cost.compiled_layers); `expert_row_padding`: who pads each local expert's rows for FP8
    (cost.expert_padding: the router's extra rows are saved activations); `stage_states`: these
    rows' stage_states_bytes where the caller priced them (search_pruned_scan, for their floor)."""
    tp, pp, zero = c.tp, c.pp, c.zero
    stages = candidate_stage_layers(model, c)
    held = stage_kind_layers(model, workload.seq_len, c)
    first_states, middle_states, last_states = stage_states if stage_states is not None else stage_states_bytes(
        model, hardware, workload, c, states, tp_gathers=tp_gathers)

    # One key for every layer kind's activations (the model's, each kind's, MTP's: DeepSeek-V3's four).
    activation_key = distinct_key(c, ACTIVATION_COLUMNS)

    def saved_per_layer(spec: ModelSpec):
        """(saved, full) bytes a layer of `spec` keeps per micro-batch as the candidates run."""
        return per_key(lambda rows: saved_activation_bytes_per_layer(
            spec, hardware, workload, rows, sequence_parallel=sequence_parallel, gathers=tp_gathers,
            compiled=compiled_layers, expert_row_padding=expert_row_padding), activation_key, c)

    stored, working = saved_per_layer(model)
    n = c.micro_batch * workload.seq_len / group_size(c, CP_AXES)
    m = workload.global_batch / (c.dp * c.micro_batch)
    # CPU offloading (pp 1 only) keeps L - N layers' activations on the GPU (cost.offload).
    # The embedding dropout's mask rides with the first stage's micro-batches in flight (cost.dropout),
    # after the scatter to the sequence-parallel region where there is one.
    emb_mask = embedding_dropout_saved_bytes_per_token(model) * sequence_parallel_region_tokens(
        n, tp, sequence_parallel)
    # A pipeline stage's layers save what their kinds save where the model's layers differ
    # (cost.stage_activations; NaN elsewhere: its layers x the average layer, offloading's L - N
    # resident ones without a pipeline).
    average = tuple(resident_layers(layers, c.cpu_offload_layers) * stored for layers in stages)
    saved_first, saved_middle, saved_last = average if held is None else (
        np.where(np.isnan(mine), run, mine) for mine, run in zip(stage_saved_bytes(
            model, workload.seq_len, held, stored=lambda kind: saved_per_layer(kind)[0]), average))
    # Multi-token prediction's depths on the last stage (at pp 1 the one stage; cost.mtp): each
    # saves its layer's activations (its own kind's) and the inputs of eh_proj and its norms.
    mtp_saved = 0.0
    if model.mtp_layers:
        mtp_model = mtp_layer_model(model, workload.seq_len)
        mtp_layer = stored if mtp_model is None else saved_per_layer(mtp_model)[0]
        mtp_saved = model.mtp_layers * mtp_layer + mtp_saved_extra_bytes(
            model, sequence_parallel_region_tokens(n, tp, sequence_parallel))
    # The depths run in the last chunk alone, of which the last rank holds one micro-batch at its
    # peak (the loss's; an interleaved last rank's other forwards in flight are its earlier
    # chunks', pipeline.forwards_before_backward): once, not per micro-batch in flight.
    # Transformer Engine's unfused attention caches one s x s causal mask a rank for the run, from
    # 16384 keys (cost.unfused_memory): held at every moment, once, not per micro-batch.
    mask_cache = te_causal_mask_cache_bytes(
        workload.seq_len, attn_batches=c.micro_batch * model.num_heads / (c.tp * c.ulysses),
        has_global_layer=not all(layer_is_local(model, workload.seq_len))
    ) if hardware.efficiency.attention_unfused else 0.0
    act_first = ((saved_first + emb_mask) * first_stage_in_flight(pp, c.vpp, m, c.vpp_group)
                 + np.where(pp == 1, mtp_saved, 0.0) + mask_cache)
    # The last rank holds one micro-batch under 1F1B and more when interleaved; of the middle
    # ranks (pp >= 3; equal layers) the second holds the most (pipeline.stage_in_flight).
    act_last = saved_last * stage_in_flight(pp, c.vpp, m, pp - 1, c.vpp_group) + mtp_saved + mask_cache
    act_middle = saved_middle * stage_in_flight(pp, c.vpp, m, 1, c.vpp_group) + mask_cache
    logits_last = loss_peak_bytes(loss_memory, tokens=n, vocab_size=model.vocab_size, hidden_size=model.hidden_size,
                                  tp=tp, pp=pp, micro_batch=c.micro_batch)
    # Each MTP head's logits are held at the loss moment beside the main head's: Megatron computes
    # their losses first, in the same postprocess (gpt_model.py _postprocess, cost.mtp).
    logits_last = logits_last * (1 + model.mtp_layers)
    logits_first = np.where(pp == 1, logits_last, 0.0)
    # The output layer's input, kept gathered by a framework that does not gather it again
    # (torchtitan, cost.saved_inputs): a saved activation of the loss moment alone.
    out_input_last = kept_output_input_bytes(model, tokens=n, tp=tp, gathers=tp_gathers,
                                             sequence_parallel=sequence_parallel)
    out_input_first = np.where(pp == 1, out_input_last, 0.0)
    comm = comm_buffer_bytes(model, workload, tp=tp, ulysses=c.ulysses, ring=c.ring,
                             micro_batch=c.micro_batch, allgather=c.allgather, ring_impl=ring_impl)
    # Megatron-FSDP's gathered FP8 units hold TE's FP8 weight bytes (with the transpose built in
    # backward where the chip needs one, cost.fp8_params).
    gathered_width = np.where(sharded_fp8_params(states, c.precision, zero, c.reshard),
                              fp8_weight_bytes_per_param(c.precision, hardware.fp8_gemm_any_layout),
                              states.compute_param_bytes)
    held = comm.tp_bytes + zero_buffer_bytes(model, tp=tp, zero=zero, reshard=c.reshard, ep=c.ep, etp=c.etp,
                                             states=states, gathered_bytes_per_param=gathered_width)
    reserve = per_distinct_rows(lambda rows: runtime_bytes(hardware, rows, domain_gpus=domain_gpus,
                                                           nccl_dispatch=nccl_dispatch(model)), c, RUNTIME_COLUMNS)
    if model.moe is not None and model.moe.dispatcher == "deepep":  # its NVLink and RDMA buffers
        reserve = reserve + deepep_buffer_bytes(model, np.asarray(c.etp) * np.asarray(c.ep), deepep_sms(model))

    # The stage's peak is the larger of two moments (module docstring): the loss, with the logits,
    # or a layer's backward, with what recompute rebuilds of that layer (full: all of it; selective:
    # its core attention's lse, unfused scores and Ulysses copy; unfused attention's score buffers
    # beyond the saved ones, the larger of its forward's and backward's, cost.unfused_memory) and
    # the attention's buffers; the other moment's parts are not held then.
    backward = working + comm.attention_bytes

    def peak_parts(acts, logits, out_input):
        at_loss = logits + out_input >= backward
        return (acts + np.where(at_loss, out_input, working), np.where(at_loss, logits, 0.0),
                held + np.where(at_loss, 0.0, comm.attention_bytes))

    first = (*first_states, *peak_parts(act_first, logits_first, out_input_first), reserve)
    last = (*last_states, *peak_parts(act_last, logits_last, out_input_last), reserve)
    middle = (*middle_states, *peak_parts(act_middle, 0.0, 0.0), reserve)
    first_total, last_total = sum(first), sum(last)
    middle_total = np.where(pp >= 3, sum(middle), 0.0)
    use_first = (first_total >= last_total) & (first_total >= middle_total)
    use_last = ~use_first & (last_total >= middle_total)
    params, grads, optimizer, activations, logits, comm_buffers, reserve = (
        np.where(use_first, a, np.where(use_last, b, mid)).astype(np.float64, copy=False)
        for a, b, mid in zip(first, last, middle))
    peak = np.maximum(np.maximum(first_total, last_total), middle_total).astype(np.float64, copy=False)
    return MemoryColumns(params_bytes=params, grads_bytes=grads, optimizer_bytes=optimizer,
                         activations_bytes=activations, logits_bytes=logits, comm_buffers_bytes=comm_buffers,
                         reserve_bytes=reserve, peak_bytes=peak)


def stage_states_bytes(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                       states: TrainingStates = MEGATRON_STATES, *,
                       tp_gathers: TpGathers = TE_TP_GATHERS) -> FirstMiddleLastStates:
    """The first, a middle and the last stage's (params, grads, optimizer) bytes (_stage_states),
    priced once per distinct row of STATE_COLUMNS: memory_columns' first parts."""
    return per_distinct_rows(lambda rows: _stage_states(model, hardware, workload, rows, states, tp_gathers), c,
                             STATE_COLUMNS)


def states_floor_bytes(stage_states: FirstMiddleLastStates) -> np.ndarray:
    """A lower bound of memory_columns' peak_bytes, bit for bit, from the rows' stage_states_bytes
    alone (a tenth of the memory's time): the larger of the first and the last stage's (params,
    grads, optimizer) summed, the first three of the parts memory_columns sums left to right into
    each stage's total. The parts after them (activations, logits, buffers, reserve) are each >= 0,
    and a rounded sum does not decrease when a term >= 0 is added (IEEE addition is monotone), so
    the peak, the largest total, is at least this (search_pruned_scan: rows over the capacity by
    it are out of memory without their memory priced; tests/cost/test_memory_floor.py)."""
    first, _, last = stage_states
    return np.maximum(sum(first), sum(last)).astype(np.float64)
