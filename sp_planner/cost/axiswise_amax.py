"""Rowwise float8's amax all-reduces over the tensor-parallel group (torchtitan 0.3.x; vectorized).

torchao's rowwise recipe (v0.16.0 float8/config.py lines 334-350: every cast axiswise, the
backward's weight cast along the other axis) takes each amax along one dimension of a DTensor:
torch.amax(torch.abs(x), dim, keepdim=True) (float8_utils.py tensor_to_amax). Where that dimension
is the one TP shards, the result is a Partial(max) vector that DTensor all-reduces before the scale
multiplies the shard, as float64 (amax_to_scale's .to(torch.float64) keeps the pending reduction).
0.3.x runs plain TP styles (Replicate / Shard(-1) inputs, Shard(0) / Shard(1) weights), so per
TP-sharded linear:
- a column-parallel one (weight Shard(0)): its backward casts the output gradient for grad_input
  along the sharded output dim, a vector of the micro-batch's tokens, and the weight along the same
  dim, a vector of its input features (the hidden size: wq, wk, wv, w1, w3 all read h);
- a row-parallel one (weight Shard(1), input Shard(-1)): its forward casts the input along the
  sharded K, a vector of tokens, and the weight along K, a vector of its output features (h for wo
  and w2).
The other casts reduce along a whole dimension (tokens, or a weight's unsharded one) and all-reduce
nothing.

Traced (torch 2.13 min-cut partition of a compiled Llama block, torchao 0.16.0, a fake process
group, TP 2 and FSDP2 as torchtitan applies them; docs/cost-model.md stop 48): the joint graph holds
14 such all-reduces a layer, 7 of tokens x 8 bytes and 7 of h x 8 bytes. The partition runs 9 in
the forward: the 2 row-parallel inputs' and weights', and the 5 column-parallel weights' for
grad_input, which depend on the weight alone and which it moves ahead; the 5 column-parallel output
gradients' run in the backward. (It ran 3 of the weights' again in the backward, for the weights
torch 2.13 takes as parameters: cost.tp_gathers' remap_unwrapped_subclass_arg_indices note; not
priced.) Each is a collective on the compute stream's path: its cast waits for it (torch 2.13
_inductor/config.py line 402, reorder_for_compute_comm_overlap False by default), so it adds the
ring all-reduce time of its real size (cost.links.ring_collective_time_s, with the measured
small-message slowdown inside a node), not a few bytes' latency: Llama-3-8B at 8K tokens, a 64 KiB
tokens vector and a 32 KiB hidden one.

An MoE layer: the attention's block as above, the shared experts' block like an MLP (plain styles on
a replicated input, v0.2.2 models/llama4/infra/parallelize.py lines 538-549), the router (NoParallel)
and the bf16 routed experts nothing. Multi-latent attention is priced like the others (its
up-projections read the latents, not h: not traced; no torchtitan release sp-plan emits for runs
MLA at tp > 1).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.distinct import per_distinct
from sp_planner.plan import PRECISIONS
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

FP8 = PRECISIONS.index("fp8")
# The amax vector's dtype (float64, module docstring).
AMAX_BYTES_PER_ELEM = 8
# torchtitan's Attention keeps wq, wk, wv (column-parallel) and wo (row-parallel) apart (v0.2.2
# models/llama3/model/model.py lines 203-210); an MLP block has num_mlp_matrices - 1 column-parallel
# linears and one row-parallel (w2).
ATTENTION_COLUMN_LINEARS = 3


def column_linears_per_layer(model: ModelSpec) -> float:
    """Column-parallel linears of the average layer that TP shards: the attention's, and the MLP's
    on a dense layer or the shared experts' on an MoE layer (module docstring)."""
    mlp = model.num_mlp_matrices - 1
    if model.moe is None:
        return ATTENTION_COLUMN_LINEARS + mlp
    shared = model.moe.num_shared_experts > 0
    return ATTENTION_COLUMN_LINEARS + (1 - moe_layer_fraction(model)) * mlp + moe_layer_fraction(model) * (
        mlp if shared else 0)


def row_linears_per_layer(model: ModelSpec) -> float:
    """Row-parallel linears of the average layer that TP shards (wo; w2 where the MLP is TP-sharded)."""
    if model.moe is None:
        return 2.0
    shared = model.moe.num_shared_experts > 0
    return 1 + (1 - moe_layer_fraction(model)) + moe_layer_fraction(model) * (1 if shared else 0)


def axiswise_amax_reduction_s(model: ModelSpec, hardware: HardwareProfile, *, tokens, tp, precision,
                              gpus_per_node: int, gathers: TpGathers, fp8_blockwise=False):
    """(forward, backward) seconds per layer and micro-batch of rowwise float8's amax vector
    all-reduces over the TP group (stride 1; module docstring): forward, per row-parallel linear a
    tokens vector and an h vector and per column-parallel one an h vector; backward, per
    column-parallel one a tokens vector; `tokens`: the rank's micro-batch tokens (b x s / cp). 0
    unless per-tensor-scaled FP8 (not blockwise) at tp > 1 where the framework's linears scale
    rowwise on DTensors (gathers.reduces_axiswise_amaxes)."""
    tp = np.asarray(tp)
    on = ((np.asarray(precision) == FP8) & ~np.asarray(fp8_blockwise, dtype=bool) & (tp > 1)
          & gathers.reduces_axiswise_amaxes)
    shape = np.broadcast(on, np.asarray(tokens)).shape
    if not np.any(on):
        return np.zeros(shape), np.zeros(shape)

    def one_s(tp_, elems):
        """One all-reduce of `elems` float64 amaxes over the TP group."""
        sent = bus_factor("all_reduce", tp_) * AMAX_BYTES_PER_ELEM * elems
        return ring_collective_time_s(hardware, "all_reduce", sent, tp_, 1, gpus_per_node)

    def per_tp(elems):
        """one_s per candidate, once per distinct (tp, elems)."""
        columns = np.broadcast_arrays(np.atleast_1d(tp).astype(np.int64), np.rint(elems).astype(np.int64))
        return per_distinct(one_s, *columns)

    tokens_s = per_tp(np.broadcast_to(np.asarray(tokens, dtype=np.float64), shape))
    hidden_s = per_tp(np.full(shape, model.hidden_size))
    rows, cols = row_linears_per_layer(model), column_linears_per_layer(model)
    fwd = rows * (tokens_s + hidden_s) + cols * hidden_s
    bwd = cols * tokens_s
    return np.where(on, fwd, 0.0).reshape(shape), np.where(on, bwd, 0.0).reshape(shape)
