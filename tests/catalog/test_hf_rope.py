"""The softmax scale a config.json's rotary embedding implies (sp_planner.catalog.hf_rope)."""

import math
import re

import pytest

from sp_planner.catalog import import_notes, load_hf_config
from sp_planner.errors import UserInputError
from tests.catalog.hf_configs import (
    DEEPSEEK_V3,
    GEMMA2_27B,
    GEMMA3_27B_PT,
    LLAMA3_8B,
    LLAMA4_MAVERICK_TEXT,
    LLAMA4_SCOUT,
    MISTRAL_7B,
    QWEN3_32B,
    write_config,
)


@pytest.mark.parametrize(("rope", "scale"), [
    # DeepSeek-V3's config.json: mscale(40, 1.0) = 0.1 ln 40 + 1 = 1.368888; 1.368888^2 / sqrt(192) = 0.1352338
    (DEEPSEEK_V3["rope_scaling"], 0.1352338),
    ({"type": "yarn", "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707},  # DeepSeek-V2's pair:
     (0.0707 * math.log(40) + 1) ** 2 / math.sqrt(192)),  # 1.2608^2 / 13.856 = 0.11473
    ({"type": "yarn", "factor": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}, None),  # no extension: mscale 1
    ({"type": "linear", "factor": 4.0}, None),  # no mscale_all_dim: HF keeps 1/sqrt(192)
    (None, None),
])
def test_deepseek_softmax_scale_comes_from_rope_scaling_mscale_all_dim(tmp_path, rope, scale):
    spec = load_hf_config(write_config(tmp_path, {**DEEPSEEK_V3, "rope_scaling": rope}))
    assert spec.softmax_scale == (None if scale is None else pytest.approx(scale, rel=1e-6))
    assert spec.attention_scale == pytest.approx(scale or 192 ** -0.5, rel=1e-6)


@pytest.mark.parametrize(("rope", "message"), [
    # YaRN's cos/sin factor mscale(40, 1) / mscale(40, 0.707) = 1.3689 / 1.2608 lands on the qk_rope dims alone
    ({"type": "yarn", "factor": 40, "mscale": 1.0, "mscale_all_dim": 0.707},
     "rope_scaling scales the qk_rope dims of q and k alone by 1.086"),
    ({"type": "yarn", "factor": 40, "mscale_all_dim": float("nan")}, "field 'mscale_all_dim' must be a finite number"),
    ({"type": "yarn", "mscale_all_dim": 1.0}, "rope_scaling of YaRN (or with mscale_all_dim) needs a 'factor'"),
    ("yarn", "field 'rope_scaling' must be a mapping or null, got 'yarn'"),
])
def test_deepseek_rope_scaling_no_single_scale_describes_is_refused(tmp_path, rope, message):
    with pytest.raises(UserInputError, match=re.escape(message)) as refused:
        load_hf_config(write_config(tmp_path, {**DEEPSEEK_V3, "rope_scaling": rope}))
    assert "\n" not in str(refused.value)


# YaRN on the llama-style families: transformers 4.57.1 _compute_yarn_parameters' attention_factor
# multiplies cos and sin, so q.k by its square; head_dim 128 for all three fixtures.
QWEN3_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}  # Qwen3 docs


