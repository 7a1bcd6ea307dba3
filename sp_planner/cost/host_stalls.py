"""The pacing stage's host (CPU) stalls per micro-batch beyond its GPU work, forward and backward
(vectorized, for cost.step): the ops eager PyTorch issues per layer (cost.host) and TE's module
overhead per call on top (cost.te_host), against the GPU time they issue (cost.host.exposed_host_parts_s)."""

from __future__ import annotations

from sp_planner.candidates import Candidates
from sp_planner.cost.attention_comm import kv_heads_for_ulysses
from sp_planner.cost.dsa_host import dsa_host_ops
from sp_planner.cost.dsa_loss_host import indexer_loss_host_ops
from sp_planner.cost.host import (OPS_AFTER_SYNC, exposed_host_parts_s, host_s_per_op, host_syncs_per_layer,
                                  layer_host_ops, ring_host_ops)
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.precision import BF16
from sp_planner.cost.ring_impl import RingImpl
from sp_planner.cost.te_host import layer_te_calls, te_module_extra_s
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.cost.unfused_gqa import gqa_host_ops
from sp_planner.cost.unfused_host import unfused_host_ops
from sp_planner.plan import RECOMPUTE_FULL
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def pacing_host_stalls_s(model: ModelSpec, hardware: HardwareProfile, c: Candidates, *, fwd_layer_s, layer_s,
                         layers, ends_s, cuda_graphs: frozenset[str], sequence_parallel: bool,
                         tp_gathers: TpGathers, ring_impl: RingImpl, seq_len: int) -> tuple:
    """(forward, backward) host stall per micro-batch of the pacing stage's `layers` layers, each
    `layer_s` of GPU time of which `fwd_layer_s` forward (split as the CPU issues it), and its
    ends' GPU work `ends_s` (logits, TP collectives, embedding); the options as cost.step_layers.layer_parts';
    `seq_len` the workload's, for a DSA layer's top-k blocks (cost.dsa_host, cost.dsa_loss_host) and the unfused
    attention's softmax (cost.unfused_host)."""
    full = c.recompute == RECOMPUTE_FULL
    dsa = dsa_host_ops(model, seq_len=seq_len, micro_batch=c.micro_batch, tp=c.tp, ring=c.ring,
                       sequence_parallel=sequence_parallel)
    # The trained indexer's loss path on top (cost.dsa_loss_host; none without the loss).
    loss = indexer_loss_host_ops(model, seq_len=seq_len, micro_batch=c.micro_batch, tp=c.tp, ring=c.ring)
    dsa = (dsa[0] + loss[0], dsa[1] + loss[1])
    # Heads a rank attends with after the Ulysses all-to-all, as cost.attention times them.
    kv_heads = kv_heads_for_ulysses(model.num_kv_heads, c.tp, c.ulysses) / c.ulysses
    unfused = hardware.efficiency.attention_unfused
    gqa = gqa_host_ops(model.num_heads / (c.tp * c.ulysses), kv_heads, unfused=unfused)
    # TE's unfused attention's own ops over the whole sequence (no context parallelism runs it).
    own = unfused_host_ops(model, kv_tokens=seq_len, attn_batches=c.micro_batch * model.num_heads / (c.tp * c.ulysses),
                           unfused=unfused)
    ops_fwd, ops_bwd = layer_host_ops(model, tp=c.tp, ep=c.ep, etp=c.etp, low_precision=c.precision != BF16,
                                      full_recompute=full, cuda_graphs=cuda_graphs, fp8_current=c.fp8_current,
                                      sequence_parallel=sequence_parallel,
                                      regathers_saved_inputs=tp_gathers.regathers_saved_inputs,
                                      ring_ops=ring_host_ops(ring_impl, ring=c.ring, allgather=c.allgather),
                                      dsa_ops=dsa, gqa_ops=gqa, unfused_ops=own)
    per_op = host_s_per_op(hardware)
    # TE module calls cost TE's module overhead on top (cost.te_host).
    te_fwd, te_bwd = layer_te_calls(model, full_recompute=full, cuda_graphs=cuda_graphs)
    te_extra = te_module_extra_s(hardware)
    return exposed_host_parts_s(
        host_fwd_s=ops_fwd * per_op + te_fwd * te_extra, host_bwd_s=ops_bwd * per_op + te_bwd * te_extra,
        gpu_fwd_s=fwd_layer_s, gpu_bwd_s=layer_s - fwd_layer_s, layers=layers, logits_s=ends_s,
        syncs=host_syncs_per_layer(model, cuda_graphs), full_recompute=full,
        # Only the MoE layers sync: the average layer's share of one (Llama-4-Maverick's every other layer).
        after_sync_s=OPS_AFTER_SYNC * per_op * moe_layer_fraction(model))
