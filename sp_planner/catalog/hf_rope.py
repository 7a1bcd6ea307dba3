"""The softmax scale a Hugging Face config.json implies through its rotary embedding: DeepSeek-V3's
YaRN mscale folded into MLA's softmax scale, and YaRN's attention factor on the rotary cos and sin
of the llama-style families, which multiplies q.k by its square.

transformers' _compute_yarn_parameters (modeling_rope_utils.py) has computed that factor three ways
(wheels read: 4.46.3, 4.48.0, 4.50.0 | 4.51.0, 4.52.4 | 4.56.2, 4.57.1, 5.0.0); this follows the
last: rope_scaling's attention_factor, else mscale(factor, mscale) / mscale(factor, mscale_all_dim)
where both are set and non-zero, else mscale(factor, 1) = 0.1 ln(factor) + 1, 1 for factor <= 1.
Up to 4.50 it was attention_factor or 0.1 ln(factor) + 1 whatever the mscales, so a config with
both mscales and no attention_factor is refused where the two disagree. 4.51.0 and 4.52.4 (until
huggingface/transformers#40320 fixed #38224) also replaced `factor` by max_position_embeddings /
original_max_position_embeddings; the config's own factor is read here, as 4.56.2 on and
transformers 5 ("Using the explicit factor") do. A YaRN mapping without a factor is refused
(releases before 5 fail on it; 5 derives it from max_position_embeddings).
"""

from __future__ import annotations

import math
from pathlib import Path

from sp_planner.catalog.hf_fields import error, number, positive_int, positive_number
from sp_planner.specs.attention import MLASpec

# Rope types whose cos and sin are not scaled (HF _compute_default/linear_scaling/dynamic_ntk/
# llama3_parameters return attention_factor 1.0).
_UNSCALED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
# Families whose every layer rotates q and k with one rotary embedding: YaRN's factor is then one
# factor on every layer's q.k. Gemma 3's local layers use their own unscaled rotary embedding
# (rope_local_base_freq, rope_type default), Llama 4's full-attention layers none (NoPE), and
# Gemma 2 took rope_scaling only in later releases. gpt-oss's one GptOssRotaryEmbedding serves its
# sliding and full layers alike.
_WHOLE_MODEL_ROPE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gpt_oss")


def yarn_mscale(factor: float, mscale: float) -> float:
    """YaRN's attention temperature 0.1 * mscale * ln(factor) + 1, 1 for factor <= 1 (HF DeepSeek-V3
    yarn_get_mscale; Megatron yarn_rotary_pos_embedding._yarn_get_mscale)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_mapping(cfg: dict, path: Path) -> tuple[str, dict | None]:
    """(the key, the mapping): rope_scaling, else transformers 5's rope_parameters; None if neither."""
    key = "rope_scaling" if cfg.get("rope_scaling") is not None else "rope_parameters"
    rope = cfg.get(key)
    if rope is not None and not isinstance(rope, dict):
        raise error(path, f"field {key!r} must be a mapping or null, got {rope!r}")
    return key, rope


def _yarn_rope_factor(rope: dict, factor: float, all_dim: float, path: Path) -> float:
    """The factor YaRN puts on the rotary part's cos and sin (1 for another rope type): HF
    _compute_yarn_parameters' attention_factor, else mscale(factor, mscale) / mscale(factor,
    mscale_all_dim) where both are set, else mscale(factor, 1)."""
    if rope.get("rope_type", rope.get("type")) != "yarn":
        return 1.0
    if rope.get("attention_factor") is not None:
        return number(rope, "attention_factor", path, 1.0)
    mscale = number(rope, "mscale", path, 0.0)
    return yarn_mscale(factor, mscale) / yarn_mscale(factor, all_dim) if mscale else yarn_mscale(factor, 1.0)


def mla_softmax_scale(cfg: dict, mla: MLASpec | None, path: Path) -> float | None:
    """DeepSeek-V3's softmax scale: 1/sqrt(qk_nope + qk_rope), times mscale(factor, mscale_all_dim)^2
    where rope_scaling sets a non-zero mscale_all_dim (HF DeepseekV3Attention: `if
    config.rope_scaling is not None` and mscale_all_dim, scaling *= yarn_get_mscale(factor,
    mscale_all_dim)^2; Megatron MLASelfAttention softmax_scale). DeepSeek-V3's config.json: factor
    40, mscale_all_dim 1.0 -> x1.8739. None where no factor applies (the default scale). YaRN's
    own factor on the rotary cos and sin scales only the qk_rope dims of q and k: a config where it
    is not 1 is refused, not run at one scale. (transformers 5 names the mapping rope_parameters.)"""
    if mla is None:
        return None
    key, rope = rope_mapping(cfg, path)
    if rope is None:
        return None
    all_dim = number(rope, "mscale_all_dim", path, 0.0)
    if rope.get("factor") is None:
        if all_dim or rope.get("rope_type", rope.get("type")) == "yarn":
            raise error(path, f"{key} of YaRN (or with mscale_all_dim) needs a 'factor'")
        return None
    factor = number(rope, "factor", path, 1.0)
    rope_factor = _yarn_rope_factor(rope, factor, all_dim, path)
    if not math.isclose(rope_factor, 1.0, rel_tol=1e-9):
        raise error(path, f"{key} scales the qk_rope dims of q and k alone by {rope_factor:.4g} (YaRN's attention "
                    "factor; 1 where mscale equals mscale_all_dim), which no single softmax scale describes; "
                    "not supported")
    if not all_dim or factor <= 1:
        return None
    qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    return yarn_mscale(factor, all_dim) ** 2 / math.sqrt(qk_dim)


