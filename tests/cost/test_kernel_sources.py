"""cost.kernel_sources: the attention curves' sources follow the kernel whose curves time the plans."""

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel
from sp_planner.report.assumptions import profile_rows

FWD, BWD = "efficiency.attention_fwd", "efficiency.attention_bwd"


def test_another_kernels_curves_cite_their_benchmark_not_the_profiles():
    # B200 under attention dropout: Megatron is timed with FA2's curve (0.05 of peak at 512 tokens
    # forward), which the report listed under cuDNN 9.13.1's benchmark, the profile's own curve.
    b200 = load_hardware("b200")
    assert b200.sources[FWD].startswith("cuDNN 9.13.1 called directly")
    fa2 = with_attention_kernel(b200, "fa2")
    assert round(fa2.efficiency.attention_fwd[0].efficiency, 2) == 0.05
    for field in (FWD, BWD):
        assert fa2.sources[field].startswith("flash-attn 2's curve, which times the plans in place of the profile's "
                                             "own (cuDNN's fused attention's): ")
        assert "backend flash_attention (flash-attn 2.7.4)" in fa2.sources[field]
    row = next(row for row in profile_rows(fa2) if row.field == FWD)
    assert row.value.startswith("512: 0.05") and row.sources[0] == fa2.sources[FWD]
    # Megatron's cuDNN on H100 replaces the profile's FA3 curve; the profile's own kernel keeps its source.
    h100 = load_hardware("h100-sxm")
    assert "_HOPPER_TFLOPS" in with_attention_kernel(h100, "cudnn").sources[FWD]
    assert with_attention_kernel(h100, "fa3").sources == h100.sources
    assert with_attention_kernel(b200, "cudnn").sources == b200.sources
    # Applied twice (a plan file's profile, loaded again): the same.
    assert with_attention_kernel(fa2, "fa2").sources == fa2.sources


def test_unfused_attention_says_the_curves_time_nothing_once():
    l40s = load_hardware("l40s")
    unfused = with_attention_kernel(l40s, UNFUSED)
    lead = "not what times attention here: Transformer Engine's unfused attention does (sp_planner.cost.kernels); "
    assert unfused.sources[FWD] == lead + l40s.sources[FWD]
    assert with_attention_kernel(unfused, UNFUSED).sources == unfused.sources
