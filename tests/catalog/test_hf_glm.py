"""GLM-4.5 / 4.6 / 4.5-Air config.json (model_type glm4_moe, catalog.hf_glm): dense first layers, a
shared expert and a sigmoid router, QK norm, q/k/v biases, partial RoPE and the MTP layer as notes;
parameter counts against zai-org's published 355B / 32B active (Air 106B / 12B)."""

import pytest

from sp_planner.catalog import import_notes, load_hf_config, load_model
from sp_planner.catalog.hf_config import origin_model_type
from tests.catalog.hf_configs import ARCH_FIELDS, import_error, without, write_config

# zai-org/GLM-4.5 config.json, field for field as NVIDIA-NeMo/Megatron-Bridge 067f987df
# tests/unit_tests/models/glm/test_glm45_bridge.py glm45_355b_config copies it (there under a mock
# model_type "glm"), with the routing and MTP fields the published file adds (n_group and topk_group 1,
# norm_topk_prob true, num_nextn_predict_layers 1: Megatron-Bridge's GLM45 providers before 217de1a2e
# mtp_num_layers 1; its functional test_glm45_conversion.py toy config keys). GLM-4.6's config.json has
# the same architecture fields (max_position_embeddings 202752 aside, which the import does not read).
GLM_45 = {
    "_name_or_path": "zai-org/GLM-4.5", "architectures": ["Glm4MoeForCausalLM"], "attention_bias": True,
    "attention_dropout": 0.0, "eos_token_id": [151329, 151336, 151338], "first_k_dense_replace": 3, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02, "intermediate_size": 12288,
    "max_position_embeddings": 131072, "model_type": "glm4_moe", "moe_intermediate_size": 1536, "n_group": 1,
    "n_routed_experts": 160, "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 96,
    "num_experts_per_tok": 8, "num_hidden_layers": 92, "num_key_value_heads": 8, "num_nextn_predict_layers": 1,
    "pad_token_id": 151329, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 1000000, "routed_scaling_factor": 2.5, "tie_word_embeddings": False, "topk_group": 1,
    "torch_dtype": "bfloat16", "transformers_version": "4.54.0.dev0", "use_cache": True, "use_qk_norm": True,
    "vocab_size": 151552,
}
# zai-org/GLM-4.5-Air: test_glm45_bridge.py glm45_air_106b_config (46 layers, 1 dense, hidden 4096, dense
# 10944, 128 experts of 1408, no QK norm), routed_scaling_factor 1.0 as Megatron-Bridge's
# GLM45AirModelProvider106B (217de1a2e^ glm45_provider.py moe_router_topk_scaling_factor 1.0) has it.
GLM_45_AIR = {**GLM_45, "_name_or_path": "zai-org/GLM-4.5-Air", "first_k_dense_replace": 1, "hidden_size": 4096,
              "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_routed_experts": 128,
              "num_hidden_layers": 46, "routed_scaling_factor": 1.0, "use_qk_norm": False}


def _counts(layers, dense, hidden, ffn, experts, width):
    """(total, active, embedding tables) by hand, in ModelSpec's layer shapes (q/k/v biases counted,
    the 2 x 128 QK-norm weights a layer not, as for Qwen3)."""
    q, kv, vocab = 96 * 128, 8 * 128, 151552
    attention = hidden * (q + 2 * kv) + q * hidden + (q + 2 * kv)  # q/k/v/o and q/k/v biases
    norms = 2 * hidden
    dense_mlp = 3 * hidden * ffn
    expert = 3 * hidden * width
    router = hidden * experts
    tables = 2 * vocab * hidden  # untied input and output tables
    base = layers * (attention + norms) + dense * dense_mlp + tables + hidden  # + the final norm
    moe_layers = layers - dense
    return (base + moe_layers * ((experts + 1) * expert + router), base + moe_layers * (9 * expert + router), tables)


GLM_45_COUNTS = _counts(92, 3, 5120, 12288, 160, 1536)
AIR_COUNTS = _counts(46, 1, 4096, 10944, 128, 1408)


