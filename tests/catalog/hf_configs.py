"""Trimmed copies of published Hugging Face config.json files and helpers, shared by the tests of
sp_planner.catalog.hf_config, hf_layers and hf_rope."""

import json

import pytest

from sp_planner.catalog import load_hf_config
from sp_planner.errors import UserInputError

# Trimmed copies of the published config.json files (fields the loader reads, plus typical extras).
LLAMA3_8B = {
    "_name_or_path": "meta-llama/Meta-Llama-3-8B",
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
}
# Llama-2-7B's config predates num_key_value_heads and head_dim: MHA and hidden/heads by default.
LLAMA2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
}
MISTRAL_7B = {
    "_name_or_path": "mistralai/Mistral-7B-v0.1",
    "model_type": "mistral",
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "head_dim": None,
    "sliding_window": 4096,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}
MIXTRAL_8X7B = {
    "_name_or_path": "mistralai/Mixtral-8x7B-v0.1",
    "model_type": "mixtral",
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "router_aux_loss_coef": 0.02,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}
QWEN25_7B = {
    "_name_or_path": "Qwen/Qwen2.5-7B",
    "model_type": "qwen2",
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
}
QWEN3_32B = {
    "model_type": "qwen3",
    "hidden_act": "silu",
    "hidden_size": 5120,
    "head_dim": 128,
    "intermediate_size": 25600,
    "num_attention_heads": 64,
    "num_hidden_layers": 64,
    "num_key_value_heads": 8,
    "vocab_size": 151936,
    "attention_bias": False,
    "tie_word_embeddings": False,
}

ARCH_FIELDS = {"name", "sources", "hf_repo"}


# Qwen/Qwen3-30B-A3B and deepseek-ai/DeepSeek-V3 config.json (the fields the loader reads, plus
# routing extras it ignores); values as in shared reference moe_fp8_pipeline_frameworks.md 5.1-5.2.
QWEN3_30B_A3B = {
    "_name_or_path": "Qwen/Qwen3-30B-A3B", "model_type": "qwen3_moe", "hidden_act": "silu",
    "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
    "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
    "vocab_size": 151936, "tie_word_embeddings": False, "attention_bias": False,
}
DEEPSEEK_V3 = {
    "_name_or_path": "deepseek-ai/DeepSeek-V3", "model_type": "deepseek_v3", "hidden_act": "silu",
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "num_nextn_predict_layers": 1,
    "vocab_size": 129280, "tie_word_embeddings": False,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},  # shared reference models.json
}

# meta-llama/Llama-4-Scout-17B-16E config.json (Llama4Config: the decoder in text_config, the vision
# encoder beside it, ignored) and Maverick's text_config alone (model_type llama4_text); values as in
# shared reference moe_fp8_pipeline_frameworks.md 5.4 and the published config.json.
_LLAMA4_TEXT = {
    "model_type": "llama4_text", "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 8192,
    "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
    "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
    "attention_chunk_size": 8192, "no_rope_layers": [1, 1, 1, 0] * 12, "vocab_size": 202048,
    "attention_bias": False, "use_qk_norm": True, "rope_theta": 500000.0,
}
LLAMA4_SCOUT = {
    "_name_or_path": "meta-llama/Llama-4-Scout-17B-16E", "model_type": "llama4", "tie_word_embeddings": False,
    "text_config": _LLAMA4_TEXT, "vision_config": {"hidden_size": 1408, "num_hidden_layers": 34},
}
LLAMA4_MAVERICK_TEXT = {**_LLAMA4_TEXT, "_name_or_path": "meta-llama/Llama-4-Maverick-17B-128E",
                        "num_local_experts": 128, "interleave_moe_layer_step": 2,
                        "moe_layers": list(range(1, 48, 2)), "tie_word_embeddings": False}


def write_config(tmp_path, cfg, folder="ckpt"):
    path = tmp_path / folder / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def imported(tmp_path, cfg, folder="ckpt"):
    """The model sp-planner imports from `cfg` written as folder/config.json."""
    return load_hf_config(write_config(tmp_path, cfg, folder))


def without(cfg, key):
    return {k: v for k, v in cfg.items() if k != key}


def import_error(tmp_path, cfg) -> str:
    path = write_config(tmp_path, cfg)
    with pytest.raises(UserInputError) as info:
        load_hf_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# google/gemma-2-27b config.json (transformers 4.42.0.dev0), as the copies the catalog cites hold it:
# https://huggingface.co/EdgerunnersArchive/google-gemma-2-27b-it-ortho/blame/main/config.json and
# https://huggingface.co/shuyuej/gemma-2-27b-GPTQ/blob/main/config.json (shared reference models.json),
# field for field as NVIDIA-NeMo/Megatron-Bridge tests/unit_tests/models/gemma/test_gemma2_bridge.py
# gemma2_27b_config_dict has it (there with transformers 5's rope_parameters).
GEMMA2_27B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
    "final_logit_softcapping": 30.0, "head_dim": 128, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 4608, "initializer_range": 0.02,
    "intermediate_size": 36864, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 32,
    "num_hidden_layers": 46, "num_key_value_heads": 16, "pad_token_id": 0, "query_pre_attn_scalar": 144,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "sliding_window_size": 4096,
    "torch_dtype": "float32", "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 256000,
}
# google/gemma-2-9b: the same keys (https://huggingface.co/ashercn97/blanked-v011/blob/main/config.json,
# _name_or_path google/gemma-2-9b).
GEMMA2_9B = {**GEMMA2_27B, "_name_or_path": "google/gemma-2-9b", "hidden_size": 3584, "intermediate_size": 14336,
             "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
             "query_pre_attn_scalar": 256}
# https://huggingface.co/google/gemma-3-27b-pt/blob/main/config.json (transformers 4.50.0.dev0) as
# NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_gemma3.py GEMMA3_27B_MINI_CONFIG
# copies it (there with num_hidden_layers 6 and sliding_window 4 "Modified for testing"; 62 and 1024
# restored from google-deepmind/gemma _gemma.py Gemma3_27B). The text_config leaves vocab_size,
# hidden_activation, tie_word_embeddings and sliding_window_pattern to Gemma3TextConfig's defaults.
GEMMA3_27B_PT = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504, "model_type": "gemma3_text",
        "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16, "query_pre_attn_scalar": 168,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}


# https://huggingface.co/openai/gpt-oss-120b/raw/main/config.json (transformers 4.55.0.dev0; the
# layer_types list is 18 x [sliding, full]), field for field as GptOssConfig reads it; -20b has 24
# layers and 32 experts (https://huggingface.co/openai/gpt-oss-20b/blob/main/config.json).
GPT_OSS_120B = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0, "eos_token_id": 200002,
    "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
    "initializer_range": 0.02, "intermediate_size": 2880, "layer_types": ["sliding_attention", "full_attention"] * 18,
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4,
    "num_hidden_layers": 36, "num_key_value_heads": 8, "num_local_experts": 128, "output_router_logits": False,
    "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0", "use_cache": True, "vocab_size": 201088,
}
GPT_OSS_20B = {**GPT_OSS_120B, "num_hidden_layers": 24, "num_local_experts": 32,
               "layer_types": ["sliding_attention", "full_attention"] * 12}
