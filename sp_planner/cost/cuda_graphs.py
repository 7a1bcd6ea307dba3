"""CUDA graphs: which of a layer's host ops (cost.host) a stated graph scope replays as one launch.

A CUDA graph records a stretch of kernel launches once and replays them with one launch, so the
host pays the Python, dispatcher and launch cost of the recorded ops once, at capture, and then
one replay per use. Megatron-Core states what a run graphs with cuda_graph_impl and
cuda_graph_scope (megatron/core/transformer/transformer_config.py, core_r0.15.0 0d8e0714 as
pinned by Megatron-Bridge v0.2.0, lines 685-697 and the checks at 1529-1587):
  "attn": the layer's _forward_attention (input norm, QKV, RoPE, core attention, projection,
    residual add; transformer_layer.py 737-743).
  "mlp": a dense layer's _forward_mlp (pre-MLP norm, fc1, activation, fc2, residual add).
  "moe": a MoE layer's whole _forward_mlp; only with drop-and-pad MoE (line 1573), whose sizes
    are static: a dropless layer syncs the host, which a graph cannot hold.
  "moe_router": the pre-MLP norm and the router (and shared experts not overlapped with the
    dispatch, transformer_layer.py 748-754); the capture returns early after the router
    (moe_layer.py 180-188, moe_utils.py 1165-1201).
  "moe_preprocess" (only with moe_router, line 1553): also MoELayer.preprocess, the
    dispatcher's dispatch_preprocess: the token counts, the all-gather of the counts over tp x ep
    and the fused permute (token_dispatcher.py 600-653). Not with an all-to-all capped at a
    capacity (line 1580): its preprocess copies sizes to the host.
  "full_iteration" (cuda_graph_impl "full_iteration" in Megatron-Core cd4afffa, pinned by
    Megatron-Bridge v0.6.0 = NeMo 26.08: transformer_config.py 1032-1045): the forward and
    backward of every micro-batch as one graph per step (full_cuda_graph.py 138-241, replayed at
    line 241), the optimizer outside.
One graph per layer: TE's make_graphed_callables captures each layer's _te_cuda_graph_capture,
which runs every scoped part of that layer (transformer_layer.py 757-792), and replays it with
_te_cuda_graph_replay (794-878), running the unscoped parts eagerly around it; the graph's
backward is a second graph replayed by the same autograd function (TransformerEngine v2.9
70f53666, pytorch/graph.py 637-676: Graphed.forward/backward each copy new inputs into the
static buffers and call replay()).

Host cost of a replay (GRAPH_REPLAY_OPS): no published per-replay CPU time was found for TE's
graphed callables; a replay is one autograd-function call ending in one cudaGraphLaunch, the same
shape as the one-module-one-launch torch.nn.Linear call that sets cost.host's per-op time, so it
is counted as one op per direction. The copies of new inputs into the static buffers
(graph.py 650-655, 669-674) are kernels too and are not counted (an undercount of one or two ops
per replay).

The dropless dispatcher's sync survives moe_preprocess graphs: a graph cannot capture a
device-to-host copy the host waits on, so with moe_preprocess graphed Megatron moves the
dispatcher's D2H copies of the counts and splits from "before_permutation_1" (inside
dispatch_preprocess) to "before_ep_alltoall" (token_dispatcher.py 445-451), i.e. into
token_dispatch, outside the graph, just before the host waits on them (line 671, the
d2h_event.synchronize() at 907); the graph returns the split tensors as outputs
(cudagraph_attrs, 457-465; set back on the dispatcher by transformer_layer.py 843-855). The
HybridEP (flex) dispatcher of the GB200 recipes syncs likewise when dropless (token_dispatcher.py
990-997: "no up-bound ... will cause a CPU sync"; fused_a2a.py 361 use_host_meta). So each MoE
layer forward still syncs once: the graph shortens the host stretch before the sync, it does not
remove it. Only a full-iteration graph, which holds no sync at all, does; Megatron-Bridge's 26.08
MXFP8 recipes pair it with HybridEP's per-rank token budget (moe_expert_rank_capacity_factor,
transformer_config.py cd4afffa 977-982) and the paged stash, which size every buffer statically.

Op parts (the layer counts of cost.host's docstring, split by module):
  attention, forward 5: norm + QKV, core attention and its layout copy (2), projection, residual
    add; +1 under FP8 (the projection input's quantize); half the TP collectives of the layer (an
    all-gather and a reduce-scatter forward).
  attention, backward 10: QKV and projection dgrad and wgrad (4), attention backward (3), the
    input norm and its residual-gradient add (2), one gradient accumulation; +2 under FP8
    (quantize the two GEMMs' output gradients); half the TP collectives.
  RoPE on q and k (2 + 2 on its RoPE layers, cost.rope) and the QK norm (cost.qk_norm) are the
    attention part's too where the model has them (cost.host).
  The rest of the dense layer is its MLP part ("mlp").
  router, forward 11: the pre-MLP norm and the router's 10; backward 7: router GEMM dgrad and
    wgrad (2), top-k and aux-loss backward (4), the norm; plus shared experts (3 forward, 5
    backward) when the model has them (Megatron's default moe_shared_expert_overlap False).
  preprocess, forward 11: the dispatcher preprocess (7) and the fused permute (4); backward 2:
    the permute's backward (tokens and probs).
"""

