"""sp-plan --model path/to/config.json: an imported Gemma or Llama 4 plans as its built-in twin, what
the import leaves out is one note, and a config the import refuses is one error line."""

from __future__ import annotations

import json

import pytest

from tests.catalog.hf_configs import GEMMA3_27B_PT, LLAMA4_SCOUT, MISTRAL_7B, write_config
from tests.cli.conftest import assert_one_line_error, notes_unwrapped

QUESTION = ["--hardware", "h100-sxm", "--nodes", "2", "--seq-len", "32k", "--framework", "all", "--format", "json"]


def _plans(result) -> list:
    """The ranked plans without their flags (whose notes name the model)."""
    assert result.exit_code == 0, result
    plans = [{k: v for k, v in plan.items() if k != "flags"} for plan in json.loads(result.stdout)["plans"]]
    assert plans
    return plans


def test_an_imported_gemma3_plans_as_the_builtin(sp_plan, tmp_path):
    imported = sp_plan("--model", write_config(tmp_path, GEMMA3_27B_PT), *QUESTION)
    assert _plans(imported) == _plans(sp_plan("--model", "gemma-3-27b", *QUESTION))
    assert imported.stderr == ""


def test_llama4_temperature_tuning_is_one_note_line(sp_plan, tmp_path):
    question = [*QUESTION[:3], "4", *QUESTION[4:]]  # 109B parameters need more than 16 GPUs
    imported = sp_plan("--model", write_config(tmp_path, LLAMA4_SCOUT), *question)
    assert _plans(imported) == _plans(sp_plan("--model", "llama-4-scout-17b-16e", *question))
    [note] = notes_unwrapped(imported.stderr)
    assert note.startswith("note: attn_temperature_tuning: Llama 4's full-attention (NoPE) layers")


def test_a_yarn_config_transformers_releases_read_apart_is_one_error_line(sp_plan, tmp_path):
    rope = {"rope_type": "yarn", "factor": 16.0, "mscale": 1.0, "mscale_all_dim": 1.0}
    path = write_config(tmp_path, {**MISTRAL_7B, "rope_scaling": rope})
    result = sp_plan("--model", path, *QUESTION)
    assert_one_line_error(result, str(path), "sets mscale 1 and mscale_all_dim 1 but no attention_factor")
    assert result.stdout == ""


def test_gpt_oss_plans_on_megatron_alone_with_ulysses_and_notes_what_it_leaves_out(sp_plan, tmp_path):
    from tests.catalog.hf_configs import GPT_OSS_20B

    cfg = {**GPT_OSS_20B, "_name_or_path": "openai/gpt-oss-20b"}
    result = sp_plan("--model", write_config(tmp_path, cfg), *QUESTION)
    plans = json.loads(result.stdout)["plans"]
    assert result.exit_code == 0 and plans
    notes = notes_unwrapped(result.stderr)
    starts = ("note: gpt-oss's o_proj, router and expert biases", "note: the experts' clamped SwiGLU",
              "note: the attention sinks", "note: quantization_config mxfp4")
    assert len(notes) == len(starts) and all(n.startswith(s) for n, s in zip(notes, starts))
    # Only Megatron-LM runs the sinks, and never over a ring (TE's a2a only).
    runs = [(name, plan) for plan in plans for name, flags in plan["flags"].items() if flags["supported"]]
    assert runs and {name for name, _ in runs} == {"megatron"}
    assert all(plan["ring"] == 1 for _, plan in runs)


def test_a_kernel_that_cannot_run_sinks_is_one_error_line(sp_plan, tmp_path):
    from tests.catalog.hf_configs import GPT_OSS_20B

    path = write_config(tmp_path, {**GPT_OSS_20B, "_name_or_path": "openai/gpt-oss-20b"})
    result = sp_plan("--model", path, *QUESTION, "--attention-kernel", "fa3")
    assert_one_line_error(result, "--attention-kernel fa3: gpt-oss-20b's learnable softmax runs in Transformer "
                          "Engine's FusedAttention (cuDNN) only")
    assert result.stdout == ""


