"""Built-in models: every entry loads, names are forgiving, parameter counts match published sizes."""

import subprocess
import sys

import pytest

from sp_planner.catalog import builtin_model_names, load_model
from sp_planner.errors import UserInputError
from sp_planner.specs.model import ModelSpec

EXPECTED_NAMES = [
    "Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3-8B", "Llama-3-70B", "Llama-3.1-8B",
    "Llama-3.1-70B", "Llama-3.1-405B", "Mistral-7B", "Mixtral-8x7B", "Qwen2.5-7B", "Qwen2.5-14B",
    "Qwen2.5-32B", "Qwen2.5-72B", "Qwen3-8B", "Qwen3-32B", "GPT-3-175B", "Yi-34B", "Gemma-2-9B",
    "Gemma-2-27B", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "DeepSeek-V3", "DeepSeek-V3.2-Exp", "Mixtral-8x22B",
    "Llama-4-Scout-17B-16E", "Llama-4-Maverick-17B-128E", "Gemma-3-27B", "Kimi-K2", "gpt-oss-20b",
    "gpt-oss-120b", "GLM-4.5", "GLM-4.5-Air",
]  # fmt: skip


def test_builtin_names_are_the_documented_set():
    assert builtin_model_names() == EXPECTED_NAMES


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_builtin_loads_with_sources(name):
    spec = load_model(name)
    assert isinstance(spec, ModelSpec)
    assert spec.name == name
    assert spec.sources and all(s.strip() for s in spec.sources)
    assert spec.num_heads * spec.head_dim >= spec.hidden_size // 2


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("llama3-8b", "Llama-3-8B"),
        ("LLAMA3-8B", "Llama-3-8B"),
        ("llama-3.1-8b", "Llama-3.1-8B"),
        ("llama3.1_70b", "Llama-3.1-70B"),
        ("qwen2.5-7b", "Qwen2.5-7B"),
        ("mixtral-8x7b", "Mixtral-8x7B"),
        ("Mixtral-8x7B-v0.1", "Mixtral-8x7B"),
        ("mistral-7b-v0.1", "Mistral-7B"),
        ("gpt-3-175b", "GPT-3-175B"),
        ("gemma2-9b", "Gemma-2-9B"),
    ],
)
def test_names_match_case_and_separator_insensitively(spelling, name):
    assert load_model(spelling).name == name


@pytest.mark.parametrize(("typo", "closest"), [
    ("lama-3-8b", "Did you mean Llama-3-8B (or Llama-3.1-8B, Llama-3-70B)?"),
    ("llama3-405b", "Did you mean Llama-3.1-405B (or Llama-3-70B, Llama-3.1-70B)?"),
])
def test_unknown_name_suggests_the_closest_in_one_short_line(typo, closest):
    # The 33 names spelt out made a 703-character line; README.md's "Models:" lists them.
    with pytest.raises(UserInputError) as info:
        load_model(typo)
    message = str(info.value)
    assert message == (f"unknown model {typo!r}. {closest} README.md's \"Models:\" lists all {len(EXPECTED_NAMES)}; "
                       "or give a Hugging Face config.json's path.")
    assert len(message) <= 200


@pytest.mark.parametrize(("repo", "builtin"), [
    ("Qwen/Qwen3-30B-A3B", "Qwen3-30B-A3B"),  # the built-in's hf_repo
    ("meta-llama/Meta-Llama-3-8B", "Llama-3-8B"),  # hf_repo, whose name part is no built-in name
    ("google/Gemma-2-9B", "Gemma-2-9B"),  # a name part the forgiving lookup finds
    ("deepseek-ai/DeepSeek-R1", None),
])
def test_a_hub_repository_id_says_nothing_is_downloaded_and_what_to_give(tmp_path, monkeypatch, repo, builtin):
    # Was "model config file Qwen/Qwen3-30B-A3B does not exist": the path of a file never meant.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError) as info:
        load_model(repo)
    instead = f"give the built-in --model {builtin}, or save" if builtin else "save"
    assert str(info.value) == (
        f"model '{repo}' is no file or folder here, and sp-planner downloads nothing from the Hugging Face Hub: "
        f"for that repository {instead} https://huggingface.co/{repo}/blob/main/config.json and pass that file's path")


