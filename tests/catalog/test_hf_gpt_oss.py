"""gpt-oss config.json (catalog.hf_gpt_oss): every layer MoE with biased experts, 1:1 sliding and
full layers from layer 0, attention sinks, YaRN; parameter counts against OpenAI's model card."""

import math

import pytest

from sp_planner.catalog import import_notes, load_hf_config, load_model
from sp_planner.catalog.hf_config import origin_model_type
from tests.catalog.hf_configs import ARCH_FIELDS, GPT_OSS_20B, GPT_OSS_120B, import_error, without, write_config

# YaRN factor 32 (0.1 ln 32 + 1) on the rotary cos and sin of q and k: q.k x its square, over sqrt(64).
SCALE = (0.1 * math.log(32) + 1) ** 2 / 8


def _counts(layers: int, experts: int) -> tuple[int, int, int, int]:
    """(counted total, counted active, uncounted biases and sinks, of them active), by hand."""
    h, heads, kv, d, width, vocab, top_k = 2880, 64, 8, 64, 2880, 201088, 4
    attention = h * (heads * d + 2 * kv * d) + heads * d * h + (heads * d + 2 * kv * d)  # q/k/v/o, q/k/v biases
    expert = 3 * h * width
    norms = 2 * h
    embedding = 2 * vocab * h + h  # untied input and output tables, final norm
    total = layers * (attention + norms + experts * expert + h * experts) + embedding
    active = layers * (attention + norms + top_k * expert + h * experts) + embedding
    bias = 2 * width + h  # an expert's gate_up_proj_bias and down_proj_bias
    extra = layers * (h + heads + experts + experts * bias)  # o_proj bias, sinks, router bias, experts'
    extra_active = layers * (h + heads + experts + top_k * bias)
    return total, active, extra, extra_active


@pytest.mark.parametrize(("cfg", "layers", "experts", "published_total", "published_active"), [
    # OpenAI, gpt-oss-120b & gpt-oss-20b model card (2025-08-05) table 1: total 116.83B / 20.91B,
    # active 5.13B / 3.61B, the active count without the input embedding table.
    (GPT_OSS_120B, 36, 128, 116.83e9, 5.13e9),
    (GPT_OSS_20B, 24, 32, 20.91e9, 3.61e9),
])
def test_gpt_oss_imports_with_published_parameter_counts(tmp_path, cfg, layers, experts, published_total,
                                                         published_active):
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (
        layers, 2880, 64, 8, 64)
    assert spec.qkv_bias and not spec.linear_bias and not spec.tie_word_embeddings and spec.mlp == "swiglu"
    moe = spec.moe
    assert (moe.num_experts, moe.top_k, moe.moe_intermediate_size, moe.num_shared_experts) == (experts, 4, 2880, 0)
    assert moe.first_dense_layers == 0 and moe.layer_step == 1 and moe.expert_bias
    assert moe.router_score_function == "softmax"  # top-k of the logits, then a softmax over the k
    w = spec.window
    assert (w.window_tokens, w.kind, w.local_layers, w.global_layers) == (128, "sliding", 1, 1)
    assert spec.num_local_layers == layers // 2
    assert spec.softmax_type == "learnable"
    assert spec.softmax_scale == pytest.approx(SCALE, rel=1e-12)
    assert origin_model_type(spec) == "gpt_oss"
    total, active, extra, extra_active = _counts(layers, experts)
    assert (spec.num_params, spec.num_active_params) == (total, active)
    # The card's figures to their two decimals (+-0.005B).
    assert spec.num_params + extra == pytest.approx(published_total, abs=0.005e9)
    assert spec.num_active_params + extra_active - 201088 * 2880 == pytest.approx(published_active, abs=0.005e9)
    notes = import_notes(spec)
    assert f"({extra:,} parameters, {extra_active:,} of them active) are not counted" in notes[0]
    # Their share of all the parameters, counted and not: 0.032% (20b), 0.034% (120b).
    share = {24: "0.032%", 36: "0.034%"}[layers]
    assert f"{100 * extra / (total + extra):.3f}%" == share and f": {share} of the model's parameters" in notes[0]
    assert "clamped SwiGLU (gate <= 7, |up| <= 7, (up + 1) x gate x sigmoid(1.702 gate))" in notes[1]
    assert "attention sinks" in notes[2] and "mxfp4" in notes[3]