@pytest.mark.parametrize(("cfg", "rope", "scale"), [
    # 0.1 ln 4 + 1 = 1.1386294; 1.1386294^2 / sqrt(128) = 1.2964770 / 11.3137085 = 0.1145935
    (QWEN3_32B, QWEN3_YARN, 0.1145935),
    # Qwen3's max_position_embeddings 40960 is not 4 x 32768: the config's factor 4 is used (4.51.0-4.52.4
    # took 40960 / 32768 = 1.25, transformers#38224), not 1.0223.
    ({**QWEN3_32B, "max_position_embeddings": 40960}, QWEN3_YARN, 0.1145935),
    (QWEN3_32B, {"type": "yarn", "factor": 4.0}, 0.1145935),  # the old key name
    # An explicit attention_factor wins (allenai/Olmo-3's 1.2079): 1.2079^2 / sqrt(128) = 0.1289606
    (MISTRAL_7B, {**QWEN3_YARN, "attention_factor": 1.2079, "mscale": 1.0, "mscale_all_dim": 1.0}, 0.1289606),
    (MISTRAL_7B, {**QWEN3_YARN, "attention_factor": 1.0}, None),  # turned off
    # mscale alone is not read (transformers needs both): 0.1 ln 4 + 1 again
    (QWEN3_32B, {**QWEN3_YARN, "mscale": 0.707}, 0.1145935),
    (QWEN3_32B, {"rope_type": "yarn", "factor": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}, None),  # mscale(1) = 1
    # transformers 5's rope_parameters: 0.1 ln 2 + 1 = 1.0693147; ^2 / sqrt(128) = 0.1010662
    ({**LLAMA3_8B, "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 5e5}}, None, 0.1010662),
    (LLAMA3_8B, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}, None),  # Llama 3.1: cos/sin unscaled
    (LLAMA3_8B, {"type": "linear", "factor": 2.0}, None),
    (LLAMA3_8B, {"type": "dynamic", "factor": 2.0}, None),
])
def test_yarn_attention_factor_squared_is_the_softmax_scale(tmp_path, cfg, rope, scale):
    spec = load_hf_config(write_config(tmp_path, {**cfg, "rope_scaling": rope}))
    assert spec.softmax_scale == (None if scale is None else pytest.approx(scale, rel=1e-6))
    assert spec.attention_scale == pytest.approx(scale or 128 ** -0.5, rel=1e-6)


@pytest.mark.parametrize(("cfg", "rope", "message"), [
    # Mistral-style inert mscale = mscale_all_dim = 1: transformers >= 4.51 gives 1, earlier 1 + 0.1 ln 16
    (MISTRAL_7B, {"rope_type": "yarn", "factor": 16.0, "mscale": 1.0, "mscale_all_dim": 1.0},
     "rope_scaling of YaRN sets mscale 1 and mscale_all_dim 1 but no attention_factor: transformers >= 4.51 "
     "scales cos/sin by mscale(f, mscale) / mscale(f, mscale_all_dim) = 1, earlier releases by 0.1 ln(f) + 1 = "
     "1.277; set attention_factor"),
    (QWEN3_32B, {"rope_type": "yarn", "original_max_position_embeddings": 32768}, "rope_scaling of YaRN needs a "
     "'factor'"),
    (QWEN3_32B, {"rope_type": "yarn", "factor": 0.5}, "rope_scaling YaRN factor 0.5 is below 1"),
    (QWEN3_32B, {**QWEN3_YARN, "attention_factor": 0}, "field 'attention_factor' must be a positive number, got 0"),
    (QWEN3_32B, {**QWEN3_YARN, "factor": "4"}, "field 'factor' must be a finite number, got '4'"),
    (QWEN3_32B, {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]},
     "rope_scaling rope_type 'longrope' is not supported; supported: default, linear, dynamic, llama3, yarn"),
    (QWEN3_32B, {"factor": 4.0}, "rope_scaling sets a factor but no rope_type"),
    (LLAMA3_8B, "yarn", "field 'rope_scaling' must be a mapping or null, got 'yarn'"),
    # One factor on some layers only: Llama 4's NoPE layers, Gemma 3's local layers (own rotary
    # embedding), Gemma 2 (rope_scaling read from transformers 4.50 on only).
    (LLAMA4_MAVERICK_TEXT, QWEN3_YARN, "YaRN's attention factor 1.139 scales the rotary cos/sin of only some of "
     "llama4_text's layers"),
    (GEMMA2_27B, QWEN3_YARN, "of only some of gemma2's layers"),
])
def test_yarn_no_single_scale_describes_or_that_releases_read_apart_is_refused(tmp_path, cfg, rope, message):
    with pytest.raises(UserInputError, match=re.escape(message)) as refused:
        load_hf_config(write_config(tmp_path, {**cfg, "rope_scaling": rope}))
    assert "\n" not in str(refused.value)


