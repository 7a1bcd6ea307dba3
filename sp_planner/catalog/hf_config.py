"""ModelSpec from a Hugging Face config.json of the llama, mistral, mixtral, qwen2, qwen3, qwen3_moe,
deepseek_v3 and llama4 families.

Field meanings and defaults follow the transformers configuration classes (LlamaConfig,
MistralConfig, MixtralConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig, DeepseekV3Config):
num_key_value_heads defaults to num_attention_heads, head_dim to hidden_size //
num_attention_heads, and tie_word_embeddings to False. DeepSeek-V3's MLA sets the heads as
ModelSpec.mla describes (num_kv_heads = num_heads, head_dim = half the per-head Q+K+V width).
Llama 4 (Llama4Config; its text_config, model_type llama4_text, read alone too): intermediate_size
is the expert width and intermediate_size_mlp the dense one, every interleave_moe_layer_step-th
layer is MoE with one shared expert and a sigmoid top-k router, and layers whose no_rope_layers
entry is 1 attend within attention_chunk_size chunks (the vision encoder is not modelled).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from sp_planner.errors import UserInputError
from sp_planner.fileio import kind_of, read_structured, validate_as
from sp_planner.specs.model import MLASpec, ModelSpec, MoESpec, WindowSpec

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3",
                                           "llama4", "llama4_text")

_WHAT = "model config"
# Gated activations: the MLP has gate, up and down projections.
_ACTIVATION_TO_MLP = {
    "silu": "swiglu",
    "swish": "swiglu",
    "gelu": "geglu",
    "gelu_new": "geglu",
    "gelu_pytorch_tanh": "geglu",
}
_HF_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")


def config_path(path: Path) -> Path:
    """A checkpoint directory stands for the config.json inside it."""
    path = Path(path)
    return path / "config.json" if _is_dir(path) else path


def _is_dir(path: Path) -> bool:
    """Path.is_dir, False where the path cannot be looked at (a name too long): reading it then
    fails with the reason in one line (fileio.read_structured)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def load_hf_config(path: Path) -> ModelSpec:
    """A config.json, or a checkpoint folder holding one. Without a name field the spec is named
    after what the user gave: the folder, else the file (its stem, or the path for config.json)."""
    given = Path(path)
    path = config_path(given)
    data = read_structured(path, what=_WHAT)
    if not isinstance(data, dict):
        raise UserInputError(f"{_WHAT} file {path} must hold a mapping, got {kind_of(data)}")
    if _is_dir(given):
        fallback = given.resolve().name or str(given)
    else:
        fallback = str(given) if given.stem == "config" else given.stem
    return spec_from_hf_config(data, path=path, fallback_name=fallback)


def _error(path: Path, message: str) -> UserInputError:
    return UserInputError(f"{_WHAT} file {path}: {message}")


