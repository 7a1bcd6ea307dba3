"""Kimi K2 config.json (model_type kimi_k2) read as DeepSeek-V3's architecture (catalog.hf_kimi)."""

import math

import pytest

from sp_planner.catalog import load_hf_config, load_model
from tests.catalog.hf_configs import ARCH_FIELDS, import_error, write_config

# moonshotai/Kimi-K2-Instruct config.json (July 2025; -Base has the same architecture fields): the
# architecture as Megatron-Bridge 548c0f9c4 KimiK2Provider states it (61 layers, hidden 7168, ffn
# 18432, 384 experts of 2048, 1 shared, [0] + [1] * 60 MoE layers, 64 heads, top 8 sigmoid, q/kv lora
# 1536/512, qk 128 + 64, v 128, rope factor 32 with mscale and mscale_all_dim 1.0, beta 1.0, theta
# 50000, routed scaling 2.827, 1 group), with the config.json's own keys and vocab_size 163840 (the
# fields NVIDIA TensorRT-Model-Optimizer's default_kimik2_eagle_config copies from it).
KIMI_K2_INSTRUCT = {
    "_name_or_path": "moonshotai/Kimi-K2-Instruct", "architectures": ["DeepseekV3ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}, "model_type": "kimi_k2",
    "attention_bias": False, "attention_dropout": 0.0, "first_k_dense_replace": 1, "hidden_act": "silu",
    "hidden_size": 7168, "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 131072,
    "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 384, "n_shared_experts": 1,
    "norm_topk_prob": True, "num_attention_heads": 64, "num_experts_per_tok": 8, "num_hidden_layers": 61,
    "num_key_value_heads": 64, "num_nextn_predict_layers": 0, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "rope_theta": 50000.0, "routed_scaling_factor": 2.827,
    "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "scoring_func": "sigmoid", "seq_aux": True, "tie_word_embeddings": False, "topk_group": 1,
    "topk_method": "noaux_tc", "vocab_size": 163840,
}

# Hand count (ModelSpec's layer shapes; Megatron-Bridge's mapping of the same weights):
_ATTENTION = (7168 * 1536 + 1536 + 1536 * 64 * 192  # q_a, q_a_layernorm, q_b
              + 7168 * (512 + 64) + 512 + 512 * 64 * (128 + 128)  # kv_a_proj_with_mqa, kv_a_layernorm, kv_b
              + 64 * 128 * 7168)  # o_proj: 101,124,096 a layer
_EXPERT = 3 * 7168 * 2048  # gate, up, down
_ROUTER = 7168 * 384
_DENSE_MLP = 3 * 7168 * 18432
_NORMS = 2 * 7168
_EMBEDDING = 2 * 163840 * 7168 + 7168  # untied input and output tables, the final norm
K2_PARAMS = 61 * (_ATTENTION + _NORMS) + _DENSE_MLP + 60 * (385 * _EXPERT + _ROUTER) + _EMBEDDING
K2_ACTIVE = 61 * (_ATTENTION + _NORMS) + _DENSE_MLP + 60 * (9 * _EXPERT + _ROUTER) + _EMBEDDING


def test_kimi_k2_imports_as_the_deepseek_v3_architecture(tmp_path):
    spec = load_hf_config(write_config(tmp_path, KIMI_K2_INSTRUCT))
    assert spec.name == "Kimi-K2-Instruct" and spec.hf_repo == "moonshotai/Kimi-K2-Instruct"
    shape = (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim)
    assert shape == (61, 7168, 64, 64, 160)
    assert (spec.moe.num_experts, spec.moe.top_k, spec.moe.num_shared_experts, spec.moe.first_dense_layers) == (
        384, 8, 1, 1)
    assert spec.moe.moe_intermediate_size == 2048 and spec.moe.router_score_function == "sigmoid"
    assert spec.mla.q_lora_rank == 1536 and spec.mla.kv_lora_rank == 512
    # YaRN factor 32, mscale_all_dim 1: (0.1 ln 32 + 1)^2 / sqrt(192).
    assert spec.softmax_scale == pytest.approx((0.1 * math.log(32) + 1) ** 2 / math.sqrt(192), rel=1e-12)
    assert spec.sources == (f"{write_config(tmp_path, KIMI_K2_INSTRUCT)} (Hugging Face config.json, model_type "
                            "kimi_k2)",)
    assert spec.num_params == K2_PARAMS == 1_026_408_209_408
    assert spec.num_active_params == K2_ACTIVE == 32_861_477_888
    # Published: 1.04T total, 32.6B activated (arXiv:2507.20534); the README's 1T / 32B.
    assert spec.num_params / 1.04e12 == pytest.approx(1, abs=0.014)
    assert spec.num_active_params / 32.6e9 == pytest.approx(1, abs=0.01)


def test_builtin_kimi_k2_is_the_imported_config():
    spec = load_model("kimi-k2")
    assert spec.name == "Kimi-K2" and spec.hf_repo == "moonshotai/Kimi-K2-Instruct"
    assert spec.num_params == K2_PARAMS and spec.num_active_params == K2_ACTIVE
    assert spec.softmax_scale == pytest.approx((0.1 * math.log(32) + 1) ** 2 / math.sqrt(192), rel=1e-12)


def test_builtin_matches_the_import_field_by_field(tmp_path):
    spec = load_hf_config(write_config(tmp_path, KIMI_K2_INSTRUCT))
    assert spec.model_dump(exclude=ARCH_FIELDS) == load_model("Kimi-K2").model_dump(exclude=ARCH_FIELDS)


def test_the_0905_and_thinking_factor_64_changes_only_the_scale(tmp_path):
    cfg = {**KIMI_K2_INSTRUCT, "rope_scaling": {**KIMI_K2_INSTRUCT["rope_scaling"], "factor": 64.0},
           "max_position_embeddings": 262144}
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert spec.softmax_scale == pytest.approx((0.1 * math.log(64) + 1) ** 2 / math.sqrt(192), rel=1e-12)
    assert spec.num_params == K2_PARAMS


def test_native_kimi_k2_architecture_name_is_read_too(tmp_path):
    # Megatron-Bridge registers KimiK2Bridge for KimiK2ForCausalLM / kimi_k2 with DeepSeek-V3's mapping.
    spec = load_hf_config(write_config(tmp_path, {**KIMI_K2_INSTRUCT, "architectures": ["KimiK2ForCausalLM"]}))
    assert spec.num_params == K2_PARAMS


@pytest.mark.parametrize("architectures", [["Qwen3MoeForCausalLM"], None, "DeepseekV3ForCausalLM",
                                           ["DeepseekV3ForCausalLM", "LlamaForCausalLM"]])
def test_kimi_k2_of_another_architecture_is_refused_in_one_line(tmp_path, architectures):
    cfg = {key: value for key, value in KIMI_K2_INSTRUCT.items() if key != "architectures"}
    if architectures is not None:
        cfg["architectures"] = architectures
    message = import_error(tmp_path, cfg)
    assert f"model_type 'kimi_k2' with architectures {architectures!r} is not supported" in message
    assert "DeepseekV3ForCausalLM" in message


def test_a_softmax_kimi_k2_router_is_refused_in_one_line(tmp_path):
    # Kimi K2's modeling_deepseek.py is DeepSeek-V3's: MoEGate raises NotImplementedError for a softmax scoring_func.
    message = import_error(tmp_path, {**KIMI_K2_INSTRUCT, "scoring_func": "softmax"})
    assert ("field 'scoring_func' \"softmax\" is not supported: no implementation of DeepSeek-V3's architecture"
            in message)
