"""Host (CPU) time of eager PyTorch, and the part of it the GPU work does not hide (vectorized).

Eager PyTorch issues every kernel from the CPU: Python, the dispatcher and autograd, then the
launch. The CPU runs ahead of the GPU while kernels queue, so the host time costs nothing as long
as the GPU work it issues takes longer; when it does not, the GPU idles.

Per-op host time (HOST_S_PER_OP): NVIDIA/TransformerEngine issue #2053 ("[PyTorch] High CPU
overhead on Grace systems", 2025-08-11), a benchmark of one Linear forward (BF16, hidden 2048,
8192 tokens), CPU time per call: torch.nn.Linear 13.48 us on a DGX H100 (Intel Xeon Platinum
8480C) and 37.08 us on GB200 (Grace); te.Linear 99.66 us on GB200. One nn.Linear forward is one
module call launching one GEMM, so its CPU time is taken as the host time of one op: 13.48 us on
the x86 hosts of the DGX profiles, 37.08 us on Grace (GB200, and GB300 on the same Grace CPUs).
A stated point, not a range: it overstates plain aten calls without a module (PyTorch issue
#41383, a maintainer: an elementwise op on a CPU tensor takes about 2 us from Python, half of it
Python) and understates TE modules (te.Linear is 2.7 x nn.Linear on GB200 in the same table),
which the count below takes as one op per launch; cost.te_host adds TE's module overhead per
call where it was measured (Grace).

Ops per layer and micro-batch (kernel launches, collectives and device-to-host copies issued by
the host), counted by hand from Megatron-Core core_v0.15.0 (0d7e02bd) with the TE spec
(megatron/core/transformer/transformer_layer.py, attention.py, mlp.py, moe/moe_layer.py,
moe/router.py, moe/token_dispatcher.py, moe/experts.py TEGroupedMLP) and TransformerEngine v2.9
(70f53666; pytorch/module/grouped_linear.py, common/gemm/cublaslt_gemm.cu), fusions on (RoPE,
SwiGLU, bias-dropout-add, gradient-accumulation, router, permute), TP 1:
  dense forward, 10: norm + QKV GEMM (LayerNormLinear), core attention and its layout copy (2),
    projection GEMM, residual add, norm + fc1 GEMM (2), SwiGLU, fc2 GEMM, residual add.
  dense backward, 18: dgrad and wgrad of the four GEMMs (8), SwiGLU, two norms and their
    residual-gradient adds (4), attention backward (3: the dot(dO, O) pre-pass, the kernel, the
    dQ conversion), two gradient accumulations.
  RoPE (fused) on q and k: +2 forward, +2 backward on each layer that rotates (cost.rope
    rope_host_ops), in the attention part: none without rotary embeddings (learned absolute
    positions, ALiBi, none: ModelSpec.position_embedding), nor on a rope model's NoPE layers
    (Llama 4's every 4th): the mean layer makes 2 x its RoPE layers' share.
  FP8/MXFP8: +2 forward (quantize the projection's and fc2's inputs; the norm fuses the cast of
    the others) and +4 backward (quantize each GEMM's output gradient); weights are quantized
    once per step (is_first_microbatch), not counted.
  FP8 current scaling (tensorwise) launches 2 more per quantized tensor: TE v2.9 csrc/quantizer.cpp
    Float8CurrentScalingQuantizer::quantize_impl runs nvte_compute_amax and
    nvte_compute_scale_from_amax before nvte_quantize_v2, and a norm-fused input becomes the norm
    (with its amax, csrc/extensions/normalization.cpp FUSED_NORM_AMAX_FP8) then scale and cast. So
    +2 x 4 forward (QKV, projection, FC1 and FC2 inputs) and +2 x 4 backward (their output
    gradients) on a dense layer, the attention's half of each on an MoE layer (plus the shared
    experts' half); at tp > 1 each amax all-reduce (cost.amax_reduce) is one more. The experts'
    split quantization (tex.split_quantize) under current scaling is not counted (not read).
  MoE layer instead of the dense MLP, +32 forward (36 ops replace the MLP's 4): norm, router
    (fp32 cast, GEMM, fused top-k and score, aux-loss scores, tokens per expert, fused aux loss,
    its scaler and tracker: 10), dispatcher preprocess (sums and slices of the routing map and the
    all-gather of the counts over tp x ep: 7), the device-to-host copies of the counts and their
    stream event (6), fused permute (4), two dispatch all-to-alls (tokens, probs), fused sort by
    local expert (2), SwiGLU with the routing probs, unsort, the combine all-to-all, fused
    unpermute; +13 backward (19 replace the MLP's 6): router GEMM dgrad and wgrad, top-k and
    aux-loss backward (4), permute and unpermute backward (4), the four all-to-alls' gradients
    and the probs' (5), sort and unsort (2), SwiGLU, norm.
  Each local expert (num_experts / ep): TE GroupedLinear runs one cuBLAS GEMM per expert
    (multi_stream_cublas_gemm loops over num_gemms; the CUTLASS grouped GEMM is Hopper-only and
    opt-in, NVTE_USE_CUTLASS_GROUPED_GEMM) inside one module call: fc1 and fc2, 2 forward and 4
    backward (dgrad, wgrad); FP8 adds a quantize per expert input (tex.split_quantize), 2 forward
    and 2 backward. These launches come from that C++ loop, without a Python module call each as in
    the nn.Linear benchmark, so the per-op time overstates them (no published per-launch figure
    for that loop was found). Megatron's legacy GroupedMLP
    (grouped_gemm package) is not counted. Experts run as one grouped kernel (MoESpec.expert_gemm
    grouped: torch._grouped_mm, the CuTe-DSL fused grouped MLP; cost.grouped_gemm) launch these
    once for every local expert, as one expert would.
  Shared experts: one more MLP, +3 forward (fc1, SwiGLU, fc2), +5 backward.
  TP > 1: each TP collective of the layer is one more op (cost.tp_calls: none of the saved inputs'
    backward gathers where the framework keeps them gathered, torchtitan), etp > 1 likewise (cost.moe).
  QK norm (models with one): +3 forward, +2 backward, in the attention part (cost.qk_norm).
  DeepSeek Sparse Attention (models with one): the indexer's, top-k's and sparse MLA's ops in
    place of the core attention's kernel, in the attention part (cost.dsa_host; DeepSeek-V3.2 at
    32K, b 1, tp 8: +91 forward, +11 backward); its indexer trained with the sparse KL loss, the
    loss path and the indexer's backward on top (cost.dsa_loss_host; there +642, +269).
  TE's unfused attention under GQA: repeat_interleave's copy of K and of V, +2 forward, and
    expand's reduction of their gradients, +2 backward (TransformerEngine d0067d0
    pytorch/attention/dot_product_attention/backends.py lines 540-549; cost.unfused_gqa), in the
    attention part. The unfused path's own ops (get_full_mask's 10, baddbmm, softmax, dropout,
    bmm, the output copy, and their backward) in place of the flash kernel's calls: +13 forward,
    +4 backward below 16384 keys, +17 and +7 from there (TE's torch softmax), +1 each way with
    attention dropout (cost.unfused_host), in the attention part.
  Not counted: the logits and loss (a few ops behind the largest GEMM of the step), the
  optimizer (multi-tensor kernels once per step), recompute of selected modules (full recompute
  re-issues the forward in the backward and is counted).
  CUDA graphs, where a run states them (`cuda_graphs`, default none: sp-plan emits no graph
  flags): each layer's graphed parts (attention, dense MLP, router, dispatcher preprocess, whole
  MoE) cost one replay instead of their ops, forward and backward; a full-iteration graph leaves
  no per-layer host ops and no sync (cost.cuda_graphs, with sources).

Timing rule. Within a stretch of work free of host syncs the CPU runs ahead and the GPU is busy
for max(host, GPU) seconds: the exposed host time is max(0, host - GPU). A sync drains the queue:
the host waits for the GPU, so host time after it cannot hide behind GPU work issued before it,
and each stretch between syncs pays its own max. Megatron's dropless all-to-all dispatcher syncs
once per MoE layer forward: token_dispatcher.py (core_v0.15.0) copies tokens_per_expert and the
all-to-all splits to the CPU on a side stream (maybe_move_tensor_to_cpu, line 836, at
cuda_dtoh_point "before_permutation_1") and waits on that copy (self.d2h_event.synchronize(), line
859) at cuda_sync_point "before_ep_alltoall" (line 524, ep > 1) or "before_finish" (ep 1), since
the all-to-all and the grouped GEMM take their split sizes as host integers. The backward reuses
them (no sync). Padded to capacity (drop_and_pad) the sizes are static and nothing syncs. Graphs
of the router and preprocess keep the sync (the copies move out of the graph, cost.cuda_graphs);
a full-iteration graph has none. HybridEP without a token budget syncs likewise, reading the
received-token count inside its dispatch before sizing the output (Megatron-LM b1c2006cf
fused_a2a.py lines 636-656; token_dispatcher.py lines 1174-1175, 1237-1240). A sync drains the GPU
queue, so the GPU idles until the host issues the next kernel: in every dispatcher the dispatch
itself (the all-to-all right after the wait at "before_ep_alltoall", token_dispatcher.py lines
731-740 at b1c2006cf; HybridEP's and DeepEP's dispatch kernels), a long one behind which the host
runs ahead again, so OPS_AFTER_SYNC = 1 op (h_s) is exposed a sync however GPU-bound the layer
(the thread's wake-up not counted). Hence,
per micro-batch on the pacing stage with L layers, per-layer host times h_f, h_b and GPU times
g_f, g_b (fwd, bwd), the logits' GPU time g_o and the host time h_s of the op after a sync:
  no sync:  exposed = max(0, L (h_f + h_b) - (L (g_f + g_b) + g_o))
  MoE sync: exposed = L max(h_s, h_f - g_f) + max(0, L h_b - (L g_b + g_o))
            (the forward in stretches of one layer; the backward one stretch, or L max(h_s,
            h_b - g_b) under full recompute, whose recomputed forward syncs again).
(Qwen3-30B-A3B, 32 H100s, ep 8, 4K, micro batch 1: 79 forward ops, 1.06 ms, against ~2 ms of GPU a
layer: max(0, h_f - g_f) exposed nothing, h_s 48 x 8 x 13.48 us = 5.2 ms a step.)
The layer is the model's average layer (MoE ops x the share of MoE layers), as elsewhere in the
cost model. The pipeline bubble is timed from GPU work only, so host time that stretches the
other stages' micro-batches is not in it.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.amax_reduce import REDUCTIONS_PER_PAIR
from sp_planner.cost.tp_calls import (
    TP_BACKWARD_REDUCE_SCATTERS,
    TP_FORWARD_ALL_GATHERS,
    TP_FORWARD_REDUCE_SCATTERS,
    tp_backward_all_gathers,
)
from sp_planner.cost.moe import ETP_BACKWARD_COLLECTIVES, ETP_FORWARD_COLLECTIVES, moe_layer_fraction
from sp_planner.cost.cuda_graphs import (
    ATTENTION_BACKWARD_OPS,
    ATTENTION_FORWARD_OPS,
    ATTENTION_FP8_BACKWARD_OPS,
    ATTENTION_FP8_FORWARD_OPS,
    ATTN,
    FULL_ITERATION,
    GRAPH_REPLAY_OPS,
    MLP,
    MOE,
    MOE_PREPROCESS,
    MOE_ROUTER,
    NO_GRAPHS,
    PREPROCESS_BACKWARD_OPS,
    PREPROCESS_FORWARD_OPS,
    ROUTER_BACKWARD_OPS,
    ROUTER_FORWARD_OPS,
)
from sp_planner.cost.families import GRACE_PROFILES, profile_key
from sp_planner.cost.qk_norm import qk_norm_host_ops
from sp_planner.cost.ring_impl import RingImpl
from sp_planner.cost.rope import rope_host_ops
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# CPU seconds of one torch.nn.Linear forward (one module call, one GEMM launch), TE issue #2053.
HOST_S_PER_OP_X86 = 13.48e-6  # DGX H100, Intel Xeon Platinum 8480C
HOST_S_PER_OP_GRACE = 37.08e-6  # GB200, Grace
# Built-in profiles whose hosts are Grace CPUs (cost.families GRACE_PROFILES: GB200 and GB300 NVL72,
# the same Grace CPUs, so GB200's figure applies); every other one is an x86 host.

# Host ops per layer and micro-batch, Megatron-Core + TE (module docstring).
DENSE_FORWARD_OPS, DENSE_BACKWARD_OPS = 10, 18  # RoPE's are rope_host_ops'
FP8_FORWARD_OPS, FP8_BACKWARD_OPS = 2, 4
MOE_FORWARD_OPS, MOE_BACKWARD_OPS = 32, 13
EXPERT_FORWARD_OPS, EXPERT_BACKWARD_OPS = 2, 4  # per local expert: fc1 and fc2 GEMMs
EXPERT_FP8_FORWARD_OPS, EXPERT_FP8_BACKWARD_OPS = 2, 2  # per local expert: quantize the inputs
SHARED_EXPERT_FORWARD_OPS, SHARED_EXPERT_BACKWARD_OPS = 3, 5
# Host ops between a per-layer sync's return and the next kernel, the dispatch (module docstring).
OPS_AFTER_SYNC = 1
# FP8 current scaling: the amax and scale kernels of each quantized tensor, two tensors per GEMM
# pair each way (QKV and projection; FC1 and FC2) (module docstring).
CURRENT_SCALING_OPS_PER_CAST = 2
CURRENT_SCALING_CASTS_PER_PAIR = 2


def host_s_per_op(hardware: HardwareProfile) -> float:
    """Host seconds of one eager op on the profile's host CPU (module docstring)."""
    return HOST_S_PER_OP_GRACE if profile_key(hardware) in GRACE_PROFILES else HOST_S_PER_OP_X86