def test_builtin_gpt_oss_plans_and_notes_as_its_config(sp_plan, tmp_path):
    from tests.catalog.hf_configs import GPT_OSS_20B

    imported = sp_plan("--model", write_config(tmp_path, {**GPT_OSS_20B, "_name_or_path": "openai/gpt-oss-20b"}),
                       *QUESTION)
    builtin = sp_plan("--model", "gpt-oss-20b", *QUESTION)
    assert _plans(builtin) == _plans(imported)
    assert builtin.stderr == imported.stderr and len(notes_unwrapped(builtin.stderr)) == 4


def test_glm_45_plans_as_its_config_on_megatron_and_all_frameworks(sp_plan, tmp_path):
    from tests.catalog.test_hf_glm import GLM_45

    question = [*QUESTION[:3], "16", *QUESTION[4:]]  # 355B parameters need more than 2 nodes at 32K
    megatron = [*question[:-3], "megatron", *question[-2:]]
    imported = sp_plan("--model", write_config(tmp_path, GLM_45), *megatron)
    builtin = sp_plan("--model", "glm-4.5", *megatron)
    assert _plans(builtin) == _plans(imported) and builtin.stderr == imported.stderr
    notes = notes_unwrapped(builtin.stderr)
    assert [n.split(":")[1].strip() for n in notes] == ["partial RoPE", "num_nextn_predict_layers 1"]
    every = sp_plan("--model", "glm-4.5", *question)
    assert [{k: v for k, v in p.items() if k != "flags"} for p in json.loads(every.stdout)["plans"]] == _plans(builtin)
    assert all(p["flags"]["megatron"]["supported"] for p in json.loads(every.stdout)["plans"])


def test_gpt_oss_on_ampere_says_its_attention_curve_stands_in_for_cudnn(sp_plan):
    # TE runs the sink softmax in cuDNN, whose Ampere curve is unpublished: the FA2 curve times it, said.
    question = ("--hardware", "a800", "--nodes", "1", "--seq-len", "32k", "--framework", "megatron", "--top", "1")
    notes = notes_unwrapped(sp_plan("--model", "gpt-oss-20b", *question).stderr)
    assert notes[0] == ("note: gpt-oss-20b's learnable softmax runs in Transformer Engine's FusedAttention (cuDNN), "
                        "whose attention curve on A800 is not published: its attention is timed with the fa2 curve, "
                        "a stand-in")
    assert not any("stand-in" in n for n in notes_unwrapped(sp_plan("--model", "llama3-8b", *question).stderr))


def test_gpt_oss_under_torchtitan_says_its_flexattention_is_timed_with_a_stand_in(sp_plan):
    # torchtitan's gpt_oss runs FlexAttention, none of sp-plan's kernels: its default SDPA curve and a
    # given one alike stand in, said; a given one was refused as if TE's FusedAttention ran the model.
    question = ("--hardware", "h100-sxm", "--nodes", "1", "--seq-len", "32k", "--framework", "torchtitan",
                "--top", "1")
    for extra in ((), ("--attention-kernel", "fa3")):
        result = sp_plan("--model", "gpt-oss-20b", *question, *extra)
        assert result.exit_code in (0, 1) and result.stdout
        kernel = extra[1] if extra else "sdpa"
        assert notes_unwrapped(result.stderr)[0] == (
            "note: torchtitan runs gpt-oss-20b's learnable softmax in its gpt_oss model's FlexAttention, which has "
            f"no published attention curve: its attention is timed with the {kernel} curve, a stand-in")


# DeepSeek-V3's config.json cut to 4 layers (1 dense) and 64 experts, so one node plans it in seconds.
DEEPSEEK_MINI = {"_name_or_path": "my-org/DSV3-mini", "num_hidden_layers": 4, "first_k_dense_replace": 1,
                 "n_routed_experts": 64}


