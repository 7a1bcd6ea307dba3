"""Mixture-of-experts layers under expert parallelism (vectorized over candidates).

Megatron-Core's MoE layer (megatron/core/transformer/moe/, token dispatcher 'alltoall', dropless,
the default capacity factor None): each rank routes its n/tp sequence-parallel tokens to top_k
experts, permutes them and sends each copy to the EP rank that holds its expert (all-to-all over
the ep group, layout.EXPERT_GRID_ORDER: stride etp); with etp > 1 the received tokens are
all-gathered over the etp group, each expert's FFN runs sharded over etp, and the outputs go back
by a reduce-scatter and the reverse all-to-all (combine). Backward runs the conjugates (combine
gradient = all-to-all, dispatch gradient = all-to-all; AG <-> RS). Per rank and MoE layer:
  token copies after dispatch:  n/tp * top_k * etp (on average; x the imbalance on the busiest rank)
  expert GEMM FLOPs:            the same as top_k dense MLPs on n/tp tokens (the etp shards cancel)
  weights:                      routed experts / (ep*etp), shared experts / tp, router replicated
                                (TopKRouter's weight is a plain parameter, not TP-sharded)
  gradients, optimizer:         routed experts reduced and sharded over edp = world/(pp*ep*etp)
                                (Megatron's expert-data-parallel group), the rest over dp x cp.

Load imbalance: with dropless routing the rank holding the busiest experts sets the pace of every
dispatch and expert GEMM. MOE_LOAD_IMBALANCE = 1.25 is an assumption, stated and not fitted: a
capacity factor in the range Switch Transformer trains with (Fedus et al. 2021, arXiv 2101.03961,
section 2.2: expert capacity = tokens/experts x capacity factor, factors 1.0-2.0 studied), read as
"the busiest EP rank receives 1.25 x the mean" under an auxiliary balance loss; MLPerf Training's
MoE reference (Mixtral-8x22B at 32K tokens) caps each expert at the same 1.25 x the mean,
"inspired by Switch Transformer" (mlcommons/training mixture_of_experts_pretraining/README.md,
capacity_factor=1.25), i.e. the load it expects the busiest expert to need. It applies only
when ep > 1 (with ep = 1 every rank computes its own tokens' experts). Low confidence; no
published per-rank measurement of training was found (NVIDIA's Megatron-Bridge MoE benchmarks
force balanced routing, moe_router_force_load_balancing = True in its perf recipes, so they
validate the balanced case, load 1.0).

Force-balanced routing (MoESpec.routing "balanced"; Megatron --moe-router-force-load-balancing,
router.py: random logits replace the learned ones, "only for benchmark"; torchtitan
debug.moe_force_load_balance: round-robin experts): every EP rank gets the mean, load 1.0 (random
logits leave a statistical excess of about 1/sqrt(copies per rank), under 1% at thousands of tokens).

Capacity factor F (Megatron --moe-expert-capacity-factor, moe_utils.apply_router_token_dropping):
each source rank keeps at most ceil(n x top_k / experts x F) tokens per expert and drops the
rest, so an EP rank receives at most F x the mean: the busiest rank's load is min(imbalance, F)
(min(1, F) at ep 1, where only drops change the work). With --moe-pad-expert-input-to-capacity
every expert gets exactly its capacity from every source (token_dispatcher: num_out_tokens =
capacity x experts): every rank sends, receives and computes F x the mean, ep 1 included.

The dispatcher's own data movement (Megatron-Core core_v0.15.0 token_dispatcher.py
MoEAlltoAllTokenDispatcher with moe_permute_fusion, which sp-plan emits: moe_utils.permute calls
Transformer Engine's moe_permute_with_probs, TE v2.9 transformer_engine/pytorch/triton/
permutation.py), per source token of one MoE layer, in hidden-size rows of the activation width:
  permute (dispatch_preprocess, lines 589-605): _permute_kernel loads the token's row once and
    stores it for each of its top_k experts: 1 + k.
  sort by local expert (dispatch_postprocess, 684-698; only with more than one local expert):
    sort_chunks_by_idxs reads and writes every received copy: 2 k etp x load (the copies the rank
    receives, after the etp all-gather; drop-and-pad's transpose().contiguous() alike).
  unsort (combine_preprocess, 713-735): the same, 2 k etp x load.
  unpermute (combine_postprocess, 793-800, without merging probs: the probs scale the expert
    activation): _unpermute_kernel loads the k copies and stores the token's row: k + 1.
Backward: each op's gradient is its mirror (unpermute's is a permute, sort's an unsort), the same
bytes. The probs (k floats a token) and the routing map are not counted. The flex dispatcher's
HybridEP backend permutes inside its dispatch and combine kernels (Megatron-LM _HybridEPManager:
"dispatch and permute tokens for experts in single step"): MoESpec.dispatcher "hybridep" moves
none of these bytes. Its dispatch and combine inside one NVLink domain on the profiles HybridEP
publishes figures for are timed from them (cost.hybridep: one row a token and receiving rank, at
its measured speed); elsewhere (H100 nodes, across NVLink domains) as the alltoall dispatcher's
NCCL all-to-all, its network part at the profile's ep_kernel_all_to_all (DeepEP's internode RDMA
rate) where the profile sets one, not NCCL's all_to_all (cost.links). The DeepEP backend
(MoESpec.dispatcher "deepep") times its dispatch and combine from DeepEP's benchmarks (cost.deepep)
and then permutes as Megatron's _DeepepManager does (token_dispatcher.py, d98e8a64, lines
1418-1468): the fused permute reads each received row (one a token and rank reached,
cost.hybridep.ranks_reached_per_token) and writes its copy for each local expert (top_k x load a
source token), the unpermute the reverse: 2 (r + k) rows a source token (cost.deepep),
without the alltoall dispatcher's sort by local expert (DeepEP's rows arrive by source rank, and
the permute writes them by expert).
Under FP8 and MXFP8, Megatron-Core's grouped MLP pads each local expert's rows to the quantization
alignment with whole-tensor copies on the alltoall dispatcher (cost.expert_padding), timed with the
permutations (permute_s).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.expert_padding import padding_bytes_per_token, router_pad_load
from sp_planner.cost.grouped_gemm import grouped_curve_times, grouped_gemm_efficiency_factor
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s
from sp_planner.cost.deepep import deepep_dispatch_s, deepep_permutation_rows, deepep_refusal
from sp_planner.cost.hybridep import hybridep_dispatch_s, hybridep_timed
from sp_planner.cost.links import all_to_all_time_s, ring_collective_time_s
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

MOE_LOAD_IMBALANCE = 1.25
# Dispatch + combine per MoE layer forward; the same two (as gradients) backward.
MOE_FORWARD_ALL_TO_ALLS, MOE_BACKWARD_ALL_TO_ALLS = 2, 2
MOE_ALL_TO_ALLS_PER_LAYER = MOE_FORWARD_ALL_TO_ALLS + MOE_BACKWARD_ALL_TO_ALLS
# With etp > 1: all-gather before the experts and reduce-scatter after, forward; conjugates backward.
ETP_FORWARD_COLLECTIVES, ETP_BACKWARD_COLLECTIVES = 2, 2
ROUTER_BYTES_PER_LOGIT = 4  # fp32 router logits (Megatron --moe-router-dtype fp32 as recommended)


def moe_layer_fraction(model: ModelSpec) -> float:
    """Share of layers that are MoE (the cost model works with per-layer averages)."""
    return model.num_moe_layers / model.num_layers


def router_imbalance(model: ModelSpec) -> float:
    """The busiest EP rank's dropless load over the mean at ep > 1: the assumed imbalance of a
    learned router, 1.0 when routing is force-balanced (module docstring)."""
    return 1.0 if model.moe is not None and model.moe.routing == "balanced" else MOE_LOAD_IMBALANCE


def busiest_rank_load(model: ModelSpec, ep, pad_load=0.0):
    """Token copies an EP rank dispatches, receives and computes, busiest rank over the mean of
    dropless routing (module docstring): the imbalance when ep > 1 (1 without expert
    parallelism, and 1 under force-balanced routing), capped at the capacity factor, or the
    capacity factor itself when padded; plus `pad_load`, the router's FP8 padding copies per
    routed copy (cost.expert_padding.router_pad_load), which travel and compute as routed ones."""
    moe = model.moe
    balanced = np.where(np.asarray(ep) > 1, router_imbalance(model), 1.0)
    if moe is None or moe.capacity_factor is None:
        return balanced + pad_load
    if moe.pad_to_capacity:
        return np.full_like(balanced, moe.capacity_factor) + pad_load
    return np.minimum(balanced, moe.capacity_factor) + pad_load


def mlp_layer_is_moe(model: ModelSpec) -> tuple[bool, ...]:
    """Which decoder layers have a MoE MLP: after the dense first layers, every layer_step-th
    (HF Llama4TextConfig moe_layers = range(step - 1, num_layers, step); specs.moe MoESpec)."""
    if model.moe is None:
        return (False,) * model.num_layers
    first, step = model.moe.first_dense_layers, model.moe.layer_step
    return tuple(i >= first and (i - first) % step == step - 1 for i in range(model.num_layers))


def routed_gemm_flops_per_token(model: ModelSpec) -> float:
    """Forward GEMM FLOPs of the routed experts one token passes through, averaged over layers."""
    if model.moe is None:
        return 0.0
    per_layer = 2 * model.num_mlp_matrices * model.hidden_size * model.moe.top_k * model.moe.moe_intermediate_size
    return moe_layer_fraction(model) * per_layer


def dispatch_bytes(model: ModelSpec, tokens_per_tp_rank, elem_bytes: int):
    """Bytes of the token copies one rank dispatches in one all-to-all (its own share included)."""
    if model.moe is None:
        return np.zeros_like(np.asarray(tokens_per_tp_rank, dtype=np.float64))
    return np.asarray(tokens_per_tp_rank, dtype=np.float64) * model.moe.top_k * model.hidden_size * elem_bytes


def rows_per_expert(model: ModelSpec, tokens_per_tp_rank, ep, etp, pad_load=0.0):
    """Token copies each local expert of the busiest EP rank computes per micro-batch: the rank's
    copies after dispatch (n/tp x top_k x etp x load, module docstring) over its num_experts/ep
    experts. This is the M of each group of the expert grouped GEMM (cost.grouped_gemm).
    `pad_load`: the router's padding copies per routed copy (cost.expert_padding.router_pad_load)."""
    if model.moe is None:
        return np.zeros_like(np.asarray(tokens_per_tp_rank, dtype=np.float64))
    load = busiest_rank_load(model, ep, pad_load)
    copies = np.asarray(tokens_per_tp_rank, dtype=np.float64) * model.moe.top_k * etp * load
    return copies / (model.moe.num_experts / np.asarray(ep, dtype=np.float64))


