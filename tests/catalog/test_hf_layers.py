"""What each layer holds, from a Hugging Face config.json: biases, experts, local-attention patterns
(sp_planner.catalog.hf_layers)."""

import json
from pathlib import Path

import pytest

from sp_planner.catalog import import_notes, load_hf_config, load_model
from sp_planner.catalog.hf_fields import MODELLED, NOT_MODELLED
from sp_planner.catalog.hf_layers import group_routing_note, mtp_note, router_groups
from sp_planner.errors import UserInputError
from sp_planner.specs.moe import MoESpec
from tests.catalog.hf_configs import (
    DEEPSEEK_V3,
    LLAMA3_8B,
    LLAMA4_MAVERICK_TEXT,
    MIXTRAL_8X7B,
    QWEN3_30B_A3B,
    QWEN25_7B,
    import_error,
    write_config,
)


def test_qwen2_always_has_qkv_bias_and_llama_follows_attention_bias(tmp_path):
    assert load_hf_config(write_config(tmp_path, QWEN25_7B, "q")).qkv_bias
    assert load_hf_config(write_config(tmp_path, {**LLAMA3_8B, "attention_bias": True}, "l")).qkv_bias
    assert not load_hf_config(write_config(tmp_path, LLAMA3_8B, "l2")).qkv_bias


def test_mixtral_experts(tmp_path):
    spec = load_hf_config(write_config(tmp_path, MIXTRAL_8X7B))
    assert (spec.moe.num_experts, spec.moe.top_k, spec.moe.moe_intermediate_size) == (8, 2, 14336)
    assert spec.num_active_params == pytest.approx(12.9e9, rel=0.01)


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


@pytest.mark.parametrize("scoring", [None, "sigmoid"])
def test_deepseek_router_scores_with_a_sigmoid(tmp_path, scoring):
    cfg = DEEPSEEK_V3 if scoring is None else {**DEEPSEEK_V3, "scoring_func": scoring}
    assert load_hf_config(write_config(tmp_path, cfg)).moe.router_score_function == "sigmoid"


SOFTMAX_REFUSAL = (
    "field 'scoring_func' \"softmax\" is not supported: no implementation of DeepSeek-V3's architecture "
    "(deepseek_v3, kimi_k2) trains it (transformers' DeepseekV3TopkRouter scores with a sigmoid whatever the field "
    "says, modeling_deepseek.py raises NotImplementedError); set \"sigmoid\"")


@pytest.mark.parametrize("change", [{"scoring_func": "softmax"}, {"scoring_func": "softmax", "norm_topk_prob": False}])
def test_a_softmax_deepseek_router_is_refused_in_one_line(tmp_path, change):
    # DeepseekV3TopkRouter.forward: scores = router_logits.sigmoid(), whatever scoring_func says; DeepSeek-V3's
    # and Kimi K2's modeling_deepseek.py MoEGate raise NotImplementedError for anything but sigmoid.
    assert SOFTMAX_REFUSAL in import_error(tmp_path, {**DEEPSEEK_V3, **change})


@pytest.mark.parametrize(("change", "bias", "factor"), [
    ({}, True, 2.5),  # the published config: sigmoid, noaux_tc, routed_scaling_factor 2.5
    ({"routed_scaling_factor": 1.5}, True, 1.5),
    ({"routed_scaling_factor": None}, True, 2.5),  # DeepseekV3Config's default
])
def test_deepseek_router_bias_and_scaling_factor(tmp_path, change, bias, factor):
    moe = load_hf_config(write_config(tmp_path, {**DEEPSEEK_V3, **change})).moe
    assert (moe.score_correction_bias, moe.routed_scaling_factor) == (bias, factor)


@pytest.mark.parametrize(("change", "groups"), [
    ({}, (8, 4)),  # the published config
    ({"n_group": None, "topk_group": None}, (8, 4)),  # DeepseekV3Config's defaults
    ({"n_group": 1, "topk_group": 1}, (1, 1)),  # Kimi K2's: no restriction
    ({"n_group": 8, "topk_group": 8}, (1, 1)),  # every group open: none either
])
def test_deepseek_router_groups(tmp_path, change, groups):
    moe = load_hf_config(write_config(tmp_path, {**DEEPSEEK_V3, **change})).moe
    assert (moe.router_groups, moe.router_group_topk) == groups


TOP1_NORM_REFUSAL = (
    "num_experts_per_tok 1 with norm_topk_prob true is not supported: the sigmoid router divides its one chosen "
    "score by itself (a weight of 1, times routed_scaling_factor), where Megatron-Core weighs a top-1 sigmoid expert "
    "by its score; set norm_topk_prob false to plan the score-weighted router")