def test_gemma3_yarn_on_its_global_layers_only_is_refused(tmp_path):
    cfg = {**GEMMA3_27B_PT, "text_config": {**GEMMA3_27B_PT["text_config"], "rope_scaling": QWEN3_YARN}}
    with pytest.raises(UserInputError, match="of only some of gemma3_text's layers"):
        load_hf_config(write_config(tmp_path, cfg))
    per_type = {"full_attention": QWEN3_YARN, "sliding_attention": {"rope_type": "default"}}
    cfg = {**GEMMA3_27B_PT, "text_config": {**GEMMA3_27B_PT["text_config"], "rope_scaling": None,
                                            "rope_parameters": per_type}}
    with pytest.raises(UserInputError, match=r"rope_parameters gives the layer types different attention factors "
                                             r"\(1, 1.139\)"):
        load_hf_config(write_config(tmp_path, cfg, "b"))


def test_llama4_temperature_tuning_is_noted_not_modelled(tmp_path):
    # Llama4TextConfig: attn_temperature_tuning on (4), attn_scale 0.1, floor_scale 8192 by default;
    # 1 + 0.1 ln(1 + floor(8192 / 8192)) = 1 + 0.1 ln 2 = 1.0693 from position 8191.
    spec = load_hf_config(write_config(tmp_path, LLAMA4_SCOUT))
    (note,) = import_notes(spec)
    assert note.startswith("attn_temperature_tuning: Llama 4's full-attention (NoPE) layers scale each query by "
                           "1 + 0.1 x ln(1 + floor((position + 1) / 8192)), x1.069 from position 8191 on")
    assert spec.softmax_scale is None
    off = {**LLAMA4_MAVERICK_TEXT, "attn_temperature_tuning": False}
    assert import_notes(load_hf_config(write_config(tmp_path, off, "off"))) == []
    assert import_notes(load_hf_config(write_config(tmp_path, QWEN3_32B, "q"))) == []
    with pytest.raises(UserInputError, match=r"'attn_temperature_tuning' must be true or false \(or an integer, as "
                                             r"Llama-4-Scout's 4\), got 'yes'"):
        load_hf_config(write_config(tmp_path, {**LLAMA4_MAVERICK_TEXT, "attn_temperature_tuning": "yes"}, "bad"))


def test_llama4_published_integer_temperature_tuning_is_read_as_on(tmp_path):
    # meta-llama/Llama-4-Scout-17B-16E's config.json holds "attn_temperature_tuning": 4 (with
    # attn_scale 0.1, floor_scale 8192), Llama4TextConfig's default; the attention reads it as true.
    text = {**LLAMA4_SCOUT["text_config"], "attn_temperature_tuning": 4, "attn_scale": 0.1, "floor_scale": 8192}
    spec = load_hf_config(write_config(tmp_path, {**LLAMA4_SCOUT, "text_config": text}))
    (note,) = import_notes(spec)
    assert note.startswith("attn_temperature_tuning: Llama 4's full-attention (NoPE) layers scale each query by "
                           "1 + 0.1 x ln(1 + floor((position + 1) / 8192)), x1.069 from position 8191 on")
    off = {**LLAMA4_MAVERICK_TEXT, "attn_temperature_tuning": 0}
    assert import_notes(load_hf_config(write_config(tmp_path, off, "off"))) == []
    with pytest.raises(UserInputError, match="'attn_temperature_tuning' must be true or false .*, got -1"):
        load_hf_config(write_config(tmp_path, {**LLAMA4_MAVERICK_TEXT, "attn_temperature_tuning": -1}, "bad"))
