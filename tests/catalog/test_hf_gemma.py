"""Gemma 2 and Gemma 3 config.json files (sp_planner.catalog.hf_gemma)."""

import math
import re

import pytest

from sp_planner.catalog import load_hf_config
from sp_planner.errors import UserInputError
from tests.catalog.hf_configs import GEMMA2_9B, GEMMA2_27B, GEMMA3_27B_PT, write_config

GEMMA3_TEXT = GEMMA3_27B_PT["text_config"]


def _load(tmp_path, cfg, folder="ckpt"):
    return load_hf_config(write_config(tmp_path, cfg, folder))


def _gemma3(**text):
    return {**GEMMA3_27B_PT, "text_config": {**GEMMA3_TEXT, **text}}


def test_gemma2_27b_softmax_scale_softcap_and_alternating_windows(tmp_path):
    spec = _load(tmp_path, GEMMA2_27B)
    # HF Gemma2Attention scaling = query_pre_attn_scalar**-0.5 = 144**-0.5 = 1/12, not 128**-0.5 = 0.0884.
    assert spec.softmax_scale == pytest.approx(1 / 12, rel=1e-12)
    w = spec.window
    assert (w.window_tokens, w.kind, w.local_layers, w.global_layers, w.logit_softcapping) == (4096, "sliding", 1, 1,
                                                                                               50.0)
    assert spec.num_local_layers == 23  # 46 layers, layer 0 local, layer 1 global, ...
    assert (spec.tie_word_embeddings, spec.mlp, spec.qkv_bias, spec.qk_norm) == (True, "geglu", False, False)


def test_gemma2_9b_query_pre_attn_scalar_equal_to_head_dim_is_the_default_scale(tmp_path):
    spec = _load(tmp_path, GEMMA2_9B)
    assert spec.softmax_scale is None and spec.attention_scale == 1 / 16  # 256**-0.5
    assert spec.hf_repo == "google/gemma-2-9b"


def test_gemma3_27b_reads_its_text_config_and_the_class_defaults(tmp_path):
    spec = _load(tmp_path, GEMMA3_27B_PT)
    # text_config leaves vocab_size (262,208), hidden_activation (gelu_pytorch_tanh), tie (true) and
    # sliding_window_pattern (6: five local then one global) to Gemma3TextConfig.
    assert (spec.vocab_size, spec.mlp, spec.tie_word_embeddings, spec.qk_norm) == (262208, "geglu", True, True)
    w = spec.window
    assert (w.window_tokens, w.local_layers, w.global_layers, w.logit_softcapping) == (1024, 5, 1, None)
    assert spec.num_local_layers == 52  # 10 x 5 + the last 2 of 62
    assert spec.softmax_scale == pytest.approx(1 / math.sqrt(168), rel=1e-12)  # 0.07715
    assert spec.sources[0].endswith("model_type gemma3_text)")
    assert load_hf_config(write_config(tmp_path, GEMMA3_27B_PT, "gemma-3-27b-pt")).name == str(
        tmp_path / "gemma-3-27b-pt" / "config.json")  # no _name_or_path: the file names it


def test_gemma3_text_alone_is_the_same_decoder(tmp_path):
    # Gemma3ForCausalLM checkpoints (gemma-3-1b) hold the text config at the top level.
    wrapped = _load(tmp_path, GEMMA3_27B_PT, "a")
    alone = _load(tmp_path, {**GEMMA3_TEXT, "_name_or_path": "google/gemma-3-27b-pt"}, "b")
    assert alone.model_dump(exclude={"name", "sources", "hf_repo"}) == wrapped.model_dump(
        exclude={"name", "sources", "hf_repo"})
    assert alone.hf_repo == "google/gemma-3-27b-pt"