def permutation_bytes_per_token(model: ModelSpec, ep, etp, elem_bytes: int, pad_load=0.0):
    """HBM bytes the dispatcher's permutations move per source token of one MoE layer, forward
    (the backward moves the same), on the busiest rank (module docstring). `pad_load`: the router's
    padding copies per routed copy, permuted, sorted and unpermuted as routed ones
    (cost.expert_padding.router_pad_load)."""
    if model.moe is None:
        return np.zeros_like(np.asarray(ep, dtype=np.float64))
    k = model.moe.top_k * (1.0 + np.asarray(pad_load, dtype=np.float64))
    load = busiest_rank_load(model, ep, pad_load)
    if model.moe.dispatcher == "deepep":
        return deepep_permutation_rows(model, ep, k, load) * model.hidden_size * elem_bytes
    local = model.moe.num_experts / np.asarray(ep, dtype=np.float64)
    received = model.moe.top_k * np.asarray(etp, dtype=np.float64) * load
    rows = 2 * (k + 1) + np.where(local > 1, 4 * received, 0.0)
    return rows * model.hidden_size * elem_bytes


class MoETimes(NamedTuple):
    """Seconds per MoE-average layer and micro-batch on the busiest rank."""

    # The busiest rank's forward expert GEMMs beyond the mean at the flat GEMM efficiency (which
    # layer_gemm_flops_per_token already times), in seconds at the rate moe_times is given: its
    # load above the mean (< 0 if drops cut it) and, for a single-kernel grouped GEMM (or per-expert
    # GEMMs on a profile without an output-size table), the small-M slowdown (cost.grouped_gemm).
    extra_expert_gemm_fwd_s: np.ndarray
    all_to_all_s: np.ndarray  # one dispatch or combine
    etp_collective_s: np.ndarray  # one all-gather or reduce-scatter over etp
    # The dispatcher's permutations and the experts' quantization padding copies
    # (cost.expert_padding), forward (backward the same).
    permute_s: np.ndarray