def test_class_defaults_stand_for_what_a_config_leaves_out(tmp_path):
    # GptOssConfig: layer_types (i + 1) % 2 sliding, sliding_window 128, attention_bias true,
    # num_experts_per_tok 4, rope_parameters YaRN factor 32.
    cfg = GPT_OSS_20B
    for key in ("layer_types", "sliding_window", "attention_bias", "num_experts_per_tok", "experts_per_token",
                "rope_scaling", "quantization_config"):
        cfg = without(cfg, key)
    spec = load_hf_config(write_config(tmp_path, cfg))
    reference = load_hf_config(write_config(tmp_path, GPT_OSS_20B, folder="full"))
    assert spec.model_dump(exclude={"name", "sources"}) == reference.model_dump(exclude={"name", "sources"})
    assert len(import_notes(spec)) == 3  # no checkpoint quantization to mention


def test_attention_bias_false_and_transformers_5_rope_parameters(tmp_path):
    cfg = {**without(GPT_OSS_20B, "rope_scaling"), "attention_bias": False,
           "rope_parameters": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                               "original_max_position_embeddings": 4096, "rope_theta": 150000}}
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert not spec.qkv_bias and spec.softmax_scale == pytest.approx(SCALE, rel=1e-12)
    # Without attention biases the uncounted o_proj bias is gone from the note's count.
    assert f"({_counts(24, 32)[2] - 24 * 2880:,} parameters" in import_notes(spec)[0]


@pytest.mark.parametrize(("cfg", "expected"), [
    ({**GPT_OSS_20B, "experts_per_token": 2}, "experts_per_token 2 disagrees with num_experts_per_tok 4"),
    ({**GPT_OSS_20B, "sliding_window": None}, "sliding_window null with sliding_attention layers is not supported"),
    ({**GPT_OSS_20B, "layer_types": ["full_attention", "sliding_attention"] * 12},
     "layer_types is not a repeating pattern of local layers then full-attention layers"),
    ({**GPT_OSS_20B, "layer_types": ["sliding_attention"] * 23},
     "layer_types lists 23 layers, num_hidden_layers is 24"),
    ({**GPT_OSS_20B, "num_experts_per_tok": 40}, "num_experts_per_tok 40 exceeds num_local_experts 32"),
])
def test_bad_gpt_oss_configs_are_refused_in_one_line(tmp_path, cfg, expected):
    assert expected in import_error(tmp_path, cfg)


def test_full_attention_everywhere_has_no_window(tmp_path):
    spec = load_hf_config(write_config(tmp_path, {**GPT_OSS_20B, "layer_types": ["full_attention"] * 24}))
    assert spec.window is None and spec.softmax_type == "learnable"


@pytest.mark.parametrize(("name", "cfg", "layers", "experts"), [("gpt-oss-20b", GPT_OSS_20B, 24, 32),
                                                               ("gpt-oss-120b", GPT_OSS_120B, 36, 128)])
def test_builtin_is_the_imported_config_with_the_same_notes(tmp_path, name, cfg, layers, experts):
    imported = load_hf_config(write_config(tmp_path, cfg))
    builtin = load_model(name.upper())
    assert builtin.name == name and builtin.hf_repo == f"openai/{name}"
    assert builtin.model_dump(exclude=ARCH_FIELDS) == imported.model_dump(exclude=ARCH_FIELDS)
    assert (builtin.num_params, builtin.num_active_params) == _counts(layers, experts)[:2]
    assert import_notes(builtin) == import_notes(imported) and len(import_notes(builtin)) == 4