def softmax_scale(cfg: dict, model_type: str, path: Path, *, mla: MLASpec | None, head_dim: int,
                  base_scale: float | None = None) -> float | None:
    """The factor on q.k before the softmax, None where it is 1/sqrt(head_dim): MLA's (above), else
    `base_scale` (Gemma's query_pre_attn_scalar**-0.5; None for 1/sqrt(head_dim)) times the square
    of the rope's attention factor, which multiplies both q's and k's cos and sin."""
    if mla is not None:
        return mla_softmax_scale(cfg, mla, path)
    factor = rope_attention_factor(cfg, path)
    if factor == 1.0:
        return base_scale
    if model_type not in _WHOLE_MODEL_ROPE:
        raise error(path, f"YaRN's attention factor {factor:.4g} scales the rotary cos/sin of only some of "
                    f"{model_type}'s layers (or not in every transformers release), which no single softmax scale "
                    "describes; not supported")
    return (head_dim**-0.5 if base_scale is None else base_scale) * factor**2


def rope_attention_factor(cfg: dict, path: Path) -> float:
    """The factor transformers puts on the rotary cos and sin (module docstring); 1 without rope
    scaling. transformers 5 may key rope_parameters by layer type: their factors must agree."""
    key, rope = rope_mapping(cfg, path)
    if rope is None:
        return 1.0
    if rope and all(isinstance(sub, dict) for sub in rope.values()):
        factors = {_attention_factor(sub, key, path) for sub in rope.values()}
        if len(factors) > 1:
            raise error(path, f"{key} gives the layer types different attention factors "
                        f"({', '.join(f'{f:.4g}' for f in sorted(factors))}); not supported")
        return factors.pop()
    return _attention_factor(rope, key, path)


def _attention_factor(rope: dict, key: str, path: Path) -> float:
    kind = rope.get("rope_type", rope.get("type"))
    if kind is None:
        if rope.get("factor") is not None:
            raise error(path, f"{key} sets a factor but no rope_type")
        return 1.0
    if kind in _UNSCALED_ROPE_TYPES:
        return 1.0
    if kind != "yarn":
        # longrope's factor sqrt(1 + ln(f) / ln(original length)) takes f from max_position_embeddings
        # in some releases and from rope_scaling in others.
        raise error(path, f"{key} rope_type {kind!r} is not supported; supported: "
                    f"{', '.join(_UNSCALED_ROPE_TYPES)}, yarn")
    if rope.get("factor") is None:
        raise error(path, f"{key} of YaRN needs a 'factor'")
    factor = number(rope, "factor", path, 1.0)
    if factor < 1:
        raise error(path, f"{key} YaRN factor {factor:g} is below 1 (it is the context extension ratio)")
    given = positive_number(rope, "attention_factor", path, None)
    if given is not None:
        return given
    plain = yarn_mscale(factor, 1.0)
    mscale, all_dim = number(rope, "mscale", path, 0.0), number(rope, "mscale_all_dim", path, 0.0)
    if mscale and all_dim:
        ratio = yarn_mscale(factor, mscale) / yarn_mscale(factor, all_dim)
        if not math.isclose(ratio, plain, rel_tol=1e-9):
            raise error(path, f"{key} of YaRN sets mscale {mscale:g} and mscale_all_dim {all_dim:g} but no "
                        f"attention_factor: transformers >= 4.51 scales cos/sin by mscale(f, mscale) / "
                        f"mscale(f, mscale_all_dim) = {ratio:.4g}, earlier releases by 0.1 ln(f) + 1 = "
                        f"{plain:.4g}; set attention_factor to the one the model was trained with")
    return plain


def temperature_tuning_note(cfg: dict, model_type: str, path: Path) -> str | None:
    """Llama 4's attn_temperature_tuning (on by default: Llama4TextConfig's 4): its NoPE full-attention
    layers multiply the queries by 1 + attn_scale * ln(1 + floor((position + 1) / floor_scale))
    (Llama4TextAttention, transformers 4.57.1 modeling_llama4.py), a per-position factor no softmax
    scale describes. Planning does not depend on it; the note says sp-run leaves it out."""
    if model_type != "llama4_text" or not _temperature_tuning(cfg, path):
        return None
    scale = number(cfg, "attn_scale", path, 0.1)
    floor = positive_int(cfg, "floor_scale", path, default=8192)
    return (f"attn_temperature_tuning: Llama 4's full-attention (NoPE) layers scale each query by 1 + {scale:g} "
            f"x ln(1 + floor((position + 1) / {floor})), x{1 + scale * math.log(2):.4g} from position {floor - 1} "
            "on; sp-run runs them unscaled (times and memory do not depend on it)")


def _temperature_tuning(cfg: dict, path: Path) -> bool:
    """attn_temperature_tuning: true or false, or the integer published configs hold
    (meta-llama/Llama-4-Scout-17B-16E config.json text_config: 4, Llama4TextConfig's own default
    attn_temperature_tuning=4), read as a truth value as
    Llama4TextAttention reads it (`if self.attn_temperature_tuning and not self.use_rope`)."""
    value = cfg.get("attn_temperature_tuning", True)
    if isinstance(value, bool) or (isinstance(value, int) and value >= 0):
        return bool(value)
    raise error(path, f"field 'attn_temperature_tuning' must be true or false (or an integer, as "
                f"Llama-4-Scout's 4), got {value!r}")
