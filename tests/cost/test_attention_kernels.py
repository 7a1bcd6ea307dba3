"""cost.attention_kernels: the kernel each framework runs and its published curves."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import default_kernel, with_attention_kernel
from sp_planner.cost.kernels import curve_efficiency
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs.workload import Workload

H100, A100, B200 = load_hardware("h100-sxm"), load_hardware("a100-80gb"), load_hardware("b200")
GB200 = load_hardware("gb200-nvl72")
B300, GB300 = load_hardware("b300"), load_hardware("gb300-nvl72")


@pytest.mark.parametrize("framework,hardware,kernel", [
    ("megatron", H100, "cudnn"),  # TE prefers cuDNN fused attention on Hopper+
    ("megatron", A100, "fa2"),  # and flash-attn 2 on Ampere
    ("torchtitan", H100, "sdpa"),  # SDPA's FA2-based flash backend
    ("yunchang", H100, "fa2"),
    ("megatron", B200, "cudnn"),  # the B200 profile's own curves are cuDNN's (cudnn-frontend)
    ("torchtitan", B200, "sdpa"),
    ("yunchang", B200, "fa2"),
    ("megatron", GB200, "cudnn"),
    ("torchtitan", GB200, "sdpa"),
    ("megatron", B300, "cudnn"),  # Blackwell Ultra: the profiles' own curves are cuDNN's (GB300)
    ("megatron", GB300, "cudnn"),
    ("torchtitan", GB300, "sdpa"),
    ("yunchang", B300, "fa2"),
])
def test_framework_defaults(framework, hardware, kernel):
    assert default_kernel(framework, hardware) == kernel


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
    # each kernel's causal ratio at 16K: forward FA2 335/370, FA3 616/648 (FA3 paper); backward
    # 186/196 for both (FA2 paper, A100).
    model, w, plan = load_model("llama3-8b"), Workload(seq_len=32768, global_batch=1), ParallelPlan(dp=1)
    t = {k: evaluate(model, with_attention_kernel(H100, k), w, plan, num_nodes=1, gpus_per_node=1).time.attention_s
         for k in ("fa2", "fa3")}
    bwd_ratio = 186 / 196
    expected = (1 / 335 + 2.5 / (322 * bwd_ratio)) / (1 / 616 + 2.5 / (561 * bwd_ratio))
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
