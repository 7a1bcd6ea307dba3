"""The simulator's layers by kind: one layer's work for each of the model's layer kinds, and which
kind each layer of a pipeline stage is.

A model may mix layers of different cost (cost.layer_kinds: DeepSeek-V3's dense first layers,
Llama 4's dense and MoE layers in turn, Gemma 3's local and global attention); each kind is priced
as cost.layer_kinds.kind_model, a model whose every layer is of that kind, so a stage's forward
and backward run each of its layers at its own kind's durations (sim.layer_program) and the stage
holding the costliest layers paces the pipeline (arXiv 2104.04473 section 2.2.1). The kind-
independent collectives (TP, Ulysses, ring, all-gather CP) are run once and shared.
"""

from __future__ import annotations

from sp_planner.cost.layer_kinds import distinct_kinds, kind_indices, kind_model, stage_global_layers
from sp_planner.sim.moe_work import MoEWork
from sp_planner.sim.work import LayerWork
from sp_planner.specs.model import ModelSpec

NO_MOE = MoEWork(0.0, 0.0, 0.0, 0.0)  # a dense layer's


def kind_models(model: ModelSpec, seq_len: int) -> tuple[ModelSpec, ...]:
    """The model of each of its distinct_kinds, in that order."""
    return tuple(kind_model(model, kind) for kind in distinct_kinds(model, seq_len))


def stage_kinds(model: ModelSpec, seq_len: int, pp: int, vpp: int, first_stage_layers: int,
                last_stage_layers: int) -> tuple[tuple[int, ...], ...]:
    """Per stage, per stage-local layer (chunk 0's first: cost.layer_kinds.stage_global_layers,
    as sim.layer_program.chunk_layers numbers them), the layer's index in distinct_kinds.
    `first_stage_layers`, `last_stage_layers`: the plan's (0: the counted split's)."""
    kinds = kind_indices(model, seq_len)
    held = stage_global_layers(model.num_layers, pp, vpp, first_stage_layers, last_stage_layers)
    return tuple(tuple(kinds[layer] for layer in layers) for layers in held)


def kind_layer(collectives: LayerWork, *, gemm_fwd_s: float, gemm_bwd_s: float, attn_share: float, moe: MoEWork,
               attn_fwd_steps_s: tuple[float, ...], attn_bwd_steps_s: tuple[float, ...],
               recompute_mlp: bool = False) -> LayerWork:
    """One layer of a kind: `collectives` (the kind-independent communication) with the kind's
    GEMMs split at the TP collectives by `attn_share` (the attention's share of the layer's
    parameters), its MoE work (the busiest rank's extra expert GEMMs and the permutations with the
    MLP's, backward twice the extra forward: cost.moe) and its attention steps; `recompute_mlp`:
    its dense MLP re-runs in backward (cost.mlp_recompute)."""
    return LayerWork.model_validate({
        **dict(collectives),
        "gemm_attn_fwd_s": gemm_fwd_s * attn_share,
        "gemm_mlp_fwd_s": gemm_fwd_s * (1 - attn_share) + moe.extra_expert_gemm_fwd_s + moe.permute_s,
        "gemm_attn_bwd_s": gemm_bwd_s * attn_share,
        "gemm_mlp_bwd_s": gemm_bwd_s * (1 - attn_share) + 2 * moe.extra_expert_gemm_fwd_s + moe.permute_s,
        "moe_all_to_all_s": moe.all_to_all_s,
        "etp_collective_s": moe.etp_collective_s,
        "recompute_modules_s": moe.recompute_modules_s,
        "attn_fwd_steps_s": attn_fwd_steps_s,
        "attn_bwd_steps_s": attn_bwd_steps_s,
        "recompute_mlp": recompute_mlp,
    })


def attention_share(model: ModelSpec) -> float:
    """The attention's share of a layer's parameters (and so of its GEMM time)."""
    attn_params = model.attention_params_per_layer
    return attn_params / (attn_params + model.active_mlp_params_per_layer)