@pytest.mark.parametrize(("cfg", "shape", "moe", "qk_norm", "counts", "published"), [
    # zai-org/GLM-4.5 README (and arXiv:2508.06471): 355B total, 32B active; Air 106B, 12B.
    (GLM_45, (92, 5120, 12288), (160, 8, 1536, 1, 3), True, GLM_45_COUNTS, (355e9, 32e9)),
    (GLM_45_AIR, (46, 4096, 10944), (128, 8, 1408, 1, 1), False, AIR_COUNTS, (106e9, 12e9)),
])
def test_glm_imports_with_published_parameter_counts(tmp_path, cfg, shape, moe, qk_norm, counts, published):
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert (spec.num_layers, spec.hidden_size, spec.intermediate_size) == shape
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.vocab_size) == (96, 8, 128, 151552)
    assert spec.qkv_bias and not spec.linear_bias and spec.qk_norm == qk_norm and spec.mlp == "swiglu"
    assert not spec.tie_word_embeddings and spec.mla is None and spec.window is None
    m = spec.moe
    assert (m.num_experts, m.top_k, m.moe_intermediate_size, m.num_shared_experts, m.first_dense_layers) == moe
    assert m.router_score_function == "sigmoid" and m.layer_step == 1 and not m.expert_bias
    # RoPE without YaRN: the plain 1/sqrt(128); no MTP depth unless asked (--mtp-layers).
    assert spec.softmax_scale is None and spec.mtp_layers == 0 and spec.softmax_type == "vanilla"
    assert origin_model_type(spec) == "glm4_moe"
    total, active, tables = counts
    assert (spec.num_params, spec.num_active_params) == (total, active)
    # The published totals to 1%; the active counts leave out the embedding and output tables (as
    # zai-org counts them: 32.08B and 12.18B without, 33.63B and 13.42B with).
    assert spec.num_params == pytest.approx(published[0], rel=0.01)
    assert spec.num_active_params - tables == pytest.approx(published[1], rel=0.016)
    notes = import_notes(spec)
    assert len(notes) == 2
    assert notes[0].startswith("partial RoPE: each head rotates its first 64 of 128 query and key dims")
    assert "--rotary-percent 0.5" in notes[0]
    assert notes[1].startswith("num_nextn_predict_layers 1: the checkpoint's multi-token-prediction layer is "
                               "planned only with sp-plan --mtp-layers 1")


def test_the_counts_by_hand():
    # GLM-4.5: 92 x (136,329,216 attention + 10,240 norms) + 3 x 188,743,680 dense MLPs
    # + 89 x (161 x 23,592,960 experts + 819,200 router) + 1,551,892,480 tables + 5,120.
    assert GLM_45_COUNTS == (352_797_791_232, 33_632_228_352, 1_551_892_480)
    assert AIR_COUNTS == (106_852_245_504, 13_424_123_904, 1_241_513_984)


def test_class_defaults_stand_for_what_a_config_leaves_out(tmp_path):
    # Glm4MoeConfig: num_key_value_heads 8, partial_rotary_factor 0.5, num_experts_per_tok 8, n_shared_experts 1,
    # first_k_dense_replace 1, n_group and topk_group 1, routed_scaling_factor 1.0, attention_bias and
    # use_qk_norm false.
    cfg = GLM_45_AIR
    for key in ("num_key_value_heads", "partial_rotary_factor", "num_experts_per_tok", "n_shared_experts",
                "first_k_dense_replace", "n_group", "topk_group", "routed_scaling_factor", "use_qk_norm",
                "rope_scaling"):
        cfg = without(cfg, key)
    spec = load_hf_config(write_config(tmp_path, cfg))
    reference = load_hf_config(write_config(tmp_path, GLM_45_AIR, folder="full"))
    assert spec.model_dump(exclude={"sources"}) == reference.model_dump(exclude={"sources"})
    bare = load_hf_config(write_config(tmp_path, without(without(cfg, "attention_bias"), "num_nextn_predict_layers"),
                                       folder="bare"))
    assert not bare.qkv_bias and len(import_notes(bare)) == 1  # partial RoPE only: no MTP layer


def test_full_rope_has_no_partial_rope_note(tmp_path):
    spec = load_hf_config(write_config(tmp_path, {**GLM_45, "partial_rotary_factor": 1.0}))
    assert [n.split(":")[0] for n in import_notes(spec)] == ["num_nextn_predict_layers 1"]


