"""Hugging Face config.json -> ModelSpec, checked against the built-in specs of the same models."""

import json
import math
import re

import pytest

from sp_planner.catalog import load_hf_config, load_model
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


@pytest.mark.parametrize(
    ("cfg", "builtin"),
    [
        (LLAMA3_8B, "Llama-3-8B"),
        (LLAMA2_7B, "Llama-2-7B"),
        (MISTRAL_7B, "Mistral-7B"),
        (MIXTRAL_8X7B, "Mixtral-8x7B"),
        (QWEN25_7B, "Qwen2.5-7B"),
        (QWEN3_32B, "Qwen3-32B"),
        (QWEN3_30B_A3B, "Qwen3-30B-A3B"),
        (DEEPSEEK_V3, "DeepSeek-V3"),
        (LLAMA4_SCOUT, "Llama-4-Scout-17B-16E"),
        (LLAMA4_MAVERICK_TEXT, "Llama-4-Maverick-17B-128E"),
    ],
)
def test_config_gives_the_builtin_architecture(tmp_path, cfg, builtin):
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert spec.model_dump(exclude=ARCH_FIELDS) == load_model(builtin).model_dump(exclude=ARCH_FIELDS)
    assert spec.num_params == load_model(builtin).num_params


def test_defaults_for_old_llama_config(tmp_path):
    spec = load_hf_config(write_config(tmp_path, LLAMA2_7B))
    defaults = (spec.num_kv_heads, spec.head_dim, spec.tie_word_embeddings, spec.mlp)
    assert defaults == (32, 128, False, "swiglu")


def test_qwen2_always_has_qkv_bias_and_llama_follows_attention_bias(tmp_path):
    assert load_hf_config(write_config(tmp_path, QWEN25_7B, "q")).qkv_bias
    assert load_hf_config(write_config(tmp_path, {**LLAMA3_8B, "attention_bias": True}, "l")).qkv_bias
    assert not load_hf_config(write_config(tmp_path, LLAMA3_8B, "l2")).qkv_bias


def test_qwen3_implies_the_qk_norm_and_llama4s_l2_norm_is_not_it(tmp_path):
    # Qwen3Attention and Qwen3MoeAttention always build q_norm/k_norm (no config field); Llama 4's
    # use_qk_norm is a weightless L2 norm, which ModelSpec.qk_norm does not describe.
    assert load_hf_config(write_config(tmp_path, QWEN3_32B, "q3")).qk_norm
    assert load_hf_config(write_config(tmp_path, QWEN3_30B_A3B, "q3m")).qk_norm
    assert not load_hf_config(write_config(tmp_path, LLAMA4_SCOUT, "l4")).qk_norm
    assert not load_hf_config(write_config(tmp_path, QWEN25_7B, "q2")).qk_norm


def test_mixtral_experts(tmp_path):
    spec = load_hf_config(write_config(tmp_path, MIXTRAL_8X7B))
    assert (spec.moe.num_experts, spec.moe.top_k, spec.moe.moe_intermediate_size) == (8, 2, 14336)
    assert spec.num_active_params == pytest.approx(12.9e9, rel=0.01)


def test_name_and_repo_come_from_name_or_path(tmp_path):
    spec = load_hf_config(write_config(tmp_path, LLAMA3_8B))
    assert (spec.name, spec.hf_repo) == ("Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B")
    assert "config.json" in spec.sources[0] and "llama" in spec.sources[0]


def test_local_name_or_path_names_the_spec_without_a_repo(tmp_path):
    cfg = {**LLAMA3_8B, "_name_or_path": "/data/checkpoints/my-llama/"}
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert (spec.name, spec.hf_repo) == ("my-llama", None)


@pytest.mark.parametrize("origin", ["./", ".", "..", "../", "  ", "/"])
def test_a_name_or_path_naming_no_model_falls_back_to_the_folder(tmp_path, origin):
    # `save_pretrained("./")` writes "./": the model was named "." (stop 42 hunt).
    path = write_config(tmp_path, {**QWEN3_32B, "_name_or_path": origin}, folder="Qwen3-32B-local")
    assert (load_hf_config(path.parent).name, load_hf_config(path.parent).hf_repo) == ("Qwen3-32B-local", None)


def test_without_a_name_field_a_folder_names_the_spec(tmp_path):
    path = write_config(tmp_path, QWEN3_32B, folder="Qwen3-32B-local")
    spec = load_hf_config(path.parent)
    assert (spec.name, spec.hf_repo) == ("Qwen3-32B-local", None)


def test_without_a_name_field_a_file_names_the_spec_not_its_folder(tmp_path, monkeypatch):
    path = write_config(tmp_path, QWEN3_32B, folder="Qwen3-32B-local")
    assert load_hf_config(path).name == str(path)  # config.json: the path says which one
    mine = tmp_path / "qwen-small.json"
    mine.write_text(path.read_text())
    assert load_hf_config(mine).name == "qwen-small"
    monkeypatch.chdir(path.parent)
    assert load_model("config.json").name == "config.json"  # not the folder it happens to sit in
    named = tmp_path / "named.json"
    named.write_text(json.dumps({**QWEN3_32B, "name": "Qwen3-32B-ft"}))
    assert load_hf_config(named).name == "Qwen3-32B-ft"


