"""Activations a layer saves for backward, per micro-batch (vectorized over candidates).

Activations per layer follow Korthikanti et al. 2022 (arXiv 2205.05198, section 4.1) with
sequence parallelism (a run without it, Runtime.sequence_parallel False, keeps the norms' tensors
and full recompute's layer input whole on every TP rank), specialised to flash attention (no s^2
terms), RMSNorm, GQA and gated MLPs. Stored per layer, with n = b*s/cp tokens on the rank:
  norms:     LN1 in, LN1 out, LN2 in, LN2 out, sequence-sharded over tp      4 * 2 * n*h/tp
  dropout:   the two hidden dropouts' bool masks where the model has them    2 * n*h/tp
             (cost.dropout; Llama recipes have none)
  attention: Q, K, V as flash-attention saves them (K/V with the heads replicated for Ulysses;
             unfused attention's at the query heads under GQA, cost.unfused_gqa),
             O (twice when ulysses > 1: flash-attention's head-sharded copy and the
             out-projection's input), fp32 log-sum-exp; the QK norm's inputs where the model
             has one (cost.qk_norm)
  MLP:       fc1 output (gate and up for SwiGLU) and the activation output   2 * n_mlp * n*ffn/tp
Selective recompute is Megatron's core_attn recompute: with flash attention it frees only
flash-attention's own O and lse; unfused attention's score-sized tensors (the softmax output, and
with attention dropout its mask and output: cost.kernels) likewise. Full recompute keeps each
layer's input (2*n*h/tp) and rebuilds one layer at a time. mla_up_proj recompute frees the
checkpointed Q/K/V and keeps k_pos_emb (cost.mla_recompute); moe_act the routed experts'
activation output, layernorm the standalone norms' outputs (cost.module_recompute). 1F1B keeps
min(pp - rank, m) micro-batches in flight on a pipeline rank (Narayanan et al. 2021, section 2.2);
the interleaved schedule more, the last rank included (pipeline.stage_in_flight).

FP8 (Transformer Engine, cost.precision): the GEMM inputs saved for backward are stored in FP8; with
nothing recomputed the attention's bf16 output stays beside the out-projection's FP8 cast.
A framework that keeps the gathered QKV and FC1 inputs instead of their shards (torchtitan,
cost.saved_inputs) holds them whole, and quantized only where it gathered them so. Where its
converter leaves the routed experts bf16 (torchtitan, cost.tp_gathers.low_precision_experts),
their saved inputs (the permuted copies and FC2's inputs) stay bf16.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.attention_comm import kv_heads_for_ulysses
from sp_planner.cost.compiled_layers import (
    EAGER_LAYERS,
    CompiledLayers,
    compiled_layer_delta_bytes,
    kept_fp8_weight_bytes,
)
from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.cost.flops import _active_ffn_width
from sp_planner.cost.dsa import dsa_saved_attention_bytes
from sp_planner.cost.dsa_loss import indexer_loss_saved_bytes
from sp_planner.cost.dropout import has_attention_dropout, hidden_dropout_saved_bytes_per_token
from sp_planner.cost.expert_padding import NO_PADDING, padding_align_rows, router_pad_load
from sp_planner.cost.kernels import unfused_saved_bytes_per_score
from sp_planner.cost.unfused_gqa import gqa_forward_input_bytes, gqa_saved_delta_bytes
from sp_planner.cost.unfused_memory import unfused_saved_mask_bytes, unfused_transient_bytes
from sp_planner.cost.moe import ROUTER_BYTES_PER_LOGIT, busiest_rank_load, moe_layer_fraction
from sp_planner.cost.precision import BF16, fp8_activation_savings_per_layer, fp8_saving_per_element
from sp_planner.cost.qk_norm import qk_norm_saved_bytes
from sp_planner.cost.saved_inputs import kept_gathered_input_bytes, saved_input_precision
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers, expert_precision
from sp_planner.layout import CP_AXES, group_size
from sp_planner.cost.mla_recompute import mla_up_proj_saved_delta_bytes
from sp_planner.cost.mlp_recompute import mlp_recompute_fp8_unsaved_elements, mlp_recompute_saved_delta_bytes
from sp_planner.cost.module_recompute import module_recompute_fp8_unsaved_elements, module_recompute_saved_delta_bytes
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, RECOMPUTE_SELECTIVE
from sp_planner.recompute import recomputes_mla_up_proj, reruns_core_attention
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


def sequence_parallel_region_tokens(tokens, tp, sequence_parallel: bool):
    """A rank's tokens in the sequence-parallel region (the hidden state between the TP GEMMs:
    norms, dropouts, residual adds, the embedding's output) of its `tokens` (micro-batch x sequence
    / cp): split over tp with Megatron's sequence parallelism (Korthikanti et al. 2022, arXiv
    2205.05198, section 4.2.2), whole on every TP rank without it."""
    return tokens / np.asarray(tp) if sequence_parallel else tokens


def moe_activation_bytes(model: ModelSpec, n, *, tp, ep, etp, pad_load=0.0):
    """Extra stored bytes of an MoE layer (averaged over layers) on the busiest rank: the permuted
    token copies fed to the experts (n/tp x top_k x etp of width h, saved for the weight
    gradients) and the fp32 router logits; the expert FFN activations are the MLP term's, scaled
    by the busiest rank's load for the routed share (cost.moe). `pad_load`: the router's FP8
    padding rows per routed copy (cost.expert_padding.router_pad_load), permuted and computed as
    routed copies, so saved as they are."""
    if model.moe is None:
        return 0.0
    tokens = n / tp
    load = busiest_rank_load(model, ep, pad_load)
    copies = tokens * model.moe.top_k * etp * load
    routed_width = model.moe.top_k * model.moe.moe_intermediate_size
    routed_extra = BF16_BYTES * model.num_mlp_matrices * tokens * routed_width * (load - 1.0)
    router = ROUTER_BYTES_PER_LOGIT * tokens * model.moe.num_experts
    return moe_layer_fraction(model) * (BF16_BYTES * copies * model.hidden_size + routed_extra + router)


def activation_bytes_per_layer(model: ModelSpec, workload: Workload, *, tp, ulysses, ring,
                               micro_batch, recompute, ep=1, etp=1, unfused: bool = False,
                               sequence_parallel: bool = True, pad_load=0.0, allgather=False):
    """(stored bytes per layer per micro-batch, bytes one layer rebuilds in its backward): full
    recompute rebuilds the whole layer (its bytes with nothing recomputed), selective recompute the
    core attention's log-sum-exp, unfused scores and Ulysses copy, which are then held beside the
    saved ones for that layer's backward (Korthikanti et al. 2022 section 5: the recomputed
    activations of one layer at a time); unfused attention adds the score buffers and masks one
    layer's attention holds beyond its saved ones while it runs (cost.unfused_memory).

    `unfused`: core attention unfused (cost.kernels): no log-sum-exp, and per score element the
    softmax output's 2 bytes and, with attention dropout, its mask and output (Korthikanti et al.
    2022 section 4.1: 5as^2b in all; TE's torch softmax from 16384 keys: cost.kernels, and its s x s
    mask), which selective recompute frees.
    `sequence_parallel` False: TP without sequence parallelism, whose norms' tensors and layer
    input are whole on every TP rank (Korthikanti et al. 2022 Table 2: sbh(10 + 24/t) against
    sbh 34/t; full recompute 2sbh against 2sbh/t). `pad_load`: moe_activation_bytes'. `allgather`:
    all-gather CP (plan.cp_comm), whose attention saves the K/V mla_up_proj frees (cost.mla_recompute)."""
    h, d = model.hidden_size, model.head_dim
    n = micro_batch * workload.seq_len / (ulysses * ring)
    heads = model.num_heads / tp
    kv = kv_heads_for_ulysses(model.num_kv_heads, tp, ulysses)
    # The hidden-state region sequence parallelism splits over tp (else whole on every TP rank).
    region = sequence_parallel_region_tokens(n, tp, sequence_parallel)
    norms = 4 * BF16_BYTES * region * h
    # The hidden dropouts run in the same region (cost.dropout), their masks kept for backward.
    masks = hidden_dropout_saved_bytes_per_token(model) * region
    q = BF16_BYTES * n * heads * d
    lse = 0.0 if unfused else FP32_BYTES * n * heads
    # b x heads/(tp*u) x s x s scores on the rank; with no ring (unfused kernels cannot) n*u = b*s,
    # so that is n x s x heads/tp elements.
    # TE's softmax kernel or its torch fallback by b x heads/(tp*u) (cost.kernels.te_torch_softmax).
    attn_batches = micro_batch * heads / ulysses
    per_score = unfused_saved_bytes_per_score(has_attention_dropout(model), workload.seq_len, attn_batches)
    # With them the torch softmax's saved s x s mask, one per layer (cost.unfused_memory).
    score_elements = n * workload.seq_len * heads
    scores = (per_score * score_elements + unfused_saved_mask_bytes(workload.seq_len, attn_batches)
              if unfused else 0.0)
    o_copies = np.where(ulysses > 1, 2, 1)
    # The QK norm's saved inputs, on the rank's heads before any Ulysses all-to-all (cost.qk_norm).
    kv_bytes = 2 * BF16_BYTES * n * kv * d
    # Unfused GQA saves K and V expanded to the query heads, rebuilt by selective recompute (cost.unfused_gqa).
    gqa = gqa_saved_delta_bytes(tokens=n, heads=heads, kv_heads=kv, head_dim=d) if unfused else 0.0
    attn = q + kv_bytes + o_copies * q + lse + scores + gqa + qk_norm_saved_bytes(model, n, tp)
    if model.dsa is not None:  # sparse MLA's saved tensors in place of dense MLA's (cost.dsa)
        lse = 0.0  # recomputed in backward (ops/sparse_mla.py), so selective recompute frees none
        attn = dsa_saved_attention_bytes(model, queries=n, keys=micro_batch * workload.seq_len, heads=heads)
        # The trained indexer's (cost.dsa_loss; nothing without its loss).
        attn = attn + indexer_loss_saved_bytes(model, queries=n, keys=micro_batch * workload.seq_len,
                                               seq_len=workload.seq_len)
    mlp = BF16_BYTES * model.num_mlp_matrices * n * _active_ffn_width(model) / tp
    full_layer = norms + attn + mlp + moe_activation_bytes(model, n, tp=tp, ep=ep, etp=etp, pad_load=pad_load) + masks
    rebuilt_attention = lse + scores + gqa + np.where(ulysses > 1, q, 0.0)
    selective = full_layer - rebuilt_attention
    layer_input = BF16_BYTES * region * h
    stored = np.select([recompute == RECOMPUTE_FULL, recompute == RECOMPUTE_SELECTIVE], [layer_input, selective],
                       full_layer)
    if model.mla is not None:
        up_proj = full_layer + mla_up_proj_saved_delta_bytes(model, tokens=n, q_bytes=q, kv_bytes=kv_bytes,
                                                             ulysses=ulysses, ring=ring, allgather=allgather)
        stored = np.where(recomputes_mla_up_proj(recompute), up_proj, stored)
    # moe_act and layernorm free the activation's and the standalone norms' outputs (cost.module_recompute),
    # mlp the dense layers' MLP insides (cost.mlp_recompute).
    stored = stored + module_recompute_saved_delta_bytes(model, tokens=n, region=region, tp=tp, ep=ep,
                                                         recompute=recompute, pad_load=pad_load) \
        + mlp_recompute_saved_delta_bytes(model, tokens=n, region=region, tp=tp, recompute=recompute)
    working = np.select([recompute == RECOMPUTE_FULL, recompute == RECOMPUTE_SELECTIVE],
                        [full_layer, rebuilt_attention], 0.0)
    if unfused:  # what its attention holds beyond the saved scores while it runs (cost.unfused_memory)
        # Under GQA the kv-head K and V beside the expanded ones: held through the forward, or, under
        # selective recompute, saved as the checkpoint's inputs and beside the rebuilt expanded ones
        # (which `gqa` counts less their kv heads) each way (cost.unfused_gqa).
        held = gqa_forward_input_bytes(tokens=n, heads=heads, kv_heads=kv, head_dim=d)
        selective = recompute == RECOMPUTE_SELECTIVE
        working = working + unfused_transient_bytes(has_attention_dropout(model), workload.seq_len, score_elements,
                                                     np.where(selective, 0.0, held),
                                                     attn_batches=attn_batches) + np.where(selective, held, 0.0)
    return stored, working


def saved_activation_bytes_per_layer(model: ModelSpec, hardware: HardwareProfile, workload: Workload,
                                     c: Candidates, *, sequence_parallel: bool = True,
                                     gathers: TpGathers = TE_TP_GATHERS, compiled: CompiledLayers = EAGER_LAYERS,
                                     expert_row_padding: str = NO_PADDING):
    """(bytes one layer saves for backward per micro-batch as the candidate runs, FP8's smaller
    saved inputs included; bytes one layer rebuilds in its backward, activation_bytes_per_layer's):
    what memory_columns holds
    per layer and what CPU offloading copies (cost.offload). `gathers`: the framework's TP gathers
    (cost.tp_gathers), whose linears save their shards (Transformer Engine's, the default) or keep
    the gathered inputs (cost.saved_inputs). `compiled`: the plans whose layers it compiles, which
    then keep fewer GEMM inputs with nothing recomputed (cost.compiled_layers). `expert_row_padding`:
    who pads each local expert's rows for FP8 (cost.expert_padding); the router's extra rows are
    saved as routed copies."""
    n = c.micro_batch * workload.seq_len / group_size(c, CP_AXES)
    router_align = padding_align_rows(expert_precision(c.precision, gathers), expert_row_padding)[1]
    stored, working = activation_bytes_per_layer(
        model, workload, tp=c.tp, ulysses=c.ulysses, ring=c.ring, micro_batch=c.micro_batch,
        recompute=c.recompute, ep=c.ep, etp=c.etp, unfused=hardware.efficiency.attention_unfused,
        sequence_parallel=sequence_parallel, pad_load=router_pad_load(model, n / c.tp, router_align),
        allgather=c.allgather,
    )
    full = c.recompute == RECOMPUTE_FULL
    # The precision the GEMM inputs are saved in: the plan's under Transformer Engine (cost.saved_inputs).
    saved = saved_input_precision(c.precision, tp=c.tp, gathers=gathers, fp8_blockwise=c.fp8_blockwise,
                                  sequence_parallel=sequence_parallel)
    # The routed experts' inputs stay bf16 where the framework runs them bf16 (torchtitan, cost.tp_gathers).
    savings = fp8_activation_savings_per_layer(model, tokens=n, tp=c.tp, precision=saved,
                                               routed_experts=gathers.low_precision_experts)
    # The inputs the module recomputes free are not saved in FP8 either (cost.module_recompute;
    # Megatron's choices, which only the Megatron family runs).
    unsaved = module_recompute_fp8_unsaved_elements(model, tokens=n, tp=c.tp, recompute=c.recompute) \
        + mlp_recompute_fp8_unsaved_elements(model, tokens=n, tp=c.tp, recompute=c.recompute)
    savings = savings - fp8_saving_per_element(saved) * unsaved
    stored = stored - np.where(full, 0.0, savings)
    # The QKV and FC1 inputs kept gathered (torchtitan): whole beyond the shards counted above, in the
    # layers kept and in the one full recompute rebuilds.
    kept = kept_gathered_input_bytes(model, tokens=n, tp=c.tp, precision=c.precision, gathers=gathers,
                                     fp8_blockwise=c.fp8_blockwise, sequence_parallel=sequence_parallel)
    stored, working = stored + np.where(full, 0.0, kept), working + np.where(full, kept, 0.0)
    # In bf16 the fused attention's saved output and the out-projection's saved input are one tensor
    # (counted once when ulysses is 1). Under FP8 the out-projection saves its own FP8 cast
    # (Transformer Engine module/linear.py: inputmat = input_quantizer(inputmat), saved for
    # backward) while the attention keeps its bf16 output for its backward: with nothing
    # recomputed, that bf16 copy stays beside the 1 B one the savings above leave. FP8 attention's
    # output is already the FP8 tensor the projection takes; Ulysses counts two copies already;
    # selective recompute frees the attention's (mla_up_proj keeps it); unfused attention does not save
    # its output.
    bf16_out = (BF16_BYTES * c.micro_batch * workload.seq_len / (c.ulysses * c.ring)) * model.q_size / c.tp
    keeps_attention = ~reruns_core_attention(c.recompute)
    kept_out = ((saved != BF16) & ~np.asarray(c.fp8_attention, dtype=bool) & keeps_attention
                & (c.ulysses == 1) & (not hardware.efficiency.attention_unfused))
    stored = stored + np.where(kept_out, bf16_out, 0.0)
    # torch.compile's partitioner rebuilds some GEMM inputs in backward (cost.compiled_layers; the
    # traced layer recomputed nothing, so recomputing plans keep the eager count).
    delta = compiled_layer_delta_bytes(model, compiled, tokens=n, tp=c.tp, precision=c.precision, saved=saved)
    # At tp > 1 it keeps the forward's per-tensor FP8 weight shards too (cost.compiled_layers).
    weights = kept_fp8_weight_bytes(model, compiled, gathers, tp=c.tp, ep=c.ep, etp=c.etp, precision=c.precision,
                                    recompute=c.recompute, fp8_blockwise=c.fp8_blockwise)
    return stored + np.where(c.recompute == RECOMPUTE_NONE, delta, 0.0) + weights, working
