"""A sink softmax (ModelSpec.softmax_type; gpt-oss) runs on Megatron-LM, with ulysses (TE's a2a) and
not the ring, and on torchtitan without cp or pp; Megatron gets --softmax-type; megatron-core
0.16.1's own TransformerConfig accepts the flags and refuses biased experts under expert tensor
parallelism (flags.softmax, flags.megatron_moe.expert_bias_failures)."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hf_config, load_model
from sp_planner.flags import FRAMEWORKS, FlagRequest, render_flags
from sp_planner.flags.softmax import softmax_failures, softmax_kernel_problem, softmax_timing_note
from sp_planner.plan import ParallelPlan
from sp_planner.specs.workload import Workload
from tests.catalog.hf_configs import GPT_OSS_20B, write_config
from tests.flags.conftest import parse_bash_array
from tests.flags.test_megatron_moe import transformer_config


@pytest.fixture
def gpt_oss(tmp_path):
    return load_hf_config(write_config(tmp_path, {**GPT_OSS_20B, "_name_or_path": "openai/gpt-oss-20b"}))


def _request(model, plan: ParallelPlan, seq_len: int = 65536) -> FlagRequest:
    return FlagRequest(model=model, workload=Workload(seq_len=seq_len, global_batch=plan.dp * 4), plan=plan,
                       num_nodes=plan.world_size // 8, gpus_per_node=8)


def test_megatron_runs_gpt_oss_under_ulysses_with_the_softmax_type(gpt_oss):
    plan = ParallelPlan(tp=2, ulysses=4, dp=2, ep=8, etp=1, recompute="full")
    flags = render_flags("megatron", _request(gpt_oss, plan))
    assert flags.supported, flags.reason
    args = parse_bash_array(flags.text)
    assert args["--softmax-type"] == ["learnable"] and args["--cp-comm-type"] == ["a2a"]
    assert "--disable-bias-linear" not in args  # the experts' biases stay (add_bias_linear)
    config = transformer_config(flags.text, gpt_oss.hidden_size)
    assert config.softmax_type == "learnable" and config.add_bias_linear
    assert (config.num_moe_experts, config.moe_router_topk, config.expert_tensor_parallel_size) == (32, 4, 1)
    assert any("Transformer Engine >= 2.8 with cuDNN >= 9.13.1" in note for note in flags.notes)


def test_megatron_core_refuses_biased_experts_under_etp_as_the_flags_do(gpt_oss):
    plan = ParallelPlan(tp=2, ulysses=4, dp=2, ep=4, etp=2, recompute="full")
    flags = render_flags("megatron", _request(gpt_oss, plan))
    assert not flags.supported
    assert ("etp 2 cannot be expressed: gpt-oss-20b's experts carry biases, which Megatron-Core allows only with "
            "expert tensor parallelism 1; plan with --etp 1") in flags.reason
    # The rule is megatron-core's own: the same model flags with ETP 2 fail its __post_init__.
    ok = render_flags("megatron", _request(gpt_oss, ParallelPlan(tp=2, ulysses=4, dp=2, ep=4, etp=1,
                                                                 recompute="full")))
    with pytest.raises(AssertionError, match="Bias in Moe is only supported when ETP==1"):
        transformer_config(ok.text.replace("--expert-tensor-parallel-size 1", "--expert-tensor-parallel-size 2"),
                           gpt_oss.hidden_size)


def test_ring_is_refused_even_where_the_window_spans_the_sequence(gpt_oss):
    # At seq_len <= the window the window rule lets a ring through; TE still runs sinks with CP as a2a only.
    request = _request(gpt_oss, ParallelPlan(tp=1, ring=2, dp=4, ep=8, etp=1), seq_len=128)
    assert softmax_failures("megatron", request) == [
        "ring 2 cannot run gpt-oss-20b's learnable softmax (attention sinks): Transformer Engine runs it with context "
        "parallelism only as cp_comm_type a2a; move the degree to ulysses"]


@pytest.mark.parametrize("framework", ["mindspeed", "deepspeed", "yunchang"])
def test_frameworks_without_a_sink_kernel_are_refused(gpt_oss, framework):
    flags = render_flags(framework, _request(gpt_oss, ParallelPlan(tp=1, ulysses=8, dp=1, ep=8, etp=1)))
    assert not flags.supported
    assert f"gpt-oss-20b's learnable softmax (attention sinks) cannot be run by {framework}" in flags.reason
    assert "use --framework megatron" in flags.reason


def test_torchtitan_is_refused_context_parallelism_for_it(gpt_oss):
    request = _request(gpt_oss, ParallelPlan(tp=1, ulysses=2, dp=4, ep=8, etp=1))
    assert softmax_failures("torchtitan", request) == [
        "gpt-oss-20b's learnable softmax (attention sinks) with context parallelism (cp 2) cannot be run by "
        "torchtitan: its gpt_oss model refuses context_parallel_degree > 1; use --framework megatron with ulysses"]
    assert softmax_failures("torchtitan", _request(gpt_oss, ParallelPlan(tp=2, dp=4, ep=8, etp=1))) == []


def test_torchtitan_is_refused_a_pipeline_for_it(gpt_oss):
    # torchtitan's gpt_oss registers pipelining_fn=None: its trainer raises on pp > 1. The flags
    # expressed such a plan (0.2.2's TOML, pipeline_parallel_degree = 2) until this rule.
    request = _request(gpt_oss, ParallelPlan(tp=2, pp=2, dp=2, ep=4, etp=1))
    assert softmax_failures("torchtitan", request) == [
        "gpt-oss-20b's learnable softmax (attention sinks) with pipeline parallelism (pp 2) cannot be run by "
        "torchtitan: its gpt_oss model has no pipelining_fn; use pp 1 or --framework megatron"]
    toml = {"framework_version": "0.2.2"}  # 0.3.0 needs a config function, which no gpt-oss plan has
    flags = render_flags("torchtitan", request.model_copy(update=toml))
    assert not flags.supported and "pipeline parallelism (pp 2)" in flags.reason
    vanilla = _request(load_model("Qwen3-30B-A3B"), request.plan).model_copy(update=toml)
    assert render_flags("torchtitan", vanilla).supported


def test_vanilla_models_are_untouched():
    request = _request(load_model("Qwen3-30B-A3B"), ParallelPlan(tp=1, ring=2, dp=4, ep=8, etp=1))
    assert all(softmax_failures(framework, request) == [] for framework in FRAMEWORKS)
    assert "--softmax-type" not in parse_bash_array(render_flags("megatron", request).text)


@pytest.mark.parametrize("kernel", ["fa2", "fa3", "sdpa", "npu"])
def test_an_attention_kernel_without_sinks_is_refused(gpt_oss, kernel):
    assert softmax_kernel_problem(gpt_oss, kernel, "megatron") == (
        f"--attention-kernel {kernel}: gpt-oss-20b's learnable softmax runs in Transformer Engine's FusedAttention "
        "(cuDNN) only, and the other kernels take no sink logit; use --attention-kernel cudnn or "
        "leave it out")
    assert softmax_kernel_problem(gpt_oss, "cudnn", "megatron") is None
    assert softmax_kernel_problem(gpt_oss, None, "megatron") is None
    assert softmax_kernel_problem(load_model("Llama-3-8B"), kernel, "megatron") is None
    # torchtitan runs FlexAttention, none of the kernels: the timing note says the curve stands in.
    assert softmax_kernel_problem(gpt_oss, kernel, "torchtitan") is None


def test_a_curve_standing_in_for_cudnn_is_said(gpt_oss):
    # No cuDNN curve is published for Ampere: Megatron's plans there time attention with the
    # profile's FA2 curve, and say so; on cuDNN (or a measured profile's own curves) nothing is said.
    assert softmax_timing_note(gpt_oss, "fa2", "A800", "megatron") == (
        "gpt-oss-20b's learnable softmax runs in Transformer Engine's FusedAttention (cuDNN), whose attention "
        "curve on A800 is not published: its attention is timed with the fa2 curve, a stand-in")
    assert softmax_timing_note(gpt_oss, "cudnn", "H100-SXM", "megatron") is None
    assert softmax_timing_note(gpt_oss, None, "A800", "megatron") is None
    assert softmax_timing_note(load_model("Llama-3-8B"), "fa2", "A800", "megatron") is None
    assert softmax_timing_note(gpt_oss, "fa2", "A800", "deepspeed") is None  # refused by the flags anyway


def test_torchtitan_times_the_sinks_flexattention_with_a_stand_in_curve_and_says_so(gpt_oss):
    # torchtitan's gpt_oss runs FlexAttention only; sp-plan timed it with its SDPA curve silently, and
    # refused an explicit --attention-kernel sdpa as if TE's FusedAttention ran it.
    assert softmax_timing_note(gpt_oss, "sdpa", "H100-SXM", "torchtitan") == (
        "torchtitan runs gpt-oss-20b's learnable softmax in its gpt_oss model's FlexAttention, which has no "
        "published attention curve: its attention is timed with the sdpa curve, a stand-in")
    assert softmax_timing_note(gpt_oss, None, "H100-SXM", "torchtitan") is None  # a measured profile's own
    assert softmax_timing_note(load_model("Llama-3-8B"), "sdpa", "H100-SXM", "torchtitan") is None