def current_scaling_pair_ops(tp, fp8_current):
    """Host ops FP8 current scaling adds to one GEMM pair (QKV and projection, or FC1 and FC2), each
    way: the amax and scale kernels of its two quantized tensors and, at tp > 1, its one amax
    all-reduce (module docstring); 0 where `fp8_current` is False."""
    per_pair = (CURRENT_SCALING_CASTS_PER_PAIR * CURRENT_SCALING_OPS_PER_CAST
                + REDUCTIONS_PER_PAIR * (np.asarray(tp) > 1))
    return np.where(np.asarray(fp8_current, dtype=bool), per_pair, 0)


def layer_host_ops(model: ModelSpec, *, tp, ep, etp, low_precision, full_recompute,
                   cuda_graphs: frozenset[str] = NO_GRAPHS, ring_ops=(0, 0), fp8_current=False,
                   sequence_parallel: bool = True, regathers_saved_inputs: bool = True, dsa_ops=(0, 0),
                   gqa_ops=(0, 0), unfused_ops=(0, 0)):
    """(forward, backward) host ops of the model's average layer per micro-batch, per candidate;
    `cuda_graphs`: the scopes the run graphs (cost.cuda_graphs), each layer's graphed parts
    costing one replay per direction instead of their ops; `fp8_current`: FP8 with current
    scaling (plan.fp8_recipe tensorwise; only where `low_precision`); `sequence_parallel` False:
    TP's two all-reduces each way, one call each (cost.tp_calls); `regathers_saved_inputs` False
    (TpGathers.regathers_saved_inputs: torchtitan): no backward all-gathers of the saved inputs;
    `dsa_ops`: a DSA layer's (forward, backward) ops beyond the dense count (cost.dsa_host);
    `gqa_ops`: the unfused attention's K/V expansion's (cost.unfused_gqa.gqa_host_ops);
    `unfused_ops`: its own ops beyond the flash kernel's (cost.unfused_host.unfused_host_ops)."""
    low = np.asarray(low_precision, dtype=bool)
    pair = current_scaling_pair_ops(tp, low & np.asarray(fp8_current, dtype=bool))
    zero = np.zeros(np.broadcast(np.asarray(tp), low, np.asarray(ep), np.asarray(etp)).shape)
    if FULL_ITERATION in cuda_graphs:
        return zero, zero  # one replay per step, not per layer
    tp_split = np.asarray(tp) > 1
    if sequence_parallel:
        tp_fwd = np.where(tp_split, TP_FORWARD_ALL_GATHERS + TP_FORWARD_REDUCE_SCATTERS, 0)
        tp_bwd = np.where(tp_split, tp_backward_all_gathers(True, regathers_saved_inputs)
                          + TP_BACKWARD_REDUCE_SCATTERS, 0)
    else:  # an all-reduce per reduce-scatter and gather pair
        tp_fwd = np.where(tp_split, TP_FORWARD_REDUCE_SCATTERS, 0)
        tp_bwd = np.where(tp_split, TP_BACKWARD_REDUCE_SCATTERS, 0)
    fwd = DENSE_FORWARD_OPS + np.where(low, FP8_FORWARD_OPS, 0) + tp_fwd + 2 * pair
    bwd = DENSE_BACKWARD_OPS + np.where(low, FP8_BACKWARD_OPS, 0) + tp_bwd + 2 * pair
    # The attention part (cost.cuda_graphs) and the rest, the dense MLP part.
    attn_fwd = ATTENTION_FORWARD_OPS + np.where(low, ATTENTION_FP8_FORWARD_OPS, 0) + tp_fwd / 2 + pair
    attn_bwd = ATTENTION_BACKWARD_OPS + np.where(low, ATTENTION_FP8_BACKWARD_OPS, 0) + tp_bwd / 2 + pair
    # The ring's later steps (ring_host_ops), the QK norm (cost.qk_norm), RoPE (the mean layer's
    # share of its RoPE layers' launches, cost.rope), DSA (cost.dsa_host) and the unfused attention
    # (cost.unfused_host) with its GQA K/V expansion (cost.unfused_gqa), part of the attention a
    # graph of it captures.
    qk_fwd, qk_bwd = qk_norm_host_ops(model)
    rope_fwd, rope_bwd = rope_host_ops(model)
    own_fwd = qk_fwd + rope_fwd + dsa_ops[0] + gqa_ops[0] + unfused_ops[0]
    own_bwd = qk_bwd + rope_bwd + dsa_ops[1] + gqa_ops[1] + unfused_ops[1]
    fwd, bwd = fwd + ring_ops[0] + own_fwd, bwd + ring_ops[1] + own_bwd
    attn_fwd, attn_bwd = attn_fwd + ring_ops[0] + own_fwd, attn_bwd + ring_ops[1] + own_bwd
    attn = ATTN in cuda_graphs
    # Graphed ops (fwd, bwd) and whether a graph replays, per dense layer.
    dense_mlp = MLP in cuda_graphs
    graphed_fwd: np.ndarray | float = (attn_fwd if attn else 0) + (fwd - attn_fwd if dense_mlp else 0)
    graphed_bwd: np.ndarray | float = (attn_bwd if attn else 0) + (bwd - attn_bwd if dense_mlp else 0)
    replays: float = float(GRAPH_REPLAY_OPS * (attn or dense_mlp))
    if model.moe is not None:
        # Launches per GEMM: one per local expert, or one for them all (module docstring).
        local = model.moe.num_experts / np.asarray(ep) if model.moe.expert_gemm == "per_expert" else 1.0
        shared = model.moe.num_shared_experts > 0
        moe_fwd = (MOE_FORWARD_OPS + local * (EXPERT_FORWARD_OPS + np.where(low, EXPERT_FP8_FORWARD_OPS, 0))
                   + np.where(np.asarray(etp) > 1, ETP_FORWARD_COLLECTIVES, 0)
                   + (SHARED_EXPERT_FORWARD_OPS if shared else 0))
        moe_bwd = (MOE_BACKWARD_OPS + local * (EXPERT_BACKWARD_OPS + np.where(low, EXPERT_FP8_BACKWARD_OPS, 0))
                   + np.where(np.asarray(etp) > 1, ETP_BACKWARD_COLLECTIVES, 0)
                   + (SHARED_EXPERT_BACKWARD_OPS if shared else 0))
        # Current scaling's MLP pair is the shared experts' on an MoE layer, none without them.
        shared_pair = pair if shared else 0
        moe_fwd, moe_bwd = moe_fwd - pair + shared_pair, moe_bwd - pair + shared_pair
        # A MoE layer's graphed ops: the whole MLP side under "moe", else the router (with the
        # shared experts) and the dispatcher preprocess.
        router = MOE_ROUTER in cuda_graphs
        moe_graphed_fwd = (attn_fwd if attn else 0) + (
            fwd - attn_fwd + moe_fwd if MOE in cuda_graphs else
            (ROUTER_FORWARD_OPS + (SHARED_EXPERT_FORWARD_OPS + shared_pair if shared else 0) if router else 0)
            + (PREPROCESS_FORWARD_OPS if MOE_PREPROCESS in cuda_graphs else 0))
        moe_graphed_bwd = (attn_bwd if attn else 0) + (
            bwd - attn_bwd + moe_bwd if MOE in cuda_graphs else
            (ROUTER_BACKWARD_OPS + (SHARED_EXPERT_BACKWARD_OPS + shared_pair if shared else 0) if router else 0)
            + (PREPROCESS_BACKWARD_OPS if MOE_PREPROCESS in cuda_graphs else 0))
        moe_replays = GRAPH_REPLAY_OPS * (attn or router or MOE in cuda_graphs)
        share = moe_layer_fraction(model)
        graphed_fwd = (1 - share) * graphed_fwd + share * moe_graphed_fwd
        graphed_bwd = (1 - share) * graphed_bwd + share * moe_graphed_bwd
        replays = (1 - share) * replays + share * moe_replays
        fwd = fwd + share * moe_fwd
        bwd = bwd + share * moe_bwd
    fwd = fwd - graphed_fwd + replays + zero
    bwd = bwd - graphed_bwd + replays + zero
    bwd = bwd + np.where(full_recompute, fwd, 0)
    return fwd, bwd


