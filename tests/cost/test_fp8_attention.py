"""FP8 core attention from cuDNN's FP8 and BF16 SDPA measured side by side (cost/fp8_attention.py)."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.fp8_attention import fp8_speedup, with_fp8_attention
from sp_planner.cost.kernels import curve_efficiency


def test_speedups_at_the_measured_lengths():
    # sdpa_fp8_benchmark_results_NVIDIA_B200.csv (0b1577c8): 8K forward 1502.114 / 1384.231 TFLOPS,
    # 512 forward 196.081 / 244.143 (FP8 loses at short blocks).
    assert float(fp8_speedup("B200", 8192, backward=False)) == pytest.approx(1502.114 / 1384.231)
    assert float(fp8_speedup("B200", 512, backward=False)) == pytest.approx(196.081 / 244.143)
    # ..._GB200.csv (b372d39): 4K backward 1088 / 1054; flat past 128K (2172 / 1471).
    assert float(fp8_speedup("GB200", 4096, backward=True)) == pytest.approx(1088 / 1054)
    assert float(fp8_speedup("GB200", 1 << 20, backward=False)) == pytest.approx(2172 / 1471)


def test_profile_curves_scale_by_the_ratio():
    gb200 = load_hardware("gb200-nvl72")
    fp8 = with_fp8_attention(gb200)
    for backward, name in ((False, "attention_fwd"), (True, "attention_bwd")):
        at = getattr(gb200.efficiency, name)[3].tokens
        ratio = float(curve_efficiency(getattr(fp8.efficiency, name), at)
                      / curve_efficiency(getattr(gb200.efficiency, name), at))
        assert ratio == pytest.approx(float(fp8_speedup("GB200", at, backward=backward)), abs=0.01)
    assert fp8.efficiency.attention_causal_fwd == gb200.efficiency.attention_causal_fwd


def test_hopper_has_no_fp8_attention_curve():
    with pytest.raises(ValueError, match="no published FP8 attention"):
        with_fp8_attention(load_hardware("h100"))


def test_applied_once_whichever_path_brings_it():
    # sp-plan scales the question's profile; evaluate() and the simulator scale a plain one for a
    # plan with fp8_attention; a plan file keeps the scaled profile: each applies it once.
    from sp_planner.catalog import load_model
    from sp_planner.plan import ParallelPlan
    from sp_planner.search import evaluate
    from sp_planner.specs import Workload

    b200 = load_hardware("b200")
    once = with_fp8_attention(b200)
    assert once.efficiency.attention_fp8 and with_fp8_attention(once) == once
    plan = ParallelPlan(tp=2, dp=4, zero=1, precision="mxfp8", fp8_attention=True)
    kw = dict(num_nodes=1, gpus_per_node=8)
    model, workload = load_model("llama3-8b"), Workload(seq_len=8192, global_batch=64)
    assert evaluate(model, b200, workload, plan, **kw).step_time_s == evaluate(model, once, workload, plan,
                                                                                **kw).step_time_s
    plain = evaluate(model, b200, workload, plan.model_copy(update={"fp8_attention": False}), **kw)
    assert plain.step_time_s > evaluate(model, b200, workload, plan, **kw).step_time_s
