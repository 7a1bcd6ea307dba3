"""A pipeline stage's parameter tensors on one rank, in backprop order: what cost.buckets walks
into Megatron's gradient buckets and FSDP's units.

A layer's tensors on one rank, in backprop order: linear_fc2, linear_fc1 (with the fused pre-MLP
norm), linear_qkv (with the fused input norm), linear_proj (attention.py builds linear_proj in
Attention.__init__ before SelfAttention adds linear_qkv); the stage's embedding is walked last
and, on a single stage, the output layer and final norm first.
"""

from __future__ import annotations

from functools import lru_cache

from sp_planner.cost.mtp import mtp_params_model
from sp_planner.cost.params import layer_params_per_rank
from sp_planner.cost.layer_kinds import LayerKind, kind_model
from sp_planner.cost.moe_params import expert_params_per_rank, mean_mlp_params_per_rank
from sp_planner.specs.model import ModelSpec


@lru_cache(maxsize=1024)
def layer_tensors(model: ModelSpec, tp: int, ep: int = 1, etp: int = 1) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(dense, expert) tensors of one (layer-averaged) layer on one rank, in backprop order."""
    h = model.hidden_size
    total = float(layer_params_per_rank(model, tp, ep, etp))
    experts = float(expert_params_per_rank(model, 1, ep, etp, layers=1))
    proj = h * model.q_size / tp
    # MLP without the routed experts (MoE: shared experts, router and dense layers, averaged).
    mlp = float(mean_mlp_params_per_rank(model, tp, ep, etp)) - experts
    norms = model.norm_params_per_layer
    attn = total - experts - mlp - norms
    mats = model.num_mlp_matrices
    fc2 = mlp / mats
    dense = (fc2, mlp - fc2 + norms / 2, attn - proj + norms / 2, proj)
    expert_fc2 = experts / mats
    expert = (expert_fc2, experts - expert_fc2) if experts > 0 else ()
    return tuple(t for t in dense if t > 0), expert


Layers = tuple[tuple[float, ...], ...]  # each layer's tensors on one rank, layers in forward order


@lru_cache(maxsize=4096)
def stage_tensors(model: ModelSpec, tp: int, ep: int, etp: int, layers: int, moe: tuple[bool, ...] | None
                  ) -> tuple[Layers, Layers]:
    """(dense, expert) tensors of each of a stage's layers (layer_tensors): `layers` average layers,
    or, where `moe` gives each layer's MLP kind in the stage's order (cost.stage_params.
    stage_moe_flags), each layer its kind's (cost.layer_kinds.kind_model: a dense layer holds no
    expert tensor). No expert layer at all where no layer has experts. Remembered: a search's
    few thousand bucket layouts (cost.buckets) ask for a few hundred stages."""
    if moe is None:
        dense, expert = layer_tensors(model, tp, ep, etp)
        return (dense,) * layers, (expert,) * layers if expert else ()
    kinds = {flag: layer_tensors(kind_model(model, LayerKind(moe=flag, local=False)), tp, ep, etp)
             for flag in set(moe)}
    experts = tuple(kinds[flag][1] for flag in moe)
    return tuple(kinds[flag][0] for flag in moe), experts if any(experts) else ()


def stage_extras(model: ModelSpec, tp: int, single_stage: bool, *, first_stage: bool = True,
                 last_stage: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(head, tail) non-layer tensors of a pipeline stage on one rank, as cost.params places them:
    the last stage (or a single one) walks the output layer (unless tied on a single stage; Megatron
    keeps a copy on the last stage when pp > 1) and the final norm first in backprop order; the
    first stage (or a single one) walks the embedding table last; middle stages hold neither."""
    table = model.vocab_size * model.hidden_size / tp
    final_norm = float(model.embedding_params - model.vocab_size * model.hidden_size
                       * (1 if model.tie_word_embeddings else 2))
    head: tuple[float, ...] = ()
    if single_stage or last_stage:
        output = () if single_stage and model.tie_word_embeddings else (table,)
        head = output + ((final_norm,) if final_norm > 0 else ())
    return head, (table,) if single_stage or first_stage else ()


def mtp_tensors(model: ModelSpec, tp: int, ep: int, etp: int, single_stage: bool
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(dense, expert) tensors of the model's multi-token prediction depths on the last stage's
    rank, in backprop order (cost.mtp: their backward runs before the decoder layers', after the
    output layer's): each depth's layer (layer_tensors of its kind), eh_proj with its norms, and
    with pp > 1 the stage's copy of the embedding table (cost.params.mtp_params_per_rank); none
    without MTP."""
    if not model.mtp_layers:
        return (), ()
    dense, expert = layer_tensors(mtp_params_model(model), tp, ep, etp)
    extra = model.mtp_eh_proj_params / tp + model.mtp_norm_params
    table = () if single_stage else (model.vocab_size * model.hidden_size / tp,)
    return (dense + (extra,)) * model.mtp_layers + table, expert * model.mtp_layers