def test_transformers_5_partial_rotary_factor_inside_rope_parameters_is_read(tmp_path):
    # transformers 5 moves partial_rotary_factor into rope_parameters; the import read only the top-level
    # field and took the class default 0.5 for a factor 1.0 given there (a partial RoPE note for full RoPE).
    v5 = {**without(without(GLM_45, "partial_rotary_factor"), "rope_theta"),
          "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 1.0}}
    spec = load_hf_config(write_config(tmp_path, v5))
    assert [n.split(":")[0] for n in import_notes(spec)] == ["num_nextn_predict_layers 1"]
    half = {**v5, "rope_parameters": {**v5["rope_parameters"], "partial_rotary_factor": 0.5}}
    assert import_notes(load_hf_config(write_config(tmp_path, half, folder="half")))[0].startswith(
        "partial RoPE: each head rotates its first 64 of 128 query and key dims")


@pytest.mark.parametrize(("cfg", "expected"), [
    ({**GLM_45, "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 1.0}},
     "partial_rotary_factor 0.5 disagrees with rope_parameters' 1 (transformers 4 reads the field, 5 the mapping)"),
    ({**GLM_45, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}},
     "YaRN's attention factor 1.139 scales the cos/sin of the 64 rotary dims of each 128-dim head alone"),
    ({**GLM_45, "partial_rotary_factor": 0}, "field 'partial_rotary_factor' must be in (0, 1], got 0"),
    ({**GLM_45, "partial_rotary_factor": 0.2}, "partial_rotary_factor 0.2 of head_dim 128 rotates 25 dims"),
    ({**GLM_45, "num_experts_per_tok": 200}, "num_experts_per_tok 200 exceeds n_routed_experts 160"),
    ({**GLM_45, "use_qk_norm": "yes"}, "field 'use_qk_norm' must be true or false"),
    ({**GLM_45, "num_experts_per_tok": 1}, "num_experts_per_tok 1 with norm_topk_prob true is not supported"),
])
def test_what_the_spec_cannot_represent_is_refused_in_one_line(tmp_path, cfg, expected):
    assert expected in import_error(tmp_path, cfg)


@pytest.mark.parametrize(("name", "cfg"), [("GLM-4.5", GLM_45), ("GLM-4.5-Air", GLM_45_AIR)])
def test_builtin_matches_the_import_field_by_field_with_the_same_notes(tmp_path, name, cfg):
    imported = load_hf_config(write_config(tmp_path, cfg))
    builtin = load_model(name.lower())
    assert builtin.name == name and builtin.hf_repo == f"zai-org/{name}"
    assert imported.model_dump(exclude=ARCH_FIELDS) == builtin.model_dump(exclude=ARCH_FIELDS)
    assert import_notes(builtin) == import_notes(imported)


def test_group_limited_routing_is_noted_as_for_deepseek_v3(tmp_path):
    # Every published GLM-4.5/4.6 config opens every group (n_group = topk_group = 1); a limited one
    # is noted by the helper DeepSeek-V3's import shares (tests/catalog/test_hf_layers.py).
    notes = import_notes(load_hf_config(write_config(tmp_path, {**GLM_45, "n_group": 8, "topk_group": 4})))
    assert any(n.startswith("group-limited routing (each token's experts within 4 of 8 expert groups") for n in notes)
    assert not any(n.startswith("group-limited") for n in import_notes(load_hf_config(write_config(
        tmp_path, GLM_45, "published"))))


@pytest.mark.parametrize(("cfg", "factor"), [(GLM_45, 2.5), (GLM_45_AIR, 1.0)])
def test_router_bias_and_scaling_factor_are_read(tmp_path, cfg, factor):
    # Glm4MoeTopkRouter always holds e_score_correction_bias; the chosen weights are scaled by
    # routed_scaling_factor (Megatron --moe-router-enable-expert-bias, --moe-router-topk-scaling-factor).
    moe = load_hf_config(write_config(tmp_path, cfg)).moe
    assert (moe.score_correction_bias, moe.routed_scaling_factor) == (True, factor)


@pytest.mark.parametrize(("norm", "expected"), [(True, True), (False, False), (None, True)])
def test_router_topk_norm_is_read_from_norm_topk_prob(tmp_path, norm, expected):
    # Glm4MoeMoE.route_tokens_to_experts divides the chosen sigmoid scores by their sum only with
    # norm_topk_prob (Glm4MoeConfig default true; every published GLM-4.5 config sets it true).
    cfg = without(GLM_45, "norm_topk_prob") if norm is None else {**GLM_45, "norm_topk_prob": norm}
    assert load_hf_config(write_config(tmp_path, cfg)).moe.router_topk_norm is expected