def _positive_int(cfg: dict, key: str, path: Path, default: int | None = None) -> int:
    value = cfg.get(key)
    if value is None:
        if default is None:
            raise _error(path, f"required field {key!r} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _error(path, f"field {key!r} must be a positive integer, got {value!r}")
    return value


def _count(cfg: dict, key: str, path: Path) -> int:
    """A non-negative integer field (0 when absent or null)."""
    value = cfg.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(path, f"field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _int_list(cfg: dict, key: str, path: Path) -> list[int] | None:
    """A list of integers, or None when absent or null."""
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise _error(path, f"field {key!r} must be a list of integers, got {value!r}")
    return value


def _flag(cfg: dict, key: str, path: Path) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise _error(path, f"field {key!r} must be true or false, got {value!r}")
    return value


def _names(cfg: dict, fallback: str) -> tuple[str, str | None]:
    """(spec name, Hugging Face repo id or None) from the config's own `_name_or_path` (or `name`),
    else `fallback` (what the user named: the folder or the file)."""
    origin = cfg.get("_name_or_path")
    if isinstance(origin, str):
        origin = origin.strip().rstrip("/")
        last = origin.rsplit("/", 1)[-1]
        if last.strip() and last not in (".", ".."):  # "./" or "../ckpt/.." names no model
            return last, origin if _HF_REPO.match(origin) else None
    name = cfg.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip(), None
    return fallback, None


def _mlp(cfg: dict, path: Path) -> str:
    activation = cfg.get("hidden_act", "silu")
    if not isinstance(activation, str) or activation not in _ACTIVATION_TO_MLP:
        raise _error(
            path,
            f"field 'hidden_act' {activation!r} is not supported; expected one of "
            f"{', '.join(sorted(_ACTIVATION_TO_MLP))}",
        )
    return _ACTIVATION_TO_MLP[activation]


def _qkv_bias(cfg: dict, model_type: str, path: Path) -> bool:
    # Qwen2Attention always has q/k/v biases; Mistral and Mixtral never do; Llama and Qwen3 follow
    # attention_bias (which also adds an o_proj bias of hidden_size per layer, left uncounted).
    if model_type == "qwen2":
        return True
    if model_type in ("llama", "qwen3", "qwen3_moe", "deepseek_v3", "llama4_text"):
        return _flag(cfg, "attention_bias", path)
    return False


def _moe(cfg: dict, model_type: str, path: Path, intermediate_size: int) -> MoESpec | None:
    if model_type == "qwen3_moe":
        # Qwen3MoeConfig: every decoder_sparse_step-th layer is MoE unless listed in mlp_only_layers.
        if cfg.get("mlp_only_layers") or _positive_int(cfg, "decoder_sparse_step", path, default=1) != 1:
            raise _error(path, "qwen3_moe with mlp_only_layers or decoder_sparse_step != 1 is not supported "
                         "(only the first layers may be dense)")
        experts, top_k = _expert_counts(cfg, path, "num_experts")
        return MoESpec(num_experts=experts, top_k=top_k,
                       moe_intermediate_size=_positive_int(cfg, "moe_intermediate_size", path))
    if model_type == "deepseek_v3":
        # DeepseekV3Config: layers from first_k_dense_replace on are MoE (moe_layer_freq 1).
        if _positive_int(cfg, "moe_layer_freq", path, default=1) != 1:
            raise _error(path, "deepseek_v3 with moe_layer_freq != 1 is not supported")
        shared = _count(cfg, "n_shared_experts", path)
        experts, top_k = _expert_counts(cfg, path, "n_routed_experts")
        return MoESpec(num_experts=experts, top_k=top_k,
                       moe_intermediate_size=_positive_int(cfg, "moe_intermediate_size", path),
                       num_shared_experts=shared, first_dense_layers=_count(cfg, "first_k_dense_replace", path),
                       router_score_function=_score_function(cfg, path))
    if model_type == "llama4_text":
        # Llama4TextConfig: moe_layers = range(step - 1, num_layers, step) unless listed otherwise;
        # Llama4TextMoe has one shared expert of the expert width and a sigmoid router.
        step = _positive_int(cfg, "interleave_moe_layer_step", path, default=1)
        layers = _positive_int(cfg, "num_hidden_layers", path)
        listed = _int_list(cfg, "moe_layers", path)
        if listed is not None and listed != list(range(step - 1, layers, step)):
            raise _error(path, f"moe_layers other than every interleave_moe_layer_step ({step})-th layer are not "
                         "supported")
        experts, top_k = _expert_counts(cfg, path, "num_local_experts", top_k_default=1)
        return MoESpec(num_experts=experts, top_k=top_k,
                       moe_intermediate_size=_positive_int(cfg, "intermediate_size", path),
                       num_shared_experts=1, layer_step=step, router_score_function="sigmoid")
    if model_type != "mixtral":
        return None
    # Mixtral's experts are full-width SwiGLU MLPs of intermediate_size (MixtralSparseMoeBlock).
    experts, top_k = _expert_counts(cfg, path, "num_local_experts")
    return MoESpec(num_experts=experts, top_k=top_k, moe_intermediate_size=intermediate_size)


def _score_function(cfg: dict, path: Path) -> str:
    """DeepseekV3Config scoring_func, default sigmoid; anything else is refused, not read as sigmoid."""
    value = cfg.get("scoring_func", "sigmoid")
    if value not in ("sigmoid", "softmax"):
        raise _error(path, f"field 'scoring_func' must be \"sigmoid\" or \"softmax\", got {value!r}")
    return value


def _expert_counts(cfg: dict, path: Path, experts_key: str, top_k_default: int | None = None) -> tuple[int, int]:
    """(routed experts, experts per token), refusing more experts per token than there are: a token
    goes to num_experts_per_tok distinct experts (the routers' torch.topk over the experts)."""
    experts = _positive_int(cfg, experts_key, path)
    top_k = _positive_int(cfg, "num_experts_per_tok", path, default=top_k_default)
    if top_k > experts:
        raise _error(path, f"num_experts_per_tok {top_k} exceeds {experts_key} {experts}: each token is routed "
                     "to that many distinct experts")
    return experts, top_k


def _window(cfg: dict, model_type: str, path: Path) -> WindowSpec | None:
    """Mistral/Mixtral: `sliding_window` (null = full attention) on every layer. Qwen2/Qwen3 turn
    windows on with `use_sliding_window` for layers from max_window_layers on: refused, not
    silently planned as full attention."""
    if model_type in ("mistral", "mixtral"):
        if cfg.get("sliding_window") is None:
            return None
        return WindowSpec(window_tokens=_positive_int(cfg, "sliding_window", path))
    if model_type == "llama4_text":
        # Llama4TextConfig: no_rope_layers defaults to 1 (chunked) except every
        # no_rope_layer_interval-th (4) layer, which attends to the whole sequence.
        layers = _positive_int(cfg, "num_hidden_layers", path)
        interval = _positive_int(cfg, "no_rope_layer_interval", path, default=4)
        rope = _int_list(cfg, "no_rope_layers", path) or [int((i + 1) % interval != 0) for i in range(layers)]
        if rope != [int((i + 1) % interval != 0) for i in range(layers)]:
            raise _error(path, "no_rope_layers other than a full-attention layer every no_rope_layer_interval "
                         f"({interval}) layers are not supported (the chunked:global pattern is not modelled)")
        chunk = _positive_int(cfg, "attention_chunk_size", path, default=8192)
        return WindowSpec(window_tokens=chunk, kind="chunked", local_layers=interval - 1, global_layers=1)
    if model_type in ("qwen2", "qwen3", "qwen3_moe") and _flag(cfg, "use_sliding_window", path):
        raise _error(path, "use_sliding_window true is not supported (Qwen's per-layer windows are not modelled)")
    return None


def _mla(cfg: dict, model_type: str, path: Path) -> MLASpec | None:
    """DeepseekV3Config's latent attention (q_lora_rank may be null: no query compression)."""
    if model_type != "deepseek_v3":
        return None
    q_lora = cfg.get("q_lora_rank")
    return MLASpec(q_lora_rank=None if q_lora is None else _positive_int(cfg, "q_lora_rank", path),
                   kv_lora_rank=_positive_int(cfg, "kv_lora_rank", path),
                   qk_nope_head_dim=_positive_int(cfg, "qk_nope_head_dim", path),
                   qk_rope_head_dim=_positive_int(cfg, "qk_rope_head_dim", path),
                   v_head_dim=_positive_int(cfg, "v_head_dim", path))


def _number(cfg: dict, key: str, path: Path, default: float) -> float:
    """A finite number field of a mapping (`default` when absent or null)."""
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _error(path, f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _yarn_mscale(factor: float, mscale: float) -> float:
    """YaRN's attention temperature 0.1 * mscale * ln(factor) + 1, 1 for factor <= 1 (HF DeepSeek-V3
    yarn_get_mscale; Megatron yarn_rotary_pos_embedding._yarn_get_mscale)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn_rope_factor(rope: dict, factor: float, all_dim: float, path: Path) -> float:
    """The factor YaRN puts on the rotary part's cos and sin (1 for another rope type): HF
    _compute_yarn_parameters' attention_factor, else mscale(factor, mscale) / mscale(factor,
    mscale_all_dim) where both are set, else mscale(factor, 1)."""
    if rope.get("rope_type", rope.get("type")) != "yarn":
        return 1.0
    if rope.get("attention_factor") is not None:
        return _number(rope, "attention_factor", path, 1.0)
    mscale = _number(rope, "mscale", path, 0.0)
    return _yarn_mscale(factor, mscale) / _yarn_mscale(factor, all_dim) if mscale else _yarn_mscale(factor, 1.0)


def _mla_softmax_scale(cfg: dict, mla: MLASpec | None, path: Path) -> float | None:
    """DeepSeek-V3's softmax scale: 1/sqrt(qk_nope + qk_rope), times mscale(factor, mscale_all_dim)^2
    where rope_scaling sets a non-zero mscale_all_dim (HF DeepseekV3Attention: `if
    config.rope_scaling is not None` and mscale_all_dim, scaling *= yarn_get_mscale(factor,
    mscale_all_dim)^2; Megatron MLASelfAttention softmax_scale). DeepSeek-V3's config.json: factor
    40, mscale_all_dim 1.0 -> x1.8739. None where no factor applies (the default scale). YaRN's
    own factor on the rotary cos and sin scales only the qk_rope dims of q and k: a config where it
    is not 1 is refused, not run at one scale. (transformers 5 names the mapping rope_parameters.)"""
    if mla is None:
        return None
    key = "rope_scaling" if cfg.get("rope_scaling") is not None else "rope_parameters"
    rope = cfg.get(key)
    if rope is None:
        return None
    if not isinstance(rope, dict):
        raise _error(path, f"field {key!r} must be a mapping or null, got {rope!r}")
    all_dim = _number(rope, "mscale_all_dim", path, 0.0)
    if rope.get("factor") is None:
        if all_dim or rope.get("rope_type", rope.get("type")) == "yarn":
            raise _error(path, f"{key} of YaRN (or with mscale_all_dim) needs a 'factor'")
        return None
    factor = _number(rope, "factor", path, 1.0)
    rope_factor = _yarn_rope_factor(rope, factor, all_dim, path)
    if not math.isclose(rope_factor, 1.0, rel_tol=1e-9):
        raise _error(path, f"{key} scales the qk_rope dims of q and k alone by {rope_factor:.4g} (YaRN's attention "
                     "factor; 1 where mscale equals mscale_all_dim), which no single softmax scale describes; "
                     "not supported")
    if not all_dim or factor <= 1:
        return None
    qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    return _yarn_mscale(factor, all_dim) ** 2 / math.sqrt(qk_dim)


def _mla_head_dim(mla: MLASpec, path: Path) -> int:
    width = mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim
    if width % 2:
        raise _error(path, f"qk_nope_head_dim + qk_rope_head_dim + v_head_dim = {width} is odd; the planner's "
                     "MLA head width (their half) must be whole")
    return width // 2


def spec_from_hf_config(cfg: dict, *, path: Path, fallback_name: str | None = None) -> ModelSpec:
    """Map one parsed config.json to a ModelSpec; every problem names the file and the field."""
    model_type = cfg.get("model_type")
    if model_type is None:
        raise _error(path, "required field 'model_type' is missing")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _error(
            path,
            f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}",
        )
    if model_type == "llama4":
        # Llama4Config wraps the decoder in text_config; the name and the tying are the wrapper's.
        text = cfg.get("text_config")
        if not isinstance(text, dict):
            raise _error(path, "model_type 'llama4' needs a 'text_config' mapping")
        outer = {key: cfg[key] for key in ("_name_or_path", "name", "tie_word_embeddings") if key in cfg}
        cfg, model_type = {**text, **outer, "model_type": "llama4_text"}, "llama4_text"
    if model_type == "llama" and _flag(cfg, "mlp_bias", path):
        raise _error(path, "field 'mlp_bias' true is not supported (no MLP-only bias in ModelSpec)")

    hidden = _positive_int(cfg, "hidden_size", path)
    heads = _positive_int(cfg, "num_attention_heads", path)
    if cfg.get("head_dim") is None and hidden % heads != 0:
        raise _error(
            path,
            f"field 'head_dim' is missing and hidden_size {hidden} is not a multiple of "
            f"num_attention_heads {heads}",
        )
    # Llama 4's intermediate_size is the experts' width; its dense layers use intermediate_size_mlp.
    dense_width = "intermediate_size_mlp" if model_type == "llama4_text" else "intermediate_size"
    intermediate = _positive_int(cfg, dense_width, path)
    name, repo = _names(cfg, fallback_name or (path.stem if path.stem != "config" else str(path)))
    mla = _mla(cfg, model_type, path)
    fields = {
        "name": name,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_layers": _positive_int(cfg, "num_hidden_layers", path),
        "num_heads": heads,
        "num_kv_heads": heads if mla else _positive_int(cfg, "num_key_value_heads", path, default=heads),
        "head_dim": _mla_head_dim(mla, path) if mla else _positive_int(cfg, "head_dim", path, default=hidden // heads),
        "vocab_size": _positive_int(cfg, "vocab_size", path),
        "tie_word_embeddings": _flag(cfg, "tie_word_embeddings", path),
        "mlp": _mlp(cfg, path),
        "qkv_bias": _qkv_bias(cfg, model_type, path),
        # Qwen3's attention always norms each query and key head (Qwen3Attention and
        # Qwen3MoeAttention q_norm/k_norm; no config field); Llama 4's use_qk_norm is a weightless
        # L2 norm, which ModelSpec.qk_norm does not describe.
        "qk_norm": model_type in ("qwen3", "qwen3_moe"),
        "moe": _moe(cfg, model_type, path, intermediate),
        "mla": mla,
        "window": _window(cfg, model_type, path),
        "softmax_scale": _mla_softmax_scale(cfg, mla, path),
        "hf_repo": repo,
        "sources": (f"{path} (Hugging Face config.json, model_type {model_type})",),
    }
    return validate_as(ModelSpec, fields, what=_WHAT, path=path)
