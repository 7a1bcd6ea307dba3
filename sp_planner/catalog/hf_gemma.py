"""Gemma 2 and Gemma 3 config.json fields that differ from the llama family's (transformers 4.57.1
models/gemma2/configuration_gemma2.py Gemma2Config, models/gemma3/configuration_gemma3.py
Gemma3TextConfig; Gemma3Config, model_type gemma3, holds the decoder in text_config).

Class defaults stand for the fields a published config leaves out (google/gemma-3-27b-pt's
text_config has no vocab_size, hidden_activation or sliding_window_pattern; gemma-3-4b-it's no
heads or head_dim either). Gemma2Attention and Gemma3Attention scale q.k by
query_pre_attn_scalar**-0.5 (modeling_gemma2.py, modeling_gemma3.py `self.scaling`) and cap every
layer's logits at attn_logit_softcapping (tanh); a layer whose layer_types entry is
"sliding_attention" attends to the sliding_window keys up to its own
(create_sliding_window_causal_mask: kv_idx > q_idx - sliding_window)."""

from __future__ import annotations

from pathlib import Path

from sp_planner.catalog.hf_fields import error, flag, positive_int, positive_number
from sp_planner.specs.attention import WindowSpec

MODEL_TYPES = ("gemma2", "gemma3", "gemma3_text")
# Class defaults (configuration_gemma2.py, configuration_gemma3.py @ transformers 4.57.1).
VOCAB_SIZE = {"gemma2": 256_000, "gemma3_text": 262_208}
# Both classes' heads (num_attention_heads 8, num_key_value_heads 4, head_dim 256): google/gemma-3-4b-it's
# text_config leaves all three out and gemma-3-12b's head_dim (16 heads of 256, not 3840 / 16).
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 8, 4, 256
_SOFTCAP = {"gemma2": 50.0, "gemma3_text": None}
_QUERY_PRE_ATTN_SCALAR = 256
_SLIDING_WINDOW = 4096
# Gemma2Config: layer i is local when (i + 1) % 2 (1:1 from the first layer); Gemma3TextConfig: when
# (i + 1) % sliding_window_pattern, default 6 (5 local : 1 global; transformers 4.50-4.52 kept the
# pattern itself, later releases derive layer_types from it).
_PATTERN = {"gemma2": 2, "gemma3_text": 6}
_LAYER_TYPES = ("sliding_attention", "full_attention")


def text_config(cfg: dict, path: Path) -> dict:
    """Gemma3Config's decoder: text_config, named by the wrapper. Embeddings are tied by the
    decoder's tie_word_embeddings (PreTrainedModel.tie_weights reads get_text_config(decoder=True)):
    a wrapper value that disagrees with it is refused, not guessed between."""
    text = cfg.get("text_config")
    if not isinstance(text, dict):
        raise error(path, "model_type 'gemma3' needs a 'text_config' mapping (Gemma3ForConditionalGeneration "
                    "holds the language model there)")
    if "tie_word_embeddings" in cfg:
        outer = flag(cfg, "tie_word_embeddings", path)
        if outer != flag(text, "tie_word_embeddings", path, default=True):
            raise error(path, f"tie_word_embeddings {str(outer).lower()} of the wrapper disagrees with its "
                        "text_config's, which transformers follows; make them equal")
    names = {key: cfg[key] for key in ("_name_or_path", "name") if key in cfg}
    return {**text, **names, "model_type": "gemma3_text"}


def softmax_scale(cfg: dict, head_dim: int, path: Path) -> float | None:
    """query_pre_attn_scalar**-0.5; None where that is 1/sqrt(head_dim), the default scale
    (Gemma 2 9B: 256 = head_dim)."""
    scalar = positive_number(cfg, "query_pre_attn_scalar", path, _QUERY_PRE_ATTN_SCALAR)
    assert scalar is not None
    return None if scalar == head_dim else scalar**-0.5


def window(cfg: dict, model_type: str, num_layers: int, path: Path) -> WindowSpec | None:
    """The local layers' window, pattern and the logit softcap (ModelSpec holds the softcap in its
    window: a softcap without local layers is refused)."""
    if model_type == "gemma3_text" and flag(cfg, "use_bidirectional_attention", path):
        raise error(path, "use_bidirectional_attention true is not supported (the planner's attention is causal)")
    key = "attn_logit_softcapping"
    softcap = positive_number(cfg, key, path, None) if key in cfg else _SOFTCAP[model_type]
    tokens = None if cfg.get("sliding_window", 0) is None else positive_int(cfg, "sliding_window", path,
                                                                           default=_SLIDING_WINDOW)
    local, global_ = layer_pattern(_is_local(cfg, model_type, num_layers, path), path)
    if tokens is None or local == 0:
        if softcap is not None:
            raise error(path, f"attn_logit_softcapping {softcap:g} without sliding-window layers is not supported "
                        "(ModelSpec keeps the softcap with the local layers' window)")
        return None
    return WindowSpec(window_tokens=tokens, local_layers=local, global_layers=global_, logit_softcapping=softcap)


def _is_local(cfg: dict, model_type: str, num_layers: int, path: Path) -> list[bool]:
    """Which layers slide: layer_types where given, else the family's pattern. A Gemma 3 config with
    both whose layer_types disagrees with sliding_window_pattern is refused: transformers 4.50-4.52
    read the pattern, later releases the list."""
    period = _PATTERN[model_type]
    if model_type == "gemma3_text":
        period = positive_int(cfg, "sliding_window_pattern", path, default=period)
    from_pattern = [(i + 1) % period != 0 for i in range(num_layers)]
    listed = cfg.get("layer_types")
    if listed is None:
        return from_pattern
    is_local = sliding_layers(listed, num_layers, path)
    if "sliding_window_pattern" in cfg and is_local != from_pattern:
        raise error(path, f"layer_types disagrees with sliding_window_pattern {period} (transformers 4.50-4.52 "
                    "read the pattern, later releases the list); drop one")
    return is_local


def sliding_layers(listed: object, num_layers: int, path: Path) -> list[bool]:
    """Which layers a layer_types list makes sliding (Gemma 2/3, gpt-oss), refusing other entries."""
    if not isinstance(listed, list) or any(entry not in _LAYER_TYPES for entry in listed):
        raise error(path, f"field 'layer_types' must be a list of \"sliding_attention\" or \"full_attention\", "
                    f"got {listed!r}")
    if len(listed) != num_layers:
        raise error(path, f"layer_types lists {len(listed)} layers, num_hidden_layers is {num_layers}")
    return [entry == "sliding_attention" for entry in listed]


def layer_pattern(is_local: list[bool], path: Path) -> tuple[int, int]:
    """(local, global) layers of the repeating pattern that starts with the local ones (WindowSpec);
    (0, 0) when no layer is local. Any other layout is refused."""
    if not any(is_local):
        return 0, 0
    local = is_local.index(False) if False in is_local else len(is_local)
    rest = is_local[local:]
    global_ = rest.index(True) if True in rest else len(rest)
    if global_ == 0:  # every layer local (Mistral-style)
        return 1, 0
    period = local + global_
    if local == 0 or is_local != [i % period < local for i in range(len(is_local))]:
        raise error(path, "layer_types is not a repeating pattern of local layers then full-attention layers from "
                    "the first layer on; not supported")
    return local, global_