@pytest.mark.parametrize("change", [{"num_experts_per_tok": 1}, {"num_experts_per_tok": 1, "norm_topk_prob": True}])
def test_a_normalised_sigmoid_top_1_router_is_refused_in_one_line(tmp_path, change):
    # DeepseekV3TopkRouter and Glm4MoeMoE divide the chosen scores by their sum for any top_k (norm_topk_prob,
    # default true): one expert's weight is 1; megatron-core keeps a top-1 sigmoid score
    # (tests/flags/test_megatron_moe.py runs its router). GLM shares the reader (tests/catalog/test_hf_glm.py).
    assert TOP1_NORM_REFUSAL in import_error(tmp_path, {**DEEPSEEK_V3, **change})


@pytest.mark.parametrize(("change", "norm"), [
    ({}, True),  # the published config leaves norm_topk_prob out: DeepseekV3Config's default true
    ({"norm_topk_prob": True}, True),
    ({"norm_topk_prob": False}, False),  # DeepseekV3TopkRouter keeps the raw sigmoid scores
    ({"norm_topk_prob": False, "num_experts_per_tok": 1}, True),  # top-1: the weight is the score either way
])
def test_deepseek_router_topk_norm_comes_from_norm_topk_prob(tmp_path, change, norm):
    assert load_hf_config(write_config(tmp_path, {**DEEPSEEK_V3, **change})).moe.router_topk_norm is norm


@pytest.mark.parametrize(("norm", "pre_softmax"), [(True, False), (False, True), (None, True)])
def test_qwen3_moe_norm_topk_prob_decides_pre_softmax(tmp_path, norm, pre_softmax):
    # Qwen3MoeSparseMoeBlock renormalises its top k only with norm_topk_prob (class default false);
    # without, Megatron needs --moe-router-pre-softmax (Megatron-Bridge qwen3_moe_bridge.py).
    cfg = {k: v for k, v in QWEN3_30B_A3B.items() if k != "norm_topk_prob"}
    if norm is not None:
        cfg["norm_topk_prob"] = norm
    assert load_hf_config(write_config(tmp_path, cfg)).moe.router_pre_softmax is pre_softmax


def test_llama4_scales_its_top_1_experts_input_and_refuses_more_experts_per_token(tmp_path):
    assert load_hf_config(write_config(tmp_path, LLAMA4_MAVERICK_TEXT)).moe.probs_on_input
    with pytest.raises(UserInputError, match="llama4_text with num_experts_per_tok 2 is not supported"):
        load_hf_config(write_config(tmp_path, {**LLAMA4_MAVERICK_TEXT, "num_experts_per_tok": 2}, "k2"))


def test_llama4s_nope_layers_are_read_from_no_rope_layers_or_its_interval(tmp_path):
    # Llama4TextConfig: no_rope_layers 0 = NoPE; absent, every no_rope_layer_interval-th layer is one.
    listed = load_hf_config(write_config(tmp_path, LLAMA4_MAVERICK_TEXT, "listed"))
    assert (listed.num_nope_layers, listed.window.local_layers, listed.window.global_layers) == (12, 3, 1)
    every_2nd = {**LLAMA4_MAVERICK_TEXT, "no_rope_layers": None, "no_rope_layer_interval": 2}
    assert load_hf_config(write_config(tmp_path, every_2nd, "every_2nd")).num_nope_layers == 24
    assert load_hf_config(write_config(tmp_path, DEEPSEEK_V3, "dsv3")).num_nope_layers == 0


def test_a_bad_field_read_before_llama4s_layers_is_the_one_named(tmp_path):
    # vocab_size is read before the window and the NoPE layers: a config bad in both names it.
    message = import_error(tmp_path, {**LLAMA4_MAVERICK_TEXT, "no_rope_layers": [1] * 48, "vocab_size": -3})
    assert "field 'vocab_size' must be a positive integer, got -3" in message


# DeepSeek-V3's published config.json: num_nextn_predict_layers 1; Kimi K2 is read as DeepSeek-V3
# (catalog.hf_kimi), so one with an MTP layer gets the same note. GLM's comes from the same helper
# (tests/catalog/test_hf_glm.py).
@pytest.mark.parametrize("cfg", [DEEPSEEK_V3, {**DEEPSEEK_V3, "model_type": "kimi_k2",
                                               "architectures": ["DeepseekV3ForCausalLM"]}])
