"""ModelSpec from a Hugging Face config.json of the llama, mistral, mixtral, qwen2 and qwen3 families.

Field meanings and defaults follow the transformers configuration classes (LlamaConfig,
MistralConfig, MixtralConfig, Qwen2Config, Qwen3Config): num_key_value_heads defaults to
num_attention_heads, head_dim to hidden_size // num_attention_heads, and tie_word_embeddings to
False in all five.
"""

from __future__ import annotations

import re
from pathlib import Path

from sp_planner.errors import UserInputError
from sp_planner.fileio import read_structured, validate_as
from sp_planner.specs.model import ModelSpec, MoESpec

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "mistral", "mixtral", "qwen2", "qwen3")

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
    return path / "config.json" if path.is_dir() else path


def load_hf_config(path: Path) -> ModelSpec:
    """A config.json, or a checkpoint folder holding one. Without a name field the spec is named
    after what the user gave: the folder, else the file (its stem, or the path for config.json)."""
    given = Path(path)
    path = config_path(given)
    data = read_structured(path, what=_WHAT)
    if not isinstance(data, dict):
        raise UserInputError(f"{_WHAT} file {path} must hold a mapping, got {type(data).__name__}")
    if given.is_dir():
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


def _flag(cfg: dict, key: str, path: Path) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise _error(path, f"field {key!r} must be true or false, got {value!r}")
    return value


def _names(cfg: dict, fallback: str) -> tuple[str, str | None]:
    """(spec name, Hugging Face repo id or None) from the config's own `_name_or_path` (or `name`),
    else `fallback` (what the user named: the folder or the file)."""
    origin = cfg.get("_name_or_path")
    if isinstance(origin, str) and origin.strip("/ "):
        origin = origin.strip().rstrip("/")
        repo = origin if _HF_REPO.match(origin) else None
        return origin.rsplit("/", 1)[-1], repo
    name = cfg.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip(), None
    return fallback, None


def _mlp(cfg: dict, path: Path) -> str:
    activation = cfg.get("hidden_act", "silu")
    if activation not in _ACTIVATION_TO_MLP:
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
    if model_type in ("llama", "qwen3"):
        return _flag(cfg, "attention_bias", path)
    return False


def _moe(cfg: dict, model_type: str, path: Path, intermediate_size: int) -> MoESpec | None:
    if model_type != "mixtral":
        return None
    # Mixtral's experts are full-width SwiGLU MLPs of intermediate_size (MixtralSparseMoeBlock).
    return MoESpec(
        num_experts=_positive_int(cfg, "num_local_experts", path),
        top_k=_positive_int(cfg, "num_experts_per_tok", path),
        moe_intermediate_size=intermediate_size,
    )


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
    intermediate = _positive_int(cfg, "intermediate_size", path)
    name, repo = _names(cfg, fallback_name or (path.stem if path.stem != "config" else str(path)))
    fields = {
        "name": name,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_layers": _positive_int(cfg, "num_hidden_layers", path),
        "num_heads": heads,
        "num_kv_heads": _positive_int(cfg, "num_key_value_heads", path, default=heads),
        "head_dim": _positive_int(cfg, "head_dim", path, default=hidden // heads),
        "vocab_size": _positive_int(cfg, "vocab_size", path),
        "tie_word_embeddings": _flag(cfg, "tie_word_embeddings", path),
        "mlp": _mlp(cfg, path),
        "qkv_bias": _qkv_bias(cfg, model_type, path),
        "moe": _moe(cfg, model_type, path, intermediate),
        "hf_repo": repo,
        "sources": (f"{path} (Hugging Face config.json, model_type {model_type})",),
    }
    return validate_as(ModelSpec, fields, what=_WHAT, path=path)