def test_a_local_folder_named_like_a_hub_repository_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = f"; check the path (a relative path starts at the current folder, {tmp_path})"
    with pytest.raises(UserInputError) as info:
        load_model("./nope")  # a path, which no repository id begins with
    assert str(info.value) == f"model config file nope does not exist{here}"
    (tmp_path / "Qwen" / "Qwen3-8B").mkdir(parents=True)
    with pytest.raises(UserInputError) as info:
        load_model("Qwen/Qwen3-8B")
    assert str(info.value) == f"model config file Qwen/Qwen3-8B/config.json does not exist{here}"


# Published totals, checked against ModelSpec.num_params within 1%.
PUBLISHED_PARAMS = [
    ("Llama-2-7B", 6.74e9),  # HF model card / safetensors total 6,738,415,616
    ("Llama-2-13B", 13.02e9),  # HF safetensors total 13,015,864,320
    ("Llama-2-70B", 68.98e9),  # HF safetensors total 68,976,648,192 ("69.0B", reference section C)
    ("Llama-3-8B", 8.03e9),  # HF safetensors total 8,030,261,248
    ("Llama-3-70B", 70.55e9),  # HF safetensors total 70,553,706,496 ("70.6B")
    ("Llama-3.1-8B", 8.03e9),  # same shape as Llama-3-8B (arXiv:2407.21783 Table 3): 8,030,261,248
    ("Llama-3.1-70B", 70.55e9),  # same shape as Llama-3-70B (arXiv:2407.21783 Table 3)
    ("Llama-3.1-405B", 405.8e9),  # reference section C sanity check
    ("Mistral-7B", 7.24e9),  # HF safetensors total 7,241,732,096
    ("Mixtral-8x7B", 46.7e9),  # reference section C "46.7B total / 12.9B active"
    ("Qwen2.5-7B", 7.61e9),  # Qwen2.5-7B model card "Number of Parameters: 7.61B"
    ("Qwen2.5-14B", 14.7e9),  # Qwen2.5-14B model card "14.7B"
    ("Qwen2.5-32B", 32.5e9),  # Qwen2.5-32B model card "32.5B" (the config's count is 32.76B, 0.8% above; the
    # card's non-embedding figures run ~0.2B under the config's count for 14B/32B/72B alike)
    ("Qwen2.5-72B", 72.7e9),  # Qwen2.5-72B model card "72.7B"
    ("Qwen3-8B", 8.2e9),  # Qwen3-8B model card "8.2B"
    ("Qwen3-32B", 32.8e9),  # Qwen3-32B model card "32.8B"
    ("Yi-34B", 34.39e9),  # 01-ai/Yi-34B HF safetensors total 34,388,917,248 ("34.4B")
    ("GPT-3-175B", 174.6e9),  # reference section C (175B in arXiv:2005.14165, without position embeddings)
    ("Gemma-2-9B", 9.242e9),  # Gemma 2 report arXiv:2408.00118 Table 2: 8,324,201,984 + 917,504,000
    ("Gemma-2-27B", 27.227e9),  # Gemma 2 report Table 2: 26,047,480,320 + 1,179,648,000
    ("Qwen3-30B-A3B", 30.5e9),  # Qwen3-30B-A3B model card "Number of Parameters: 30.5B in total and 3.3B activated"
    ("Qwen3-235B-A22B", 235e9),  # Qwen3-235B-A22B model card "235B in total and 22B activated"
    ("DeepSeek-V3", 671e9),  # deepseek-ai/DeepSeek-V3 README_WEIGHTS.md: 671B main model weights (MTP apart)
    ("Mixtral-8x22B", 141e9),  # Mistral AI, mistral.ai/news/mixtral-8x22b: "39B active parameters out of 141B"
    ("Gemma-3-27B", 1_416e6 + 25_600e6),  # Gemma 3 report Table 1: embedding + non-embedding (vision apart)
    ("gpt-oss-20b", 20.91e9),  # OpenAI gpt-oss model card (2025-08-05) table 1: 20.91B total
    ("gpt-oss-120b", 116.83e9),  # the same table: 116.83B total
    ("GLM-4.5", 355e9),  # zai-org/GLM-4.5 README and arXiv:2508.06471: 355B total
    ("GLM-4.5-Air", 106e9),  # the same README: GLM-4.5-Air 106B total
    # Kimi-K2 is not here: 1,026.4B counted from the config's every field (Megatron-Bridge KimiK2Provider
    # and config.json agree, tests/catalog/test_hf_kimi.py counts it by hand) sits 2.6% above the model
    # card's rounded "1T" and 1.3% below the technical report's 1.04T (arXiv:2507.20534), a gap of about
    # one MoE layer (17.0B) that no field of the published config accounts for.
]