def test_load_model_accepts_a_config_path_or_its_directory(tmp_path):
    path = write_config(tmp_path, MISTRAL_7B, folder="mistral")
    assert load_model(str(path)).name == "Mistral-7B-v0.1"
    assert load_model(str(path.parent)).num_params == load_model("Mistral-7B").num_params


def without(cfg, key):
    return {k: v for k, v in cfg.items() if k != key}


def _error(tmp_path, cfg) -> str:
    path = write_config(tmp_path, cfg)
    with pytest.raises(UserInputError) as info:
        load_hf_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({**LLAMA3_8B, "model_type": "gpt2"}, "model_type 'gpt2' is not supported; supported: llama,"),
        (without(LLAMA3_8B, "model_type"), "required field 'model_type' is missing"),
        (without(LLAMA3_8B, "hidden_size"), "required field 'hidden_size' is missing"),
        ({**LLAMA3_8B, "num_hidden_layers": -32}, "'num_hidden_layers' must be a positive integer, got -32"),
        ({**LLAMA3_8B, "vocab_size": "128256"}, "'vocab_size' must be a positive integer"),
        ({**LLAMA3_8B, "num_key_value_heads": True}, "'num_key_value_heads' must be a positive integer"),
        ({**LLAMA3_8B, "tie_word_embeddings": "no"}, "'tie_word_embeddings' must be true or false"),
        ({**LLAMA3_8B, "hidden_act": "relu"}, "'hidden_act' 'relu' is not supported"),
        ({**LLAMA3_8B, "mlp_bias": True}, "'mlp_bias' true is not supported"),
        ({**LLAMA3_8B, "num_key_value_heads": 5}, "num_heads (32) must be a multiple of num_kv_heads"),
        ({**LLAMA3_8B, "hidden_size": 4100}, "'head_dim' is missing and hidden_size 4100"),
        (without(MIXTRAL_8X7B, "num_local_experts"), "'num_local_experts' is missing"),
        # Wrong types a hand edit leaves: one line naming the field, not a TypeError.
        ({**LLAMA3_8B, "hidden_act": ["silu"]}, "'hidden_act' ['silu'] is not supported"),
        ({**DEEPSEEK_V3, "n_shared_experts": "1"}, "'n_shared_experts' must be a non-negative integer, got '1'"),
        ({**DEEPSEEK_V3, "first_k_dense_replace": True}, "'first_k_dense_replace' must be a non-negative integer"),
        ({**LLAMA4_MAVERICK_TEXT, "moe_layers": 5}, "'moe_layers' must be a list of integers, got 5"),
        ({**LLAMA4_MAVERICK_TEXT, "no_rope_layers": 5}, "'no_rope_layers' must be a list of integers, got 5"),
        ({**QWEN3_30B_A3B, "use_sliding_window": "false"}, "'use_sliding_window' must be true or false, got 'false'"),
        # A router the loader does not know was read as sigmoid.
        ({**DEEPSEEK_V3, "scoring_func": "sigmod"}, "'scoring_func' must be \"sigmoid\" or \"softmax\", got 'sigmod'"),
    ],
)
def test_bad_config_names_the_field(tmp_path, cfg, expected):
    assert expected in _error(tmp_path, cfg)


def test_malformed_and_non_mapping_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",', encoding="utf-8")
    with pytest.raises(UserInputError, match="is malformed"):
        load_hf_config(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserInputError, match="must hold a mapping, got a list"):
        load_hf_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "config.json"))


def test_moe_layouts_the_loader_cannot_express_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="mlp_only_layers"):
        load_hf_config(write_config(tmp_path, {**QWEN3_30B_A3B, "mlp_only_layers": [0]}, "a"))
    with pytest.raises(UserInputError, match="moe_layer_freq"):
        load_hf_config(write_config(tmp_path, {**DEEPSEEK_V3, "moe_layer_freq": 2}, "b"))


@pytest.mark.parametrize(("change", "message"), [
    ({"no_rope_layers": [1] * 48}, "no_rope_layers other than a full-attention layer every"),
    ({"moe_layers": [0, 5]}, "moe_layers other than every interleave_moe_layer_step"),
])
def test_llama4_patterns_not_modelled_are_refused_in_one_line(tmp_path, change, message):
    from sp_planner.errors import UserInputError

    with pytest.raises(UserInputError, match=message) as info:
        load_hf_config(write_config(tmp_path, {**LLAMA4_MAVERICK_TEXT, **change}))
    assert "\n" not in str(info.value)


def test_more_experts_per_token_than_experts_is_refused_by_its_hf_names(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 9}))
    with pytest.raises(UserInputError) as refused:
        load_hf_config(path)
    assert str(refused.value) == (f"model config file {path}: num_experts_per_tok 9 exceeds num_local_experts 8: "
                                  "each token is routed to that many distinct experts")


@pytest.mark.parametrize("scoring,expected", [(None, "sigmoid"), ("sigmoid", "sigmoid"), ("softmax", "softmax")])
def test_deepseek_router_score_function_comes_from_scoring_func(tmp_path, scoring, expected):
    cfg = DEEPSEEK_V3 if scoring is None else {**DEEPSEEK_V3, "scoring_func": scoring}
    assert load_hf_config(write_config(tmp_path, cfg)).moe.router_score_function == expected


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
