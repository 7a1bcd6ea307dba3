"""cost.attention_kernels: the kernel a profile's curves measure and each kernel's published curves."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import (kernel_curves, kernel_head_dim, own_attention, padded_head_dim,
                                               timed_kernel, with_attention_kernel)
from sp_planner.cost.framework_kernels import default_kernel
from sp_planner.cost.kernels import curve_efficiency, flash_time_s
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs.workload import Workload

H100, A100, B200 = load_hardware("h100-sxm"), load_hardware("a100-80gb"), load_hardware("b200")
GB200 = load_hardware("gb200-nvl72")
B300, GB300 = load_hardware("b300"), load_hardware("gb300-nvl72")


def test_hopper_curves_are_the_fa3_papers_figures():
    # FA3 paper, head_dim 128 non-causal at 16K: FA2 370 fwd / 322 bwd, cuDNN 595 / 516 TFLOPS.
    fa2 = with_attention_kernel(H100, "fa2").efficiency
    cudnn = with_attention_kernel(H100, "cudnn").efficiency
    assert curve_efficiency(fa2.attention_fwd, 16384) == pytest.approx(370 / 989, abs=6e-4)
    assert curve_efficiency(fa2.attention_bwd, 16384) == pytest.approx(322 / 989, abs=6e-4)
    assert curve_efficiency(cudnn.attention_fwd, 16384) == pytest.approx(595 / 989, abs=6e-4)
    # The profile's own curve is FA3's: asking for it changes nothing.
    assert with_attention_kernel(H100, "fa3").efficiency == H100.efficiency


def test_attention_time_scales_with_the_kernels_throughput():
    # One GPU, 32K tokens, causal: every attention call has 32K keys, past the curves' last point,
    # so the forward+backward attention time scales as (1/fwd + 2.5/bwd) of the 16K TFLOPS times
    # each kernel's causal ratio at 32K. FA3: its 16K ratios held, forward 616/648 (FA3 paper),
    # backward 186/196 (FA2 paper, A100). FA2: halfway (in log tokens) from its 16K ratios, forward
    # 335/370 and backward 186/196, to SDPA's measured 64K ones, 343.3/354.3 and 1 (H200).
    model, w, plan = load_model("llama3-8b"), Workload(seq_len=32768, global_batch=1), ParallelPlan(dp=1)
    t = {k: evaluate(model, with_attention_kernel(H100, k), w, plan, num_nodes=1, gpus_per_node=1).time.attention_s
         for k in ("fa2", "fa3")}
    bwd_ratio = 186 / 196
    fa2_fwd, fa2_bwd = 370 * (335 / 370 + 343.3 / 354.3) / 2, 322 * (bwd_ratio + 1.0) / 2
    expected = (1 / fa2_fwd + 2.5 / fa2_bwd) / (1 / 616 + 2.5 / (561 * bwd_ratio))
    assert t["fa2"] / t["fa3"] == pytest.approx(expected, rel=2e-3)


def test_blackwell_ultra_fa2_is_b200s_tflops_over_its_own_peak():
    # No FA2 run on Blackwell Ultra is published: B200's flash-attn 2.7.4 TFLOPS are kept, so the
    # efficiency scales with the peak (GB300 2500 against B200 2250), while cuDNN is GB300's own.
    for hw in (B300, GB300):
        fa2, b200_fa2 = with_attention_kernel(hw, "fa2").efficiency, with_attention_kernel(B200, "fa2").efficiency
        for tokens in (4096, 16384):
            assert curve_efficiency(fa2.attention_fwd, tokens) * hw.peak_bf16_flops == pytest.approx(
                curve_efficiency(b200_fa2.attention_fwd, tokens) * B200.peak_bf16_flops, rel=4e-3)  # 3-decimal curves
    # cuDNN on GB300 at 8K: 2017 TFLOPS non-causal forward (cudnn-frontend llama3.1 gb300 CSV).
    assert curve_efficiency(GB300.efficiency.attention_fwd, 8192) * 2500 == pytest.approx(2017, abs=1.3)


def test_unpublished_kernel_is_refused_with_the_choices():
    expected = "no published cudnn attention curve for hardware 'A100-80GB'; choose one of fa2, sdpa"
    with pytest.raises(ValueError, match=expected):
        with_attention_kernel(A100, "cudnn")
    with pytest.raises(ValueError, match="unknown attention kernel 'fa9'"):
        with_attention_kernel(H100, "fa9")
    # One choice, or none: the refusal read "choose one of npu" and "choose one of none (...)".
    with pytest.raises(ValueError, match="no published cudnn attention curve for hardware 'Ascend-910B'; choose npu$"):
        with_attention_kernel(load_hardware("ascend-910b"), "cudnn")
    with pytest.raises(ValueError, match="for hardware 'MI300X'; it has only its profile's own curve: omit "
                                         "--attention-kernel$"):
        with_attention_kernel(load_hardware("mi300x"), "fa3")


@pytest.mark.parametrize("kernel,head_dim,padded", [
    ("fa2", 128, 128), ("fa2", 112, 128), ("fa2", 80, 96), ("fa2", 200, 256), ("fa2", 64, 64),
    ("sdpa", 112, 128),  # PyTorch's flash backend vendors flash-attn 2's rounding
    ("fa3", 80, 96), ("fa3", 112, 128), ("fa3", 160, 192), ("fa3", 256, 256),
    ("flash-attn-triton", 112, 128), ("flash-attn-triton", 80, 128), ("flash-attn-triton", 8, 16),
    ("cudnn", 112, 112), ("cudnn", 80, 80),
])
def test_padded_head_dim_follows_each_kernels_tile_rounding(kernel, head_dim, padded):
    assert padded_head_dim(with_attention_kernel(H100, kernel), head_dim) == padded


def test_padded_head_dim_defaults_to_the_profiles_own_kernel():
    assert padded_head_dim(H100, 112) == 128  # the Hopper profiles' own curves are FA3's
    assert padded_head_dim(A100, 80) == 96  # Ampere's FA2
    assert padded_head_dim(B200, 112) == 112  # Blackwell's cuDNN


@pytest.mark.parametrize("kernel,ratio", [("fa2", 1.0), ("cudnn", 112 / 128)])
def test_a_padded_head_dim_costs_the_full_tile(kernel, ratio):
    hw = with_attention_kernel(H100, kernel)
    args = dict(batch=1, heads=8, q_tokens=4096, kv_tokens=4096, causal_diagonal=False, backward=False)
    t112, t128 = (flash_time_s(hw, head_dim=d, **args) for d in (112, 128))
    assert t112 / t128 == pytest.approx(ratio, rel=1e-12)


def test_mla_costs_its_query_and_value_dims_each_at_their_tile():
    # DeepSeek-V3: queries/keys 128 + 64 = 192, values 128; the model's head_dim is their mean, 160,
    # which FA3 alone would round to 192. 192 and 128 are tiles of every kernel.
    model = load_model("DeepSeek-V3")
    assert model.head_dim == 160
    for kernel in ("fa2", "fa3", "cudnn"):
        assert kernel_head_dim(with_attention_kernel(H100, kernel), model) == 160.0
    assert padded_head_dim(with_attention_kernel(H100, "fa3"), 160) == 192


def test_the_step_and_the_simulator_both_pay_the_padded_tile():
    # A head dim of 112 under FA2 (tile 128): the analytic layer and the simulator's steps both take
    # 128/112 of the time the same kernel would take at 112 unpadded (cuDNN's rule).
    from sp_planner.cost.attention import attention_times
    from sp_planner.sim.attention_steps import attention_steps

    model = load_model("Llama-2-7B").model_copy(update={"head_dim": 112})
    fa2 = with_attention_kernel(A100, "fa2")
    unpadded = fa2.model_copy(update={"efficiency": fa2.efficiency.model_copy(
        update={"attention_head_dim_rounding": "none"})})
    args = dict(batch=1, seq_len=8192, num_heads=32, num_kv_heads=32, head_dim=112, tp=1, ulysses=1, ring=1,
                causal=True, zigzag=True, gpus_per_node=8, elem_bytes=2)
    padded_s, plain_s = (attention_times(hw, **args, kernel_head_dim=kernel_head_dim(hw, model)).fwd_compute_s
                         for hw in (fa2, unpadded))
    assert padded_s / plain_s == pytest.approx(128 / 112, rel=1e-12)
    sim = [attention_steps(hw, model, batch=1, seq_len=8192, tp=1, ulysses=1, ring=1, causal=True,
                           zigzag=True).fwd_steps_s[0] for hw in (fa2, unpadded)]
    assert sim[0] / sim[1] == pytest.approx(128 / 112, rel=1e-12)
    assert sim[0] == pytest.approx(float(padded_s), rel=1e-12)


def _halved_attention(profile):
    """A copy of `profile` whose forward attention curve a user halved by hand."""
    fwd = tuple(p.model_copy(update={"efficiency": p.efficiency / 2}) for p in profile.efficiency.attention_fwd)
    return profile.model_copy(update={"efficiency": profile.efficiency.model_copy(update={"attention_fwd": fwd})})


def test_a_profile_whose_curves_were_edited_keeps_them_under_every_framework_default():
    # A copy of H100-SXM with its attention curve halved by hand: the framework's published default
    # (cuDNN under Megatron) replaced it without a word (the step did not move); its curves now time
    # the plans as a calibrated profile's do, and --attention-kernel still picks a published curve.
    h100 = load_hardware("h100-sxm")
    for mine in (_halved_attention(h100), _halved_attention(h100).model_copy(update={"name": "mine",
                                                                                     "base_profile": "H100-SXM"})):
        assert own_attention(mine) and not own_attention(h100)
        assert default_kernel("megatron", mine) is None and default_kernel("megatron", h100) == "cudnn"
        assert timed_kernel(mine, None) is None and timed_kernel(h100, None) == "fa3"
        # The published curves are read from the built-in, not from the edited copy.
        assert kernel_curves(mine, "fa3") == (h100.efficiency.attention_fwd, h100.efficiency.attention_bwd)
        assert with_attention_kernel(mine, "cudnn").efficiency.attention_fwd == \
            with_attention_kernel(h100, "cudnn").efficiency.attention_fwd
    # A renamed copy of no built-in GPU has only its own curves: nothing to tell apart.
    assert not own_attention(_halved_attention(h100).model_copy(update={"name": "my-cluster"}))


def test_the_timed_kernel_is_the_chosen_one_else_the_profiles_own():
    # Megatron on Ampere has no cuDNN curve: default_kernel gives fa2, the A100 profile's own.
    assert timed_kernel(A100, default_kernel("megatron", A100)) == "fa2"
    assert timed_kernel(A100, None) == "fa2" and timed_kernel(H100, None) == "fa3"
    assert timed_kernel(H100, "cudnn") == "cudnn"


def test_the_kernels_that_time_plans_are_the_named_ones_and_transformer_engines_unfused():
    from typing import get_args

    from sp_planner.cost.attention_kernels import ATTENTION_KERNELS, UNFUSED, TimedKernel

    assert get_args(TimedKernel) == (*ATTENTION_KERNELS, UNFUSED)