# Llama 4's published totals (model cards: Scout 109B, Maverick 400B) count the vision encoder, which
# ModelSpec leaves out. Its size from the same config.json's vision_config (34 layers of hidden 1408,
# GELU MLP 5632, biased projections, 4 LayerNorm vectors), plus the pixel-shuffle adapter (5632 x 4096,
# 4096 x 4096), the projector to the text width (4096 x 5120), patch (14*14*3 x 1408), positional
# (577 x 1408) and class embeddings and the pre/post LayerNorms:
#   34 x (4 x (1408^2 + 1408) + 2 x 1408 x 5632 + 5632 + 1408 + 4 x 1408) = 809,467,648
#   + 23,068,672 + 16,777,216 + 20,971,520 + 827,904 + 812,416 + 1,408 + 4 x 1,408 = 871,932,416
LLAMA4_VISION_PARAMS = 871_932_416


@pytest.mark.parametrize(("name", "published"), [("Llama-4-Scout-17B-16E", 109e9),
                                                 ("Llama-4-Maverick-17B-128E", 400e9)])
def test_llama4_text_and_vision_match_the_published_totals(name, published):
    assert load_model(name).num_params + LLAMA4_VISION_PARAMS == pytest.approx(published, rel=0.01)

# Published activated parameters (same model cards), within 2% (the cards round to 2 digits).
PUBLISHED_ACTIVE = [("Qwen3-30B-A3B", 3.3e9), ("Qwen3-235B-A22B", 22e9),
                    # README_WEIGHTS.md "36.7B activated"; ours 37.55B counts the 0.93B input embedding too
                    ("DeepSeek-V3", 36.7e9 + 129280 * 7168),
                    ("Mixtral-8x22B", 39e9),  # mistral.ai/news/mixtral-8x22b
                    # Model cards: "17B activated" (one routed plus the shared expert, or the dense MLP)
                    ("Llama-4-Scout-17B-16E", 17e9), ("Llama-4-Maverick-17B-128E", 17e9),
                    ("Kimi-K2", 32.6e9)]  # Kimi K2 technical report (arXiv:2507.20534): 32.6B activated


@pytest.mark.parametrize(("name", "published"), PUBLISHED_ACTIVE)
def test_moe_active_parameters_match_published(name, published):
    assert load_model(name).num_active_params == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize(("name", "published"), PUBLISHED_PARAMS)
def test_parameter_count_matches_published(name, published):
    assert load_model(name).num_params == pytest.approx(published, rel=0.01)


def test_mixtral_active_parameters_match_published():
    spec = load_model("Mixtral-8x7B")
    assert spec.num_active_params == pytest.approx(12.9e9, rel=0.01)
    # Two of eight experts: active MLP weights are a quarter of all expert weights.
    expert = 3 * spec.hidden_size * spec.moe.moe_intermediate_size
    assert spec.mlp_params_per_layer - spec.active_mlp_params_per_layer == 6 * expert


