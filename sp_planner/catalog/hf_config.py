"""ModelSpec from a Hugging Face config.json of the llama, mistral, mixtral, qwen2, qwen3, qwen3_moe,
deepseek_v3, kimi_k2, deepseek_v32, llama4, gemma2, gemma3, gpt_oss and glm4_moe families.

Field meanings and defaults follow the transformers configuration classes (LlamaConfig,
MistralConfig, MixtralConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig, DeepseekV3Config):
num_key_value_heads defaults to num_attention_heads, head_dim to hidden_size //
num_attention_heads, and tie_word_embeddings to False. DeepSeek-V3's MLA sets the heads as
ModelSpec.mla describes (num_kv_heads = num_heads, head_dim = half the per-head Q+K+V width).
Llama 4 (Llama4Config; its text_config, model_type llama4_text, read alone too): intermediate_size
is the expert width and intermediate_size_mlp the dense one, every interleave_moe_layer_step-th
layer is MoE with one shared expert and a sigmoid top-k router, and layers whose no_rope_layers
entry is 1 attend within attention_chunk_size chunks, the others (NoPE) apply no RoPE (the vision
encoder is not modelled).
Kimi K2 (kimi_k2) is DeepSeek-V3's architecture under another model_type: hf_kimi. DeepSeek-V3.2
(deepseek_v32) is DeepSeek-V3's plus sparse attention's indexer: hf_dsa.
Gemma 2 and 3 (gemma3 wraps the decoder, gemma3_text, in text_config): hf_gemma. gpt-oss (every
layer MoE, attention sinks, 1:1 sliding:full layers): hf_gpt_oss. GLM-4.5/4.6 (glm4_moe: dense first
layers, shared expert, sigmoid router, QK norm, partial RoPE): hf_glm.
What each layer holds is read in hf_layers, the rotary embedding's softmax scale in hf_rope. What
the spec leaves out is listed in its sources after NOT_MODELLED, what it prices otherwise than a field
says after MODELLED (hf_fields; import_notes), for the CLI to say.
"""

from __future__ import annotations

import re
from pathlib import Path

from sp_planner.catalog import hf_dsa, hf_gemma, hf_glm, hf_gpt_oss, hf_kimi, hf_layers, hf_rope
from sp_planner.catalog.hf_fields import MODELLED, NOT_MODELLED, WHAT, error, flag, positive_int, probability
from sp_planner.errors import UserInputError
from sp_planner.fileio import kind_of, read_structured, validate_as
from sp_planner.specs.attention import LEARNABLE, VANILLA
from sp_planner.specs.model import ROPE, ModelSpec
from sp_planner.specs.moe import MoESpec

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3",
                                           hf_kimi.MODEL_TYPE, hf_dsa.MODEL_TYPE, "llama4", "llama4_text",
                                           *hf_gemma.MODEL_TYPES, hf_gpt_oss.MODEL_TYPE, hf_glm.MODEL_TYPE)

HF_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
# Fields every config.json of a supported model_type holds (a wrapper's in its text_config).
_ARCHITECTURE_KEYS = frozenset({"model_type", "hidden_size", "num_hidden_layers", "text_config"})


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
    data = read_structured(path, what=WHAT)
    if not isinstance(data, dict):
        raise UserInputError(f"{WHAT} file {path} must hold a mapping, got {kind_of(data)}")
    if _is_dir(given):
        fallback = given.resolve().name or str(given)
    else:
        fallback = str(given) if given.stem == "config" else given.stem
    return spec_from_hf_config(data, path=path, fallback_name=fallback)


def import_notes(spec: ModelSpec) -> list[str]:
    """What an imported config.json holds that the spec leaves out or prices otherwise than a field
    says (its NOT_MODELLED and MODELLED sources), one line each."""
    return [entry.removeprefix(prefix) for entry in spec.sources for prefix in (NOT_MODELLED, MODELLED)
            if entry.startswith(prefix)]


def _names(cfg: dict, fallback: str) -> tuple[str, str | None]:
    """(spec name, Hugging Face repo id or None) from the config's own `_name_or_path` (or `name`),
    else `fallback` (what the user named: the folder or the file)."""
    origin = cfg.get("_name_or_path")
    if isinstance(origin, str):
        origin = origin.strip().rstrip("/")
        last = origin.rsplit("/", 1)[-1]
        if last.strip() and last not in (".", ".."):  # "./" or "../ckpt/.." names no model
            return last, origin if HF_REPO.match(origin) else None
    name = cfg.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip(), None
    return fallback, None