def ring_host_ops(ring_impl: RingImpl, *, ring, allgather):
    """(forward, backward) host ops the ring's steps after the first add to a layer
    (cost.ring_impl): none under all-gather CP, which calls its kernels once per layer."""
    later = np.where(np.asarray(allgather, dtype=bool), 0, np.maximum(np.asarray(ring) - 1, 0))
    return later * ring_impl.host_ops_per_step_fwd, later * ring_impl.host_ops_per_step_bwd


def host_syncs_per_layer(model: ModelSpec, cuda_graphs: frozenset[str] = NO_GRAPHS) -> bool:
    """Whether the MoE layers sync the host each forward: dropless or capped all-to-all dispatch
    (padded to capacity, the split sizes are static and nothing syncs; a full-iteration graph
    holds no sync, per-layer graphs keep it: cost.cuda_graphs)."""
    return (model.moe is not None and model.num_moe_layers > 0 and not model.moe.pad_to_capacity
            and FULL_ITERATION not in cuda_graphs)


def exposed_host_s(*, host_fwd_s, host_bwd_s, gpu_fwd_s, gpu_bwd_s, layers, logits_s, syncs: bool,
                   full_recompute, after_sync_s=0.0):
    """Host seconds per micro-batch the GPU work does not hide (module docstring's timing rule);
    per-layer times, `layers` on the pacing stage, `logits_s` its logits' GPU time, `after_sync_s`
    the host time from a sync's return to the next kernel's launch."""
    fwd, bwd = exposed_host_parts_s(host_fwd_s=host_fwd_s, host_bwd_s=host_bwd_s, gpu_fwd_s=gpu_fwd_s,
                                    gpu_bwd_s=gpu_bwd_s, layers=layers, logits_s=logits_s, syncs=syncs,
                                    full_recompute=full_recompute, after_sync_s=after_sync_s)
    return fwd + bwd