def test_dense_models_have_all_parameters_active():
    for name in EXPECTED_NAMES:
        spec = load_model(name)
        if spec.moe is None:
            assert spec.num_active_params == spec.num_params, name


def test_architecture_flags_follow_the_configs():
    assert load_model("Qwen2.5-7B").qkv_bias and not load_model("Qwen3-8B").qkv_bias
    gpt3 = load_model("GPT-3-175B")
    assert (gpt3.mlp, gpt3.linear_bias, gpt3.tie_word_embeddings) == ("gelu", True, True)
    gemma = load_model("Gemma-2-9B")
    assert (gemma.mlp, gemma.tie_word_embeddings, gemma.head_dim) == ("geglu", True, 256)
    # Qwen3-32B: 64 query heads of 128 = 8192, wider than hidden_size 5120.
    assert load_model("Qwen3-32B").q_size == 8192


def test_position_embeddings_are_stated_with_a_source():
    # GPT-3 keeps GPT-2's learned positions (arXiv:2005.14165 section 2.1); every other built-in
    # rotates q and k (models.json sources).
    for name in EXPECTED_NAMES:
        spec = load_model(name)
        assert spec.position_embedding == ("learned_absolute" if name == "GPT-3-175B" else "rope"), name
        assert any(s.startswith(f"position_embedding {spec.position_embedding}: ") for s in spec.sources), name


def test_interleaved_moe_layers_and_local_layer_counts():
    # Maverick: MoE on every 2nd layer (24 of 48), dense SwiGLU of 16384 between; Scout: all 48.
    maverick, scout = load_model("Llama-4-Maverick-17B-128E"), load_model("Llama-4-Scout-17B-16E")
    assert (maverick.num_moe_layers, scout.num_moe_layers) == (24, 48)
    dense = 3 * 5120 * 16384
    moe = (128 + 1) * 3 * 5120 * 8192 + 5120 * 128
    assert maverick.mean_mlp_params_per_layer == (24 * dense + 24 * moe) / 48
    # Chunked attention on 3 of 4 layers (36 of 48); Gemma 3 27B: 62 layers of 5 local + 1 global
    # from the first on -> 10 whole patterns and 2 more local layers = 52.
    assert scout.window.kind == "chunked" and scout.num_local_layers == 36
    assert load_model("Gemma-3-27B").num_local_layers == 52
    assert load_model("Gemma-2-27B").num_local_layers == 23


def test_catalog_import_leaves_torch_out():
    code = (
        "import sys, sp_planner.catalog as c; c.load_model('llama3-8b'); c.load_hardware('a800');"
        " print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_deepseek_v3_mla_projections_by_hand():
    # DeepSeek-V3 modeling: q_a (h x 1536) + q_a_layernorm + q_b (1536 x 128*(128+64)); kv_a_proj_with_mqa
    # (h x (512+64)) + kv_a_layernorm + kv_b (512 x 128*(128+128)); o_proj (128*128 x h).
    spec = load_model("DeepSeek-V3")
    h = 7168
    q = h * 1536 + 1536 + 1536 * 128 * 192
    kv = h * 576 + 512 + 512 * 128 * 256
    assert spec.attention_params_per_layer == q + kv + 128 * 128 * h
    assert spec.num_moe_layers == 58 and spec.moe.first_dense_layers == 3


def test_a_builtin_given_as_a_config_file_is_named(tmp_path, monkeypatch):
    # Was "model config file llama3-8b.json does not exist", with no word of the built-in Llama-3-8B.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError) as info:
        load_model("llama3-8b.json")
    assert str(info.value) == ("model config file llama3-8b.json does not exist; for the built-in model give its "
                               "name alone: Llama-3-8B")