def nccl_dispatch(model: ModelSpec) -> bool:
    """Whether NCCL's all-to-all moves the tokens: not under HybridEP or DeepEP, whose own kernels do
    (their speed by message size is not NCCL's measured curve, cost.collective_sizes)."""
    return model.moe is None or model.moe.dispatcher == "alltoall"


def moe_times(hardware: HardwareProfile, model: ModelSpec, *, tokens_per_tp_rank, ep, etp,
              ep_stride, elem_bytes: int, gpus_per_node: int, gemm_flops_per_s=None,
              pad_align_rows=0.0, router_pad_align_rows=0.0) -> MoETimes:
    """The model's dispatcher (MoESpec.dispatcher) decides the permutations: "alltoall" (Megatron's,
    fused) moves them, "hybridep" (inside its dispatch and combine kernels, cost.hybridep) does not
    (module docstring). `gemm_flops_per_s`: the expert GEMMs' sustained rate at the plan's precision
    (cost.precision.gemm_peak_flops: FP8 covers them as the dense GEMMs, Megatron/TE running the
    grouped expert GEMMs in FP8 under --fp8-format; torchtitan's converters leave them bf16,
    cost.tp_gathers.expert_precision); None: the bf16 rate. `pad_align_rows`: the rows each local
    expert's count is padded to by candidate (cost.expert_padding.align_rows; 0: no padding), copies
    that ride with the alltoall dispatcher's permutations (HybridEP pads in its kernels).
    `router_pad_align_rows`: the alignment the router pads each expert's count to instead
    (cost.expert_padding.padding_align_rows): its extra routed rows are dispatched, gathered,
    permuted and computed as routed copies, a load on every EP rank (router_pad_load)."""
    f = moe_layer_fraction(model) if model.moe is not None else 0.0
    refusal = deepep_refusal(hardware, model, gpus_per_node)
    if refusal is not None:
        raise ValueError(refusal)
    # Megatron pad_routing_map's rows ride every routed-copy term below (cost.expert_padding).
    pad_load = router_pad_load(model, tokens_per_tp_rank, router_pad_align_rows)
    load = busiest_rank_load(model, ep, pad_load)
    # The busiest rank's expert GEMMs take load / factor x the mean's time at the flat efficiency;
    # the factor is the grouped curve's where it times them, else 1 (per-expert GEMMs take their
    # shapes' ratios in cost.gemm_shapes; cost.grouped_gemm).
    rows = rows_per_expert(model, tokens_per_tp_rank, ep, etp, pad_load)
    factor = grouped_gemm_efficiency_factor(rows) if grouped_curve_times(model, hardware) else np.ones_like(rows)
    extra_flops = routed_gemm_flops_per_token(model) * tokens_per_tp_rank * (load / factor - 1.0)
    extra = gemm_time_s(hardware, extra_flops) if gemm_flops_per_s is None else extra_flops / gemm_flops_per_s
    copies = dispatch_bytes(model, tokens_per_tp_rank, elem_bytes) * load
    nccl = nccl_dispatch(model)
    # all_to_all_time_s takes the bytes sent to the other ep-1 ranks.
    a2a = f * all_to_all_time_s(hardware, copies * (ep - 1) / np.maximum(ep, 1), ep, ep_stride, gpus_per_node,
                                nccl=nccl)
    # HybridEP inside one NVLink domain, at its own measured speed (cost.hybridep).
    measured = hybridep_timed(hardware, model, ep, ep_stride, gpus_per_node)
    if measured.any():
        a2a = np.where(measured, f * hybridep_dispatch_s(
            hardware, model, tokens_per_tp_rank=tokens_per_tp_rank, load=load, ep=ep, ep_stride=ep_stride,
            gpus_per_node=gpus_per_node, elem_bytes=elem_bytes), a2a)
    if model.moe is not None and model.moe.dispatcher == "deepep":  # DeepEP's kernels (cost.deepep)
        a2a = f * deepep_dispatch_s(hardware, model, tokens_per_tp_rank=tokens_per_tp_rank, load=load, ep=ep,
                                    ep_stride=ep_stride, gpus_per_node=gpus_per_node, elem_bytes=elem_bytes)
    gathered = copies * (etp - 1)  # each rank sends its copies to the etp-1 others (ring AG)
    etp_s = f * ring_collective_time_s(hardware, "all_gather", gathered, etp, 1, gpus_per_node)
    moved = permutation_bytes_per_token(model, ep, etp, elem_bytes, pad_load) * tokens_per_tp_rank
    # Only the alltoall dispatcher (nccl) copies the padding: DeepEP's fused permute pads to the
    # alignment as it writes (Megatron permute(align_size=...), pad_offsets), HybridEP in its kernels.
    moved = moved + padding_bytes_per_token(model, tokens_per_tp_rank, ep, etp, pad_align_rows, load,
                                            elem_bytes) * tokens_per_tp_rank * nccl
    permuted = model.moe is not None and model.moe.dispatcher != "hybridep"
    permute = f * memory_pass_time_s(hardware, moved) * permuted
    return MoETimes(extra_expert_gemm_fwd_s=np.asarray(extra, dtype=np.float64), all_to_all_s=a2a,
                    etp_collective_s=etp_s, permute_s=np.asarray(permute, dtype=np.float64))
