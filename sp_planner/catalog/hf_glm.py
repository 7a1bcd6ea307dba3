"""GLM-4.5, GLM-4.6 and GLM-4.5-Air config.json (zai-org; model_type glm4_moe: transformers
Glm4MoeConfig in models/glm4_moe/configuration_glm4_moe.py, the layers in modeling_glm4_moe.py,
4.55-4.57).

Glm4MoeDecoderLayer has a dense Glm4MoeMLP of intermediate_size on layers below
first_k_dense_replace and a Glm4MoeMoE after: n_routed_experts of moe_intermediate_size, one
shared Glm4MoeMLP of moe_intermediate_size x n_shared_experts, and a Glm4MoeTopkRouter that scores
with a sigmoid, picks the top num_experts_per_tok after adding e_score_correction_bias (a buffer,
Megatron's --moe-router-enable-expert-bias; DeepSeek-V3's noaux_tc), within topk_group of n_group
groups, then divides the chosen scores by their sum where norm_topk_prob (MoESpec.router_topk_norm)
and scales them by routed_scaling_factor. Glm4MoeAttention: q/k/v biases by attention_bias (no
o_proj bias), a Glm4MoeRMSNorm over head_dim of each query and key head by use_qk_norm (before
RoPE: ModelSpec.qk_norm), and RoPE on the first head_dim x partial_rotary_factor dims of each head
(apply_rotary_pos_emb's q_rot / q_pass). Megatron-Bridge's GLM45Bridge (models/glm/glm45_bridge.py
at 067f987df) maps the same weights onto GPTModel with the same options (qk_layernorm, add_qkv_bias,
moe_router_score_function sigmoid, moe_shared_expert_intermediate_size = moe_intermediate_size,
moe_layer_freq [0] * first_k_dense_replace + [1] * rest, mtp_num_layers = num_nextn_predict_layers).
What the spec leaves out is listed by `not_modelled`.
"""

from __future__ import annotations

import math
from pathlib import Path

from sp_planner.catalog import hf_rope
from sp_planner.catalog.hf_fields import count, error, number, positive_int, positive_number
from sp_planner.catalog.hf_layers import expert_counts, mtp_note, router_groups, sigmoid_topk_norm
from sp_planner.specs.moe import MoESpec

MODEL_TYPE = "glm4_moe"
# Glm4MoeConfig class defaults for what a config may leave out.
NUM_KV_HEADS = 8
PARTIAL_ROTARY_FACTOR = 0.5
NUM_EXPERTS_PER_TOK = 8
NUM_SHARED_EXPERTS = 1
FIRST_DENSE_LAYERS = 1
N_GROUP = TOPK_GROUP = 1
ROUTED_SCALING_FACTOR = 1.0


def moe(cfg: dict, path: Path) -> MoESpec:
    """The MoE layers from first_k_dense_replace on. Grouped routing (topk_group of n_group groups,
    both 1 in every published GLM-4.5/4.6 config) is kept for the flags and priced in the dispatch's
    reach (MoESpec.router_groups), and noted as for DeepSeek-V3 (hf_layers.group_routing_note)."""
    experts, top_k = expert_counts(cfg, path, "n_routed_experts", top_k_default=NUM_EXPERTS_PER_TOK)
    shared = count(cfg, "n_shared_experts", path) if "n_shared_experts" in cfg else NUM_SHARED_EXPERTS
    first_dense = (count(cfg, "first_k_dense_replace", path) if "first_k_dense_replace" in cfg
                   else FIRST_DENSE_LAYERS)
    groups, open_groups = router_groups(cfg, path, default_groups=N_GROUP, default_open=TOPK_GROUP)
    return MoESpec(num_experts=experts, top_k=top_k, moe_intermediate_size=positive_int(cfg, "moe_intermediate_size",
                                                                                        path),
                   num_shared_experts=shared, first_dense_layers=first_dense, router_score_function="sigmoid",
                   score_correction_bias=True,
                   routed_scaling_factor=positive_number(cfg, "routed_scaling_factor", path, ROUTED_SCALING_FACTOR),
                   router_groups=groups, router_group_topk=open_groups,
                   router_topk_norm=sigmoid_topk_norm(cfg, path, top_k))


def partial_rotary_factor(cfg: dict, path: Path) -> float:
    """partial_rotary_factor: the config's own field (transformers 4.x), or the one transformers 5
    keeps inside rope_parameters (PreTrainedConfig.convert_rope_params_to_dict moves it there:
    rope_parameters.setdefault("partial_rotary_factor", ...)), the class default where neither has
    it; the two disagreeing is refused, each release reading another one."""
    key, rope = hf_rope.rope_mapping(cfg, path)
    nested = number(rope, "partial_rotary_factor", path, math.nan) if key == "rope_parameters" and rope else math.nan
    own = number(cfg, "partial_rotary_factor", path, math.nan)
    if not math.isnan(nested) and not math.isnan(own) and nested != own:
        raise error(path, f"partial_rotary_factor {own:g} disagrees with rope_parameters' {nested:g} (transformers "
                    "4 reads the field, 5 the mapping); drop one")
    factor = own if not math.isnan(own) else nested if not math.isnan(nested) else PARTIAL_ROTARY_FACTOR
    if not 0 < factor <= 1:
        raise error(path, f"field 'partial_rotary_factor' must be in (0, 1], got {factor:g}")
    return factor


def rotary_dims(cfg: dict, path: Path, head_dim: int) -> int:
    """The dims of each head RoPE rotates, int(head_dim x partial_rotary_factor) as transformers'
    _compute_default_rope_parameters takes them; YaRN's attention factor on cos and sin, which would
    scale only those dims of q.k, is refused (no single softmax scale describes it)."""
    factor = partial_rotary_factor(cfg, path)
    dims = int(head_dim * factor)
    if dims < 2 or dims % 2:
        raise error(path, f"partial_rotary_factor {factor:g} of head_dim {head_dim} rotates {dims} dims; RoPE "
                    "rotates pairs, so it must be an even number of at least 2")
    attention_factor = hf_rope.rope_attention_factor(cfg, path)
    if attention_factor != 1.0:
        raise error(path, f"YaRN's attention factor {attention_factor:.4g} scales the cos/sin of the {dims} rotary "
                    f"dims of each {head_dim}-dim head alone (partial_rotary_factor {factor:g}), which no single "
                    "softmax scale describes; not supported")
    return dims


def not_modelled(cfg: dict, path: Path, *, head_dim: int) -> tuple[str, ...]:
    """What ModelSpec leaves out (import_notes prints them): partial RoPE, the MTP layers."""
    dims = rotary_dims(cfg, path, head_dim)
    notes = []
    if dims < head_dim:
        notes.append(f"partial RoPE: each head rotates its first {dims} of {head_dim} query and key dims "
                     f"(partial_rotary_factor), timed as RoPE over whole heads: Transformer Engine's fused RoPE "
                     "reads and writes every q and k element either way (it copies the unrotated rest); the "
                     f"model's own Megatron flags need --rotary-percent {dims / head_dim:g}")
    mtp = mtp_note(cfg, path, trained_by="Megatron-Bridge's GLM45Bridge",
                   how="mtp_num_layers = num_nextn_predict_layers", hf_model="Glm4MoeModel")
    if mtp:
        notes.append(mtp)
    return tuple(notes)
