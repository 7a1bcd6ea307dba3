"""gpt-oss config.json (openai/gpt-oss-20b and -120b; transformers GptOssConfig in
models/gpt_oss/configuration_gpt_oss.py, the layers in modular_gpt_oss.py).

Every layer is MoE (GptOssMLP: a GptOssTopKRouter, nn.Linear-shaped with a bias, takes the top
num_experts_per_tok logits and softmaxes over those k; GptOssExperts of intermediate_size, the
expert width, with gate_up_proj_bias and down_proj_bias and a clamped SwiGLU: gate clamped above
at swiglu_limit, up on both sides, (up + 1) * gate * sigmoid(alpha * gate), alpha 1.702). Attention
(GptOssAttention) has q/k/v/o biases by attention_bias (class default true), 64 heads of head_dim
64 over 8 KV heads, and one learned sink logit per head in every softmax row's denominator
(`sinks`: ModelSpec.softmax_type learnable). layer_types alternates "sliding_attention" and
"full_attention" from layer 0 (the class default: (i + 1) % 2), the sliding layers attending to
sliding_window (128) keys up to their own. One rotary embedding serves every layer, YaRN with
factor 32 when the config gives none (GptOssConfig.__post_init__), its attention factor on cos and
sin (GptOssRotaryEmbedding `* self.attention_scaling`) as the llama-style families have it
(hf_rope). What the spec leaves out is listed by `not_modelled`.
"""

from __future__ import annotations

from pathlib import Path

from sp_planner.catalog import hf_gemma
from sp_planner.catalog.hf_fields import error, number, positive_int
from sp_planner.catalog.hf_layers import expert_counts
from sp_planner.specs.attention import WindowSpec
from sp_planner.specs.moe import MoESpec

MODEL_TYPE = "gpt_oss"
# GptOssConfig class defaults for what a config may leave out.
SLIDING_WINDOW = 128
ATTENTION_BIAS = True
NUM_EXPERTS_PER_TOK = 4
_SWIGLU_LIMIT, _SWIGLU_ALPHA = 7.0, 1.702
_DEFAULT_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                 "original_max_position_embeddings": 4096}


def with_default_rope(cfg: dict) -> dict:
    """The config with GptOssConfig's YaRN where it gives no rope mapping (transformers fills it in)."""
    if cfg.get("rope_scaling") is not None or cfg.get("rope_parameters") is not None:
        return cfg
    return {**cfg, "rope_scaling": _DEFAULT_ROPE}


def moe(cfg: dict, path: Path) -> MoESpec:
    """Every layer's experts: num_local_experts of intermediate_size, top num_experts_per_tok by the
    router's logits, softmaxed over those k (Megatron's default order, moe_router_pre_softmax False,
    as Megatron-Bridge's gpt_oss_bridge.py sets it). The original checkpoints also carry
    experts_per_token (the reference implementation's name): one that disagrees is refused."""
    experts, top_k = expert_counts(cfg, path, "num_local_experts", top_k_default=NUM_EXPERTS_PER_TOK)
    if cfg.get("experts_per_token") is not None and positive_int(cfg, "experts_per_token", path) != top_k:
        raise error(path, f"experts_per_token {cfg['experts_per_token']} disagrees with num_experts_per_tok {top_k}; "
                    "transformers reads num_experts_per_tok, make them equal")
    return MoESpec(num_experts=experts, top_k=top_k, moe_intermediate_size=positive_int(cfg, "intermediate_size", path),
                   expert_bias=True)


def window(cfg: dict, num_layers: int, path: Path) -> WindowSpec | None:
    """The sliding layers: layer_types where given, else every other layer from layer 0."""
    listed = cfg.get("layer_types")
    is_local = ([(i + 1) % 2 != 0 for i in range(num_layers)] if listed is None
                else hf_gemma.sliding_layers(listed, num_layers, path))
    local, global_ = hf_gemma.layer_pattern(is_local, path)
    if local == 0:
        return None
    if "sliding_window" in cfg and cfg["sliding_window"] is None:
        raise error(path, "sliding_window null with sliding_attention layers is not supported; give the window")
    return WindowSpec(window_tokens=positive_int(cfg, "sliding_window", path, default=SLIDING_WINDOW),
                      local_layers=local, global_layers=global_)


def not_modelled(cfg: dict, path: Path, *, layers: int, hidden: int, heads: int, moe_spec: MoESpec,
                 attention_bias: bool, counted_params: int) -> tuple[str, ...]:
    """What ModelSpec leaves out, each with its size (import_notes prints them); `counted_params`:
    the spec's own count (ModelSpec.num_params), beside which the uncounted share is given."""
    e, k, width = moe_spec.num_experts, moe_spec.top_k, moe_spec.moe_intermediate_size
    per_expert = 2 * width + hidden  # gate_up_proj_bias, down_proj_bias
    extra = layers * ((hidden if attention_bias else 0) + heads + e + e * per_expert)
    active = layers * ((hidden if attention_bias else 0) + heads + e + k * per_expert)
    limit = number(cfg, "swiglu_limit", path, _SWIGLU_LIMIT)
    alpha = number(cfg, "swiglu_alpha", path, _SWIGLU_ALPHA)
    notes = [
        f"gpt-oss's o_proj, router and expert biases and its {heads} sink logits a layer ({extra:,} parameters, "
        f"{active:,} of them active) are not counted: {extra / (counted_params + extra):.3%} of the model's "
        "parameters, as are their element-wise adds",
        f"the experts' clamped SwiGLU (gate <= {limit:g}, |up| <= {limit:g}, (up + 1) x gate x sigmoid({alpha:g} "
        "gate)) is timed as a plain SwiGLU: its clamps and offset are element-wise passes beside the expert GEMMs "
        f"(Megatron-Core: quick_gelu gated, glu_linear_offset 1.0, activation_func_clamp_value {limit:g}, as "
        "Megatron-Bridge's gpt_oss_bridge.py sets them)",
        "the attention sinks (one learned logit per head in each softmax denominator) add one column to "
        "each softmax row, not timed; they restrict the kernels and context parallelism that can run the "
        "model (sp-plan's flags say which)",
    ]
    quant = cfg.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "mxfp4":
        notes.append("quantization_config mxfp4 is how the checkpoint stores the expert weights; the plan trains "
                     "them at its own --precision")
    return tuple(notes)