def exposed_host_parts_s(*, host_fwd_s, host_bwd_s, gpu_fwd_s, gpu_bwd_s, layers, logits_s, syncs: bool,
                         full_recompute, after_sync_s=0.0):
    """exposed_host_s as (forward, backward) seconds per micro-batch: the stalls that lengthen each
    pass beyond its GPU work. Without a host sync the CPU runs ahead across the passes, so the one
    exposed total is shared out in proportion to each pass's host time. With one, each synced
    stretch exposes at least `after_sync_s`, the GPU idling from the sync until the host issues
    the next kernel (module docstring)."""
    if not syncs:
        total = np.maximum(0.0, layers * (host_fwd_s + host_bwd_s - gpu_fwd_s - gpu_bwd_s) - logits_s)
        host = np.asarray(host_fwd_s + host_bwd_s, dtype=np.float64)
        share = np.divide(host_fwd_s, host, out=np.zeros(np.broadcast(host, total).shape), where=host > 0)
        return total * share, total * (1 - share)
    fwd = layers * np.maximum(after_sync_s, host_fwd_s - gpu_fwd_s)
    bwd = np.where(full_recompute, layers * np.maximum(after_sync_s, host_bwd_s - gpu_bwd_s),
                   np.maximum(0.0, layers * (host_bwd_s - gpu_bwd_s) - logits_s))
    return fwd, bwd