@pytest.mark.parametrize(("router", "reason"), [
    ({"norm_topk_prob": False}, "router_topk_norm false cannot be expressed: DSV3-mini's sigmoid router keeps its top "
                                "8 scores unnormalised (HF norm_topk_prob false), and Megatron-Core divides a sigmoid "
                                "router's top k by their sum; run the model's own router instead"),
    ({"n_group": 8, "topk_group": 2}, "router_groups 8 with router_group_topk 2 cannot be expressed: Megatron-Core "
                                      "ranks each expert group by its top top_k // group_topk = 8 // 2 = 4 scores, "
                                      "DSV3-mini's router (HF n_group / topk_group) by its top 2"),
])
def test_a_router_megatron_computes_otherwise_is_refused_in_one_line(sp_plan, tmp_path, router, reason):
    from tests.catalog.hf_configs import DEEPSEEK_V3

    path = write_config(tmp_path, {**DEEPSEEK_V3, **DEEPSEEK_MINI, **router})
    question = ["--model", str(path), "--hardware", "h100-sxm", "--nodes", "1", "--seq-len", "4k", "--top", "3"]
    megatron = sp_plan(*question, "--framework", "megatron")
    assert megatron.exit_code == 1  # no plan the framework can run
    text = " ".join(megatron.stdout.split())
    assert f"megatron cannot express plan 1: {reason}" in text
    assert "No plan that fits can be expressed in megatron" in text
    every = sp_plan(*question, "--framework", "all", "--format", "json")
    assert every.exit_code == 0
    flags = json.loads(every.stdout)["plans"][0]["flags"]
    assert reason in flags["megatron"]["reason"]
    assert reason.replace("Megatron-Core", "MindSpeed's Megatron-Core 0.12.1") in flags["mindspeed"]["reason"]
    published = sp_plan(*question[:1], str(write_config(tmp_path, {**DEEPSEEK_V3, **DEEPSEEK_MINI}, "published")),
                        *question[2:], "--framework", "megatron")
    assert published.exit_code == 0 and "--moe-router-group-topk 4" in published.stdout


def test_a_normalised_sigmoid_top_1_router_is_refused_before_planning(sp_plan, tmp_path):
    # HF's DeepSeek-V3 router weighs a top-1 expert 1 under norm_topk_prob true, Megatron-Core by its score:
    # one line, exit 2 (a usage error), no plan.
    from tests.catalog.hf_configs import DEEPSEEK_V3

    path = write_config(tmp_path, {**DEEPSEEK_V3, **DEEPSEEK_MINI, "num_experts_per_tok": 1, "n_group": 1,
                                   "topk_group": 1})
    result = sp_plan("--model", str(path), "--hardware", "h100-sxm", "--nodes", "1", "--seq-len", "4k")
    assert result.exit_code == 2 and not result.stdout
    assert "num_experts_per_tok 1 with norm_topk_prob true is not supported" in " ".join(result.stderr.split())


def test_deepseek_v32_is_planned_on_hopper_and_refused_where_no_sparse_mla_backward_is_published(sp_plan, tmp_path):
    from tests.catalog.test_hf_dsa import DEEPSEEK_V32_EXP

    path = write_config(tmp_path, DEEPSEEK_V32_EXP)
    result = sp_plan("--model", path, "--hardware", "b200", "--nodes", "32", "--seq-len", "128k")
    assert_one_line_error(result, f"--model {path} --hardware b200: DeepSeek-V3.2-Exp uses DeepSeek Sparse Attention",
                          "none is published for sparse MLA's backward", "use --hardware h800")
    assert result.stdout == ""
    result = sp_plan("--model", path, "--hardware", "h800", "--nodes", "32", "--seq-len", "128k", "--ulysses", "2")
    assert_one_line_error(result, "the pinned plan breaks the dsa_cp rule: ulysses 2 cannot run DeepSeek Sparse "
                          "Attention", "use --cp-comm allgather on the ring axis, ulysses 1")
    result = sp_plan("--model", path, "--hardware", "h800", "--nodes", "32", "--seq-len", "128k", "--tp", "1",
                     "--ring", "32", "--cp-comm", "allgather", "--pp", "1", "--ep", "16", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert "--experimental-attention-variant dsa" in result.stdout and "--dsa-kernel-backend tilelang" in result.stdout