def test_deepseek_v3s_mtp_layer_is_noted(tmp_path, cfg):
    spec = load_hf_config(write_config(tmp_path, cfg))
    assert spec.mtp_layers == 0  # planned only when asked
    assert import_notes(spec)[-1] == (
        "num_nextn_predict_layers 1: the checkpoint's multi-token-prediction layer is planned only with sp-plan "
        "--mtp-layers 1 (DeepSeek-V3's pretraining trains it: an MTP depth of 1, arXiv 2412.19437 s2.2 and s4.2; "
        "transformers' DeepseekV3Model does not build it)")
    none = load_hf_config(write_config(tmp_path, {**cfg, "num_nextn_predict_layers": 0}, "none"))
    assert not any(note.startswith("num_nextn_predict_layers") for note in import_notes(none))


def test_mtp_note_counts_the_layers():
    note = mtp_note({"num_nextn_predict_layers": 2}, Path("config.json"), trained_by="T", how="H", hf_model="M")
    assert note == ("num_nextn_predict_layers 2: the checkpoint's multi-token-prediction layers are planned only "
                    "with sp-plan --mtp-layers 2 (T trains them: H; transformers' M does not build them)")
    assert mtp_note({}, Path("config.json"), trained_by="T", how="H", hf_model="M") is None


# DeepSeek-V3's published config: n_group 8, topk_group 4 (each token within 4 of 8 groups, the nodes
# of its deployment, arXiv 2412.19437 s2.1.2): noted, and priced in the flex dispatchers' reach.
def test_deepseek_v3s_group_limited_routing_is_noted(tmp_path):
    spec = load_hf_config(write_config(tmp_path, DEEPSEEK_V3))
    note = (
        "group-limited routing (each token's experts within 4 of 8 expert groups, Megatron "
        "--moe-router-num-groups 8 --moe-router-group-topk 4, which sp-plan's Megatron flags carry) is priced where "
        "a token goes once a rank or node: the HybridEP and DeepEP dispatchers send it to the ranks and nodes of "
        "its chosen groups only (as Megatron's router chooses them from random logits); NCCL's all-to-all sends "
        "the same top-k copies a token either way")
    assert import_notes(spec)[0] == note
    # The spec keeps and prices it: its sources say "modelled", not "not modelled" as the MTP note does.
    assert MODELLED + note in spec.sources and NOT_MODELLED + note not in spec.sources
    assert [s.split(":")[0] for s in spec.sources if s.startswith((MODELLED, NOT_MODELLED))] == [
        "modelled", "not modelled"]
    # DeepseekV3Config's own defaults are 8 and 4: a config leaving both out is limited too.
    bare = {k: v for k, v in DEEPSEEK_V3.items() if k not in ("n_group", "topk_group")}
    assert import_notes(load_hf_config(write_config(tmp_path, bare, "bare")))[0].startswith(
        "group-limited routing (each token's experts within 4 of 8")
    open_cfg = {**DEEPSEEK_V3, "n_group": 1, "topk_group": 1}
    assert not any(n.startswith("group-limited") for n in import_notes(
        load_hf_config(write_config(tmp_path, open_cfg, "open"))))


def test_the_builtin_deepseek_v3_notes_its_group_routing_as_modelled(tmp_path):
    builtin = load_model("deepseek-v3")
    assert [s for s in builtin.sources if s.startswith(NOT_MODELLED)] == []
    assert [s for s in builtin.sources if s.startswith(MODELLED)] == [
        MODELLED + import_notes(load_hf_config(write_config(tmp_path, DEEPSEEK_V3)))[0] + "; HF config.json n_group 8, "
        "topk_group 4"]


def test_too_many_open_groups_are_refused():
    with pytest.raises(UserInputError, match="topk_group 5 exceeds n_group 4"):
        router_groups({"n_group": 4, "topk_group": 5}, Path("c.json"), default_groups=8, default_open=4)


def test_group_routing_note_says_where_megatron_ranks_the_groups_otherwise():
    assert group_routing_note(MoESpec(num_experts=256, top_k=8, moe_intermediate_size=64)) is None
    published = group_routing_note(MoESpec(num_experts=256, top_k=8, moe_intermediate_size=64, router_groups=8,
                                            router_group_topk=4))
    assert published is not None
    assert "--moe-router-group-topk 4, which sp-plan's Megatron flags carry) is priced where" in published
    other = group_routing_note(MoESpec(num_experts=256, top_k=8, moe_intermediate_size=64, router_groups=8,
                                        router_group_topk=2))
    assert other is not None and ("--moe-router-group-topk 2, which sp-plan's Megatron and MindSpeed flags refuse: "
                                  "Megatron-Core ranks a group by its top 8 // 2 scores, the model by its top 2) is "
                                  "priced where") in other