from __future__ import annotations

from sp_planner.specs.model import ModelSpec

ATTN, MLP, MOE, MOE_ROUTER, MOE_PREPROCESS, FULL_ITERATION = (
    "attn", "mlp", "moe", "moe_router", "moe_preprocess", "full_iteration")
GRAPH_SCOPES: tuple[str, ...] = (ATTN, MLP, MOE, MOE_ROUTER, MOE_PREPROCESS, FULL_ITERATION)
NO_GRAPHS: frozenset[str] = frozenset()  # eager: what sp-plan assumes (it emits no graph flags)

# Host ops of each graphable part per layer and micro-batch (module docstring).
ATTENTION_FORWARD_OPS, ATTENTION_BACKWARD_OPS = 5, 10  # RoPE's are cost.rope rope_host_ops'
ATTENTION_FP8_FORWARD_OPS, ATTENTION_FP8_BACKWARD_OPS = 1, 2
ROUTER_FORWARD_OPS, ROUTER_BACKWARD_OPS = 11, 7
PREPROCESS_FORWARD_OPS, PREPROCESS_BACKWARD_OPS = 11, 2
# One replay per graph and direction (module docstring).
GRAPH_REPLAY_OPS = 1


def check_graph_scopes(model: ModelSpec, scopes: frozenset[str]) -> None:
    """Raise ValueError for scopes Megatron-Core refuses for this model (module docstring)."""
    unknown = sorted(set(scopes) - set(GRAPH_SCOPES))
    if unknown:
        raise ValueError(f"unknown CUDA graph scope {', '.join(unknown)}; use {', '.join(GRAPH_SCOPES)}")
    if FULL_ITERATION in scopes and len(scopes) > 1:
        raise ValueError("full_iteration graphs the whole step: it takes no other scope")
    if MOE in scopes and MOE_ROUTER in scopes:
        raise ValueError("CUDA graph scopes moe and moe_router exclude each other")
    if MOE_PREPROCESS in scopes and MOE_ROUTER not in scopes:
        raise ValueError("the moe_preprocess CUDA graph needs moe_router")
    moe = model.moe
    if (MOE in scopes or MOE_ROUTER in scopes) and (moe is None or model.num_moe_layers == 0):
        raise ValueError(f"moe and moe_router CUDA graphs need MoE layers, and {model.name} has none")
    if MLP in scopes and model.num_moe_layers == model.num_layers:
        raise ValueError(f"the mlp CUDA graph is for dense layers, and every layer of {model.name} is MoE")
    if moe is None:  # the checks below are about MoE layers
        return
    if MOE in scopes and not moe.pad_to_capacity:
        raise ValueError("the moe CUDA graph needs MoE padded to capacity (a dropless layer syncs the host)")
    if MOE_PREPROCESS in scopes and moe.capacity_factor is not None and not moe.pad_to_capacity:
        raise ValueError("the moe_preprocess CUDA graph cannot hold a capped dispatch's host copies")
