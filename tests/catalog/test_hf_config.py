"""Hugging Face config.json -> ModelSpec, checked against the built-in specs of the same models."""

import json

import pytest

from sp_planner.catalog import load_hf_config, load_model
from sp_planner.errors import UserInputError
from tests.catalog.hf_configs import (
    ARCH_FIELDS,
    DEEPSEEK_V3,
    GEMMA2_9B,
    GEMMA2_27B,
    GEMMA3_27B_PT,
    LLAMA2_7B,
    LLAMA3_8B,
    LLAMA4_MAVERICK_TEXT,
    LLAMA4_SCOUT,
    MISTRAL_7B,
    MIXTRAL_8X7B,
    QWEN3_30B_A3B,
    QWEN3_32B,
    QWEN25_7B,
    import_error,
    without,
    write_config,
)


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
        (GEMMA2_9B, "Gemma-2-9B"),
        (GEMMA2_27B, "Gemma-2-27B"),
        (GEMMA3_27B_PT, "Gemma-3-27B"),
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


def test_qwen3_implies_the_qk_norm_and_llama4s_l2_norm_is_not_it(tmp_path):
    # Qwen3Attention and Qwen3MoeAttention always build q_norm/k_norm (no config field); Llama 4's
    # use_qk_norm is a weightless L2 norm, which ModelSpec.qk_norm does not describe.
    assert load_hf_config(write_config(tmp_path, QWEN3_32B, "q3")).qk_norm
    assert load_hf_config(write_config(tmp_path, QWEN3_30B_A3B, "q3m")).qk_norm
    assert not load_hf_config(write_config(tmp_path, LLAMA4_SCOUT, "l4")).qk_norm
    assert not load_hf_config(write_config(tmp_path, QWEN25_7B, "q2")).qk_norm


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
        ({**DEEPSEEK_V3, "scoring_func": "sigmod"}, "'scoring_func' must be \"sigmoid\", got 'sigmod'"),
    ],
)
def test_bad_config_names_the_field(tmp_path, cfg, expected):
    assert expected in import_error(tmp_path, cfg)


@pytest.mark.parametrize("other", [
    {"schema_version": "sp-planner.plan/1", "model": {"name": "Llama-3-8B"}, "plan": {"tp": 1}},  # plan.json
    {"name": "H100-SXM", "peak_bf16_flops": 989e12, "hbm_bytes": 85045477376},  # a hardware profile
    {"dim": 4096, "n_layers": 32, "n_heads": 32, "vocab_size": 32000},  # Mistral's own params.json
])
def test_another_kind_of_file_is_said_not_to_be_a_config_json(tmp_path, other):
    # Was "required field 'model_type' is missing", as if adding it would make a plan file a model.
    assert import_error(tmp_path, other).endswith(
        ": not a Hugging Face config.json (it has none of model_type, hidden_size, num_hidden_layers); give the "
        "model's config.json, its folder, or a built-in model name")


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


def test_attention_dropout_is_read_and_hidden_dropout_stays_zero(tmp_path):
    # Published configs state attention_dropout 0.0 (Gemma 2 27B's, as copied above); absent, it is
    # the config classes' 0.0 (Llama-2-7B's config predates the field).
    assert load_hf_config(write_config(tmp_path, GEMMA2_27B, "g2")).attention_dropout == 0.0
    assert load_hf_config(write_config(tmp_path, LLAMA2_7B, "l2")).attention_dropout == 0.0
    # A fine-tune that trains with it; hidden_dropout / resid_pdrop keys are not read by LlamaModel.
    spec = load_hf_config(write_config(tmp_path, {**LLAMA3_8B, "attention_dropout": 0.1, "hidden_dropout": 0.1,
                                                  "resid_pdrop": 0.1}, "l3"))
    assert (spec.attention_dropout, spec.hidden_dropout) == (0.1, 0.0)
    # Llama 4 and Gemma 3 read the decoder's text_config, not the vision encoder's value.
    scout = {**LLAMA4_SCOUT, "text_config": {**LLAMA4_SCOUT["text_config"], "attention_dropout": 0.05},
             "vision_config": {**LLAMA4_SCOUT["vision_config"], "attention_dropout": 0.5}}
    assert load_hf_config(write_config(tmp_path, scout, "l4")).attention_dropout == 0.05
    gemma3 = {**GEMMA3_27B_PT, "text_config": {**GEMMA3_27B_PT["text_config"], "attention_dropout": 0.1},
              "vision_config": {**GEMMA3_27B_PT["vision_config"], "attention_dropout": 0.5}}
    assert load_hf_config(write_config(tmp_path, gemma3, "g3")).attention_dropout == 0.1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "'attention_dropout' must be a dropout probability in [0, 1), got 1.0"),
        (-0.1, "'attention_dropout' must be a dropout probability in [0, 1), got -0.1"),
        (10, "'attention_dropout' must be a dropout probability in [0, 1), got 10"),
        ("0.1", "'attention_dropout' must be a finite number, got '0.1'"),
        (True, "'attention_dropout' must be a finite number, got True"),
    ],
)
def test_nonsense_attention_dropout_is_refused_in_one_line(tmp_path, value, expected):
    assert expected in import_error(tmp_path, {**QWEN25_7B, "attention_dropout": value})