def spec_from_hf_config(cfg: dict, *, path: Path, fallback_name: str | None = None) -> ModelSpec:
    """Map one parsed config.json to a ModelSpec; every problem names the file and the field."""
    model_type = cfg.get("model_type")
    if model_type is None and not _ARCHITECTURE_KEYS & cfg.keys():
        # Another file (a plan.json, a hardware profile, params.json of Mistral's own format): what it
        # is not, and what to give, rather than the first of many fields it lacks.
        raise error(path, "not a Hugging Face config.json (it has none of model_type, hidden_size, "
                          "num_hidden_layers); give the model's config.json, its folder, or a built-in model name")
    if model_type is None:
        raise error(path, "required field 'model_type' is missing")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise error(
            path,
            f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}",
        )
    # kimi_k2 and deepseek_v32 are read as deepseek_v3 and named in the sources as themselves.
    origin_type = model_type if model_type in (hf_kimi.MODEL_TYPE, hf_dsa.MODEL_TYPE) else None
    if model_type == hf_kimi.MODEL_TYPE:
        cfg, model_type = hf_kimi.as_deepseek_v3(cfg, path), "deepseek_v3"
    dsa = None
    if model_type == hf_dsa.MODEL_TYPE:
        cfg, model_type = hf_dsa.as_deepseek_v3(cfg, path), "deepseek_v3"
        dsa = hf_dsa.dsa(cfg, path)
    if model_type == "llama4":
        # Llama4Config wraps the decoder in text_config; the name and the tying are the wrapper's.
        text = cfg.get("text_config")
        if not isinstance(text, dict):
            raise error(path, "model_type 'llama4' needs a 'text_config' mapping")
        outer = {key: cfg[key] for key in ("_name_or_path", "name", "tie_word_embeddings") if key in cfg}
        cfg, model_type = {**text, **outer, "model_type": "llama4_text"}, "llama4_text"
    if model_type == "gemma3":
        cfg, model_type = hf_gemma.text_config(cfg, path), "gemma3_text"
    gemma = model_type in hf_gemma.MODEL_TYPES
    gpt_oss = model_type == hf_gpt_oss.MODEL_TYPE
    glm = model_type == hf_glm.MODEL_TYPE
    if gpt_oss:
        cfg = hf_gpt_oss.with_default_rope(cfg)
    if model_type == "llama" and flag(cfg, "mlp_bias", path):
        raise error(path, "field 'mlp_bias' true is not supported (no MLP-only bias in ModelSpec)")

    hidden = positive_int(cfg, "hidden_size", path)
    heads = positive_int(cfg, "num_attention_heads", path, default=hf_gemma.NUM_HEADS if gemma else None)
    if not gemma and cfg.get("head_dim") is None and hidden % heads != 0:
        raise error(
            path,
            f"field 'head_dim' is missing and hidden_size {hidden} is not a multiple of "
            f"num_attention_heads {heads}",
        )
    # Llama 4's intermediate_size is the experts' width; its dense layers use intermediate_size_mlp.
    dense_width = "intermediate_size_mlp" if model_type == "llama4_text" else "intermediate_size"
    intermediate = positive_int(cfg, dense_width, path)
    name, repo = _names(cfg, fallback_name or (path.stem if path.stem != "config" else str(path)))
    mla = hf_layers.mla(cfg, model_type, path)
    layers = positive_int(cfg, "num_hidden_layers", path)
    # Gemma's head dim is the class default, not hidden / heads, where a config leaves it out (hf_gemma).
    kv_heads = heads if mla else positive_int(
        cfg, "num_key_value_heads", path,
        default=hf_gemma.NUM_KV_HEADS if gemma else hf_glm.NUM_KV_HEADS if glm else heads)
    head_dim = (hf_layers.mla_head_dim(mla, path) if mla
                else positive_int(cfg, "head_dim", path, default=hf_gemma.HEAD_DIM if gemma else hidden // heads))
    fields = {
        "name": name,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": positive_int(cfg, "vocab_size", path, default=hf_gemma.VOCAB_SIZE.get(model_type)),
        "tie_word_embeddings": flag(cfg, "tie_word_embeddings", path, default=gemma),
        # Gemma's MLP takes hidden_activation (Gemma2MLP/Gemma3MLP), not hidden_act.
        "mlp": (hf_layers.mlp(cfg, path, key="hidden_activation", default="gelu_pytorch_tanh") if gemma
                else hf_layers.mlp(cfg, path)),
        "qkv_bias": hf_layers.qkv_bias(cfg, model_type, path),
        # Qwen3's and Gemma 3's attention always norms each query and key head (Qwen3Attention,
        # Qwen3MoeAttention, Gemma3Attention q_norm/k_norm; no config field); Llama 4's use_qk_norm is
        # a weightless L2 norm, which ModelSpec.qk_norm does not describe. GLM's is use_qk_norm's (hf_glm).
        "qk_norm": model_type in ("qwen3", "qwen3_moe", "gemma3_text") or (glm and flag(cfg, "use_qk_norm", path)),
        "moe": (hf_gpt_oss.moe(cfg, path) if gpt_oss else hf_glm.moe(cfg, path) if glm
                else hf_layers.moe(cfg, model_type, path, intermediate)),
        "mla": mla,
        "dsa": dsa,
    }
    # GLM's partial RoPE is read (and a YaRN factor on its rotary dims refused) before the scale.
    glm_notes = hf_glm.not_modelled(cfg, path, head_dim=head_dim) if glm else ()
    # The window and the layers without RoPE in one read (Llama 4's NoPE interval sets both), after
    # the fields above as before, so a config with several bad fields is refused for the same one.
    # Every Gemma layer rotates q and k.
    if gemma or gpt_oss:
        window = (hf_gemma.window(cfg, model_type, layers, path) if gemma
                  else hf_gpt_oss.window(cfg, layers, path))
        nope_layers = 0
    else:
        window, nope_layers = hf_layers.attention_layers(cfg, model_type, path)
    fields |= {
        "window": window,
        # Every supported model type rotates q and k (transformers' apply_rotary_pos_emb in each
        # one's Attention; DeepSeek-V3 on its qk_rope part, Llama 4 on 3 layers of 4). gpt2's learned
        # positions and mpt/bloom's ALiBi are not among the supported types.
        "position_embedding": ROPE,
        "num_nope_layers": nope_layers,
        # Each supported type's config class defines attention_dropout (0.0 by default), which its
        # attention applies to the softmax probabilities in training only (transformers 4.57.1, e.g.
        # modeling_llama.py LlamaAttention `dropout=0.0 if not self.training else self.attention_dropout`;
        # Llama4TextConfig and Gemma3TextConfig in text_config). None of their models has a hidden
        # dropout: hidden_dropout stays 0, and a stray hidden_dropout or resid_pdrop key, which those
        # models never read, is ignored as transformers ignores it.
        "attention_dropout": probability(cfg, "attention_dropout", path),
        "softmax_scale": hf_rope.softmax_scale(
            cfg, model_type, path, mla=mla, head_dim=head_dim,
            base_scale=hf_gemma.softmax_scale(cfg, head_dim, path) if gemma else None),
        # gpt-oss's sinks: one learned logit per head in every softmax row (hf_gpt_oss).
        "softmax_type": LEARNABLE if gpt_oss else VANILLA,
        "hf_repo": repo,
    }
    sources = _sources(cfg, model_type, origin_type or model_type, path)
    # DeepSeek-V3 (and Kimi K2, read as it): the MTP module it trains (depth 1: arXiv 2412.19437 s2.2, s4.2).
    mtp = hf_layers.mtp_note(cfg, path, trained_by="DeepSeek-V3's pretraining", how="an MTP depth of 1, "
                             "arXiv 2412.19437 s2.2 and s4.2",
                             hf_model="DeepseekV3Model") if model_type == "deepseek_v3" else None
    deepseek_notes = () if mtp is None else (mtp,)
    # Group-limited routing (DeepSeek-V3, GLM) is kept and priced: noted as MODELLED, first.
    moe = fields["moe"]
    routing = hf_layers.group_routing_note(moe) if isinstance(moe, MoESpec) else None
    fields["sources"] = (*sources, *(() if routing is None else (MODELLED + routing,)),
                         *(NOT_MODELLED + note for note in (*glm_notes, *deepseek_notes)))
    # Not strict: `fields` holds what hf_fields read (each value type-checked there) and the specs
    # built from it, not the file's own values.
    spec = validate_as(ModelSpec, fields, what=WHAT, path=path, strict=False)
    if not gpt_oss:
        return spec
    # gpt-oss's notes give the uncounted biases' share of the spec's own parameter count.
    assert spec.moe is not None
    notes = hf_gpt_oss.not_modelled(cfg, path, layers=layers, hidden=hidden, heads=heads, moe_spec=spec.moe,
                                    attention_bias=spec.qkv_bias, counted_params=spec.num_params)
    return spec.model_copy(update={"sources": (*spec.sources, *(NOT_MODELLED + n for n in notes))})


def _sources(cfg: dict, model_type: str, origin_type: str, path: Path) -> tuple[str, ...]:
    note = hf_rope.temperature_tuning_note(cfg, model_type, path)
    origin = f"{path} ({ORIGIN} {origin_type})"
    return (origin,) if note is None else (origin, NOT_MODELLED + note)


# How an imported model's sources name its config (_sources); origin_model_type reads it back.
ORIGIN = "Hugging Face config.json, model_type"
_ORIGIN_TYPE = re.compile(r"\(" + re.escape(ORIGIN) + r" (\w+)\)")


def origin_model_type(model: ModelSpec) -> str | None:
    """The model_type of the Hugging Face config the model was imported from, None if it was not."""
    for line in model.sources:
        found = _ORIGIN_TYPE.search(line)
        if found:
            return found.group(1)
    return None