@pytest.mark.parametrize(("text", "local", "global_"), [
    ({"sliding_window_pattern": 4}, 3, 1),
    ({"sliding_window_pattern": 2}, 1, 1),
    # transformers >= 4.53 writes layer_types; 62 = 10 x (5 + 1) + 2 local.
    ({"layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 10 + ["sliding_attention"] * 2}, 5, 1),
    ({"layer_types": ["sliding_attention"] * 62}, 1, 0),  # every layer local
    ({"layer_types": (["sliding_attention"] * 2 + ["full_attention"] * 2) * 15 + ["sliding_attention"] * 2}, 2, 2),
])
def test_gemma3_layer_pattern_from_sliding_window_pattern_or_layer_types(tmp_path, text, local, global_):
    w = _load(tmp_path, _gemma3(**text)).window
    assert (w.local_layers, w.global_layers) == (local, global_)


@pytest.mark.parametrize("text", [{"sliding_window_pattern": 1}, {"layer_types": ["full_attention"] * 62},
                                  {"sliding_window": None}])
def test_gemma3_without_local_layers_has_no_window(tmp_path, text):
    assert _load(tmp_path, _gemma3(**text)).window is None


def test_gemma3_4b_and_12b_take_the_class_heads_and_head_dim_their_configs_leave_out(tmp_path):
    # google/gemma-3-4b-it's text_config names no heads, KV heads or head_dim; Gemma3TextConfig's
    # 8, 4 and 256 are the model's (q_proj 2560 -> 2048 = 8 x 256). gemma-3-12b's names 16 heads and
    # 8 KV heads but no head_dim: 256, not 3840 / 16 = 240. query_pre_attn_scalar's default 256 is
    # then 1/sqrt(head_dim), the default scale.
    text = {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024}
    spec = _load(tmp_path, {**GEMMA3_27B_PT, "text_config": text}, "4b")
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.vocab_size) == (8, 4, 256, 262208)
    assert spec.softmax_scale is None and spec.window.local_layers == 5 and spec.window.global_layers == 1
    twelve = {**text, "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
              "num_attention_heads": 16, "num_key_value_heads": 8}
    spec = _load(tmp_path, {**GEMMA3_27B_PT, "text_config": twelve}, "12b")
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim) == (16, 8, 256)


def test_gemma2_softcap_defaults_to_50_and_null_turns_it_off(tmp_path):
    cfg = {k: v for k, v in GEMMA2_27B.items() if k != "attn_logit_softcapping"}
    assert _load(tmp_path, cfg, "a").window.logit_softcapping == 50.0  # Gemma2Config default
    assert _load(tmp_path, {**GEMMA2_27B, "attn_logit_softcapping": None}, "b").window.logit_softcapping is None


@pytest.mark.parametrize(("cfg", "message"), [
    ({**GEMMA3_27B_PT, "text_config": None}, "model_type 'gemma3' needs a 'text_config' mapping"),
    (_gemma3(use_bidirectional_attention=True), "use_bidirectional_attention true is not supported"),
    (_gemma3(hidden_activation="relu"), "field 'hidden_activation' 'relu' is not supported"),
    (_gemma3(query_pre_attn_scalar=-168), "field 'query_pre_attn_scalar' must be a positive number, got -168"),
    (_gemma3(query_pre_attn_scalar="168"), "field 'query_pre_attn_scalar' must be a finite number, got '168'"),
    ({**GEMMA2_27B, "sliding_window": None}, "attn_logit_softcapping 50 without sliding-window layers"),
    (_gemma3(layer_types=["full_attention"] + ["sliding_attention"] * 61), "is not a repeating pattern"),
    (_gemma3(layer_types=["sliding_attention", "full_attention"] * 30 + ["full_attention"] * 2),
     "is not a repeating pattern"),
    (_gemma3(layer_types=["sliding_attention"] * 61), "layer_types lists 61 layers, num_hidden_layers is 62"),
    (_gemma3(layer_types=["chunked_attention"] * 62), "field 'layer_types' must be a list of"),
    (_gemma3(sliding_window_pattern=6, layer_types=["sliding_attention", "full_attention"] * 31),
     "layer_types disagrees with sliding_window_pattern 6"),
    ({**GEMMA3_27B_PT, "tie_word_embeddings": False}, "tie_word_embeddings false of the wrapper disagrees"),
])
def test_odd_gemma_configs_are_refused_in_one_line(tmp_path, cfg, message):
    with pytest.raises(UserInputError, match=re.escape(message)) as refused:
        _load(tmp_path, cfg)
    assert "\n" not in str(refused.value)


def test_gemma3_linear_rope_on_its_global_layers_keeps_the_scale(tmp_path):
    # gemma-3-27b-pt's rope_scaling {linear, factor 8} leaves cos/sin unscaled, in either spelling
    # transformers 5 writes (one mapping, or one per layer type).
    per_type = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    spec = _load(tmp_path, _gemma3(rope_scaling=None, rope_parameters=per_type))
    assert spec.softmax_scale == pytest.approx(168**-0.5, rel=1e-12)
