"""Contraction-length factor of the layer GEMMs (cost.gemm_shapes), against OpenXLA's H100 and B200
tables: bf16 TFLOPS at (b, m, n) = (2, 4096, 4096), (4, 2048, 4096), (4, 4096, 4096) by k. The layer
factors also carry each GEMM's output-size factor (cost.gemm_outputs, checked against the table in
tests/cost/test_gemm_outputs.py), taken here at the shapes enumerated by hand."""

import math

import numpy as np
import pytest

from sp_planner.catalog.hardware import load_hardware as builtin_hardware
from sp_planner.cost.gemm_outputs import output_ratio
from sp_planner.cost.gemm_shapes import contraction_ratio, layer_gemm_slowdowns
from sp_planner.specs.model import ModelSpec

# Sums of the three shapes' TFLOPS, from xla default_matmul_perf_table.txtpb (sm_90).
K4096 = 804.2 + 800.7 + 788.7  # 2393.6
K2048 = 759.2 + 751.3 + 759.5  # 2270.0
K1024 = 691.8 + 688.3 + 722.3  # 2102.4
K512 = 613.2 + 608.7 + 620.4  # 1842.3
# The same shapes in the same file, key sm_100_B200.
B200_K4096 = 1466.6 + 1466.2 + 1670.5  # 4603.3
B200_K2048 = 1344.4 + 1345.6 + 1539.9  # 4229.9
B200_K1024 = 1161.2 + 1159.6 + 1350.5  # 3671.3
B200_K256 = 793.6 + 794.0 + 791.8  # 2379.4


@pytest.fixture
def h100():
    return builtin_hardware("h100-sxm")


def test_short_contractions_run_slower_on_hopper(h100):
    assert contraction_ratio(h100, 2048) == pytest.approx(K2048 / K4096)  # 0.948
    assert contraction_ratio(h100, 512) == pytest.approx(K512 / K4096)  # 0.770
    # linear in log k between the measured points: halfway (in log) from 2048 to 4096
    assert contraction_ratio(h100, math.sqrt(2048 * 4096)) == pytest.approx((K2048 / K4096 + 1) / 2)


def test_long_contractions_keep_the_profile_figure(h100):
    # from k = 4096 up the profile's large-shape figure (MAMF) holds
    assert np.all(contraction_ratio(h100, [4096, 13312, 65536]) == 1.0)


@pytest.mark.parametrize("name", ["h200", "h800"])
def test_every_hopper_profile_takes_the_h100_table(name):
    assert contraction_ratio(builtin_hardware(name), 1024) == pytest.approx(K1024 / K4096)


@pytest.mark.parametrize("name", ["b200", "gb200-nvl72", "b300", "gb300-nvl72"])
def test_blackwell_profiles_take_the_b200_table(name):
    hw = builtin_hardware(name)  # GB200: same die; B300/GB300: same tensor cores; by assumption
    assert contraction_ratio(hw, 2048) == pytest.approx(B200_K2048 / B200_K4096)  # 0.919
    assert contraction_ratio(hw, 1024) == pytest.approx(B200_K1024 / B200_K4096)  # 0.798
    assert contraction_ratio(hw, 256) == pytest.approx(B200_K256 / B200_K4096)  # 0.517
    assert np.all(contraction_ratio(hw, [4096, 16384]) == 1.0)


def test_b200_short_contractions_cost_more_than_hopper(h100):
    # B200 still gains 8.8% from k 2048 to 4096, H100 5.4%
    assert contraction_ratio(builtin_hardware("b200"), 2048) < contraction_ratio(h100, 2048) - 0.025


def test_mi300x_takes_the_gfx942_table():
    # ROCm/xla 106eb9b default_matmul_perf_table.txtpb, key gfx942, the three shapes' bf16 TFLOPS
    # summed: k 1024 508.7 + 491.5 + 520.3 = 1520.5 over k 4096 577.3 + 548.1 + 570.7 = 1696.1.
    mi300x = builtin_hardware("mi300x")
    assert float(contraction_ratio(mi300x, 1024)) == pytest.approx(1520.5 / 1696.1, rel=1e-12)
    assert float(contraction_ratio(mi300x, 8192)) == 1.0


@pytest.mark.parametrize("name", ["a100-80gb", "ascend-910b", "l40s"])
def test_profiles_without_a_sweep_are_unchanged(name):
    assert contraction_ratio(builtin_hardware(name), 256) == 1.0


def _dense(**kw):
    base = dict(name="t", num_layers=2, hidden_size=4096, num_heads=32, num_kv_heads=32, head_dim=128,
                intermediate_size=11008, vocab_size=32000, mlp="swiglu")
    return ModelSpec(**(base | kw))


def _slow(hw, k, outputs):
    """Time over the flat-efficiency time of one GEMM contracting over k into `outputs` elements."""
    return 1 / float(contraction_ratio(hw, k) * output_ratio(hw, outputs, k))


def _layer(hw, k, n, tokens):
    """(forward, backward) of a layer GEMM k -> n per token: forward tokens x n over k; data
    gradient tokens x k over n; weight gradient k x n over the tokens."""
    return _slow(hw, k, tokens * n), (_slow(hw, n, tokens * k) + _slow(hw, tokens, k * n)) / 2


def test_layer_slowdowns_by_hand(h100):
    """A Llama-2-7B shape (h 4096, MHA, SwiGLU ffn 11008) at tp 8, 4096 tokens per rank.
    FLOP shares (per 2h): QKV 12288, projection 4096, FC1 22016, FC2 11008 of 49408.
    Per rank, k -> n: QKV 4096 -> 1536, projection 512 -> 4096, FC1 4096 -> 2752, FC2 1376 -> 4096."""
    shares = np.array([12288, 4096, 22016, 11008]) / 49408
    pairs = [_layer(h100, k, n, 4096) for k, n in ((4096, 1536), (512, 4096), (4096, 2752), (1376, 4096))]
    got_fwd, got_bwd = layer_gemm_slowdowns(h100, _dense(), tp=8, tokens=4096)
    assert got_fwd == pytest.approx(shares @ [f for f, _ in pairs])
    assert got_bwd == pytest.approx(shares @ [b for _, b in pairs])

    # Without the output factor, the contraction alone (log-linear between the table's points):
    # the projection at 0.77 and FC2 at 0.91 make the forward 1.047.
    def r(k):
        ks, vals = [512, 1024, 2048, 4096], [K512, K1024, K2048, K4096]
        return np.interp(math.log(k), np.log(ks), vals) / K4096

    assert shares @ [1, 1 / r(512), 1, 1 / r(1376)] == pytest.approx(1.047, abs=1e-3)
    # Every forward GEMM here has at most 4096 x 4096 = 2^24 outputs, below the table's 2^25.
    assert got_fwd > shares @ [1, 1 / r(512), 1, 1 / r(1376)]


def test_layer_slowdowns_vectorize_and_vanish_at_tp1(h100):
    fwd, bwd = layer_gemm_slowdowns(h100, _dense(), tp=np.array([1, 8]), tokens=np.array([8192, 8192]))
    assert fwd.shape == bwd.shape == (2,)
    # At tp 1 every contraction is >= 4096 and every forward output >= 8192 x 4096 = 2^25.
    assert fwd[0] == 1.0
    # Backward: only the projection's weight gradient (4096 x 4096 = 2^24 outputs over 8192 tokens)
    # falls below 2^25, at 774.9 / 803.2 of the k 4096 row; half the projection's backward share.
    proj_share = 4096 / 49408
    assert bwd[0] == pytest.approx(1 + proj_share / 2 * (803.2 / 774.9 - 1))
    assert fwd[1] > 1.0 and bwd[1] > 1.0


def test_layer_slowdowns_by_hand_on_b200():
    """The Llama-2-7B shape at tp 8 and 4096 tokens on B200: the projection contracts over 512,
    FC2 over 1376 (forward); dgrads over 1536 and 2752; with B200's output-size table."""
    b200 = builtin_hardware("b200")
    shares = np.array([12288, 4096, 22016, 11008]) / 49408
    pairs = [_layer(b200, k, n, 4096) for k, n in ((4096, 1536), (512, 4096), (4096, 2752), (1376, 4096))]
    got_fwd, got_bwd = layer_gemm_slowdowns(b200, _dense(), tp=8, tokens=4096)
    assert got_fwd == pytest.approx(shares @ [f for f, _ in pairs])
    assert got_bwd == pytest.approx(shares @ [b for _, b in pairs])
    b512 = 916.8 + 923.3 + 1090.6  # 2930.7

    def r(k):
        ks, vals = [512, 1024, 2048, 4096], [b512, B200_K1024, B200_K2048, B200_K4096]
        return np.interp(math.log(k), np.log(ks), vals) / B200_K4096

    # The contraction alone: the projection at 0.637, FC2 at 0.849 (H100: 1.047).
    assert shares @ [1, 1 / r(512), 1, 1 / r(1376)] == pytest.approx(1.087, abs=1e-3)


def test_qkv_data_gradient_counts_replicated_kv_heads():
    # Llama-3-8B (8 KV heads, head_dim 128) at tp 16: each rank holds 32/16 = 2 query heads and
    # one replicated KV head (Megatron replicates when tp > groups), so QKV's data gradient
    # contracts over 2*128 + 2*128 = 512, not (4096 + 2*1024)/16 = 384.
    from sp_planner.catalog import load_model
    from sp_planner.cost.tp_overlap import gemm_shares

    h100, model = builtin_hardware("h100-sxm"), load_model("llama3-8b")
    _, bwd = layer_gemm_slowdowns(h100, model, tp=16, tokens=8192)
    shares = gemm_shares(model)
    pairs = (_layer(h100, 4096, 512, 8192), _layer(h100, 256, 4096, 8192),
             _layer(h100, 4096, 2 * 14336 / 16, 8192), _layer(h100, 14336 / 16, 4096, 8192))
    assert float(bwd) == pytest.approx(sum(s * b for s, (_, b) in zip(shares, pairs)), rel=1e-12)


def test_expert_gemms_by_hand_on_b200():
    """Qwen3-30B-A3B (every layer MoE, hidden 2048, 32 x 128 query width, 4 KV heads, experts of
    768) at tp 1, ep 8 and 4096 tokens: QKV and the projection contract over 2048 and 4096, the
    experts' FC1 over 2048 and FC2 over 768 (forward); dgrads over 4096 + 2 x 512 = 5120, 2048,
    2 x 768 = 1536 and 2048; the attention's weight gradients over the 4096 tokens, the experts' over
    the busiest rank's rows per expert, 4096 x 8 x 1.25 / 16 = 2560. Run as one grouped kernel the
    experts take the contraction only (cost.grouped_gemm's curve times their rows, in cost.moe)."""
    from sp_planner.catalog import load_model
    from sp_planner.cost.grouped_gemm import with_expert_gemm
    from sp_planner.cost.tp_overlap import gemm_shares

    b200, model = builtin_hardware("b200"), with_expert_gemm(load_model("Qwen3-30B-A3B"), "grouped")

    def slow(k):
        return 1 / float(contraction_ratio(b200, k))

    # The attention GEMMs' output sizes (cost.gemm_outputs): QKV 2048 -> 5120 and the projection
    # 4096 -> 2048 per token over 4096 tokens.
    qkv, proj = _layer(b200, 2048, 5120, 4096), _layer(b200, 4096, 2048, 4096)
    shares = gemm_shares(model)
    fwd = shares @ np.array([qkv[0], proj[0], slow(2048), slow(768)])
    bwd = shares @ np.array([qkv[1], proj[1], (slow(1536) + slow(2560)) / 2, (slow(2048) + slow(2560)) / 2])
    got_fwd, got_bwd = layer_gemm_slowdowns(b200, model, tp=1, tokens=4096, ep=8, etp=1)
    assert float(got_fwd) == pytest.approx(float(fwd), rel=1e-12)
    assert float(got_bwd) == pytest.approx(float(bwd), rel=1e-12)
    assert slow(768) > 1.25  # FC2's 768-long contraction: below 0.8 of the profile's figure
    # etp 2 halves the experts' widths: FC2 contracts over 384, slower still.
    assert float(layer_gemm_slowdowns(b200, model, tp=1, tokens=4096, ep=8, etp=2)[0]) > float(got_fwd)

    # One GEMM per expert (Megatron's default): each expert's FC1 a layer GEMM 2048 -> 1536 and
    # FC2 768 -> 2048 over its 2560 rows, with the dense GEMMs' output sizes. The busiest rank
    # computes 1.25 x the mean's copies at that factor r, 1.25 r in all, of which cost.moe adds the
    # 0.25 above the mean at the flat rate: 1.25 (r - 1) + 1 here.
    per_expert = load_model("Qwen3-30B-A3B")
    assert per_expert.moe.expert_gemm == "per_expert"
    fc1, fc2 = (tuple(1.25 * (r - 1) + 1 for r in _layer(b200, k, n, 2560)) for k, n in ((2048, 1536), (768, 2048)))
    fwd = shares @ np.array([qkv[0], proj[0], fc1[0], fc2[0]])
    bwd = shares @ np.array([qkv[1], proj[1], fc1[1], fc2[1]])
    got_fwd, got_bwd = layer_gemm_slowdowns(b200, per_expert, tp=1, tokens=4096, ep=8, etp=1)
    assert float(got_fwd) == pytest.approx(float(fwd), rel=1e-12)
    assert float(got_bwd) == pytest.approx(float(bwd), rel=1e-12)
    # 2560 x 1536 = 3.9M outputs: each expert's FC1 well below its contraction-only rate.
    assert fc1[0] > 1.2 * slow(2048)


def test_expert_gemm_time_grows_with_the_capacity_factor():
    """A capacity factor cuts each expert's rows, so its GEMMs run at worse shapes but on fewer
    FLOPs: the expert GEMM time (this factor x the dropless FLOPs plus cost.moe's load above the
    mean) grows with the factor. At 0.0001 the tiny GEMMs' slowdown was charged on every dropless
    FLOP: Mixtral's GEMMs took 17.3 s against 17.0 s dropless and 4.3 s at 0.05."""
    from sp_planner.catalog import load_model
    from sp_planner.cost.moe import busiest_rank_load

    h100, mixtral = builtin_hardware("h100"), load_model("Mixtral-8x7B")
    times = []
    for factor in (0.0001, 0.05, 0.5, 1.0):
        model = mixtral.model_copy(update={"moe": mixtral.moe.model_copy(update={"capacity_factor": factor})})
        fwd, _ = layer_gemm_slowdowns(h100, model, tp=1, tokens=32768, ep=8)
        # cost.moe's flat-rate remainder: the experts' share of the layer's GEMM FLOPs x (load - 1).
        times.append(float(fwd) + _expert_share(model) * (float(busiest_rank_load(model, 8)) - 1.0))
    assert times == sorted(times)
    assert times[0] < 0.25 * times[-1]


def _expert_share(model: ModelSpec) -> float:
    from sp_planner.cost.gemm_shapes import _active_ffn_width, moe_layer_fraction

    moe = model.moe
    return moe_layer_fraction(model) * (moe.top_k + moe.num_shared_experts) * (
        moe.moe_intermediate_size / _active_ffn_width(model)) * float(sum(_mlp_shares(model)))


def _mlp_shares(model: ModelSpec):
    from sp_planner.cost.tp_overlap import gemm_shares

    return gemm_shares(model)[2:]


# The same shapes' FP8 entries (e4m3 x e4m3 -> bf16), key sm_100_B200.
B200_FP8_K4096 = 3123.5 + 3131.4 + 3279.7  # 9534.6
B200_FP8_K512 = 1535.0 + 1533.9 + 1712.2  # 4781.1
B200_FP8_K2048 = 2901.0 + 2895.1 + 3122.5  # 8918.6


@pytest.mark.parametrize("name", ["b200", "gb200-nvl72", "b300", "gb300-nvl72"])
def test_blackwell_fp8_gemms_take_the_tables_fp8_entries(name):
    # A short K costs FP8 more than BF16 (0.501 against 0.637 at k 512); from k 4096 up, 1.
    hw = builtin_hardware(name)
    assert contraction_ratio(hw, 512, fp8=True) == pytest.approx(B200_FP8_K512 / B200_FP8_K4096)
    assert contraction_ratio(hw, 2048, fp8=True) == pytest.approx(B200_FP8_K2048 / B200_FP8_K4096)
    assert np.all(contraction_ratio(hw, [4096, 16384], fp8=True) == 1.0)
    # Per element: BF16 and FP8 rows side by side.
    got = contraction_ratio(hw, [512, 512], fp8=[False, True])
    assert got == pytest.approx([(916.8 + 923.3 + 1090.6) / B200_K4096, B200_FP8_K512 / B200_FP8_K4096])


def test_hopper_fp8_gemms_take_b200s_fp8_ratios(h100):
    # sm_90's FP8 entries exceed the FP8 peak (2537.6 TFLOPS against 1979): not used; B200's are.
    assert contraction_ratio(h100, 512, fp8=True) == pytest.approx(B200_FP8_K512 / B200_FP8_K4096)
    assert contraction_ratio(h100, 512) == pytest.approx(K512 / K4096)  # BF16 keeps its own


# DeepGEMM's H800 FP8 dense GEMMs at M 4096 (deepseek-ai/DeepGEMM README.md at a9967bc2, 'Normal
# GEMMs for dense models'): (N, K, TFLOPS); the reference shape 7168 x 16384 runs 1520.
DEEPGEMM_H800_M4096 = ((2112, 7168, 1127.0), (24576, 1536, 1212.0), (32768, 512, 775.0),
                       (4096, 7168, 1410.0), (7168, 2048, 1168.0))


def test_hopper_fp8_ratios_check_against_deepgemm(h100):
    """A check, not a fit: each shape's TFLOPS predicted from the reference shape's by the K and
    output-size ratios (cost.gemm_outputs), with B200's FP8 ratios within 22% of DeepGEMM's
    measurement and closer than the H100 BF16 ratios on every shape (which miss 32768 x 512 by 53%)."""
    def predicted(n, k, fp8):
        def factor(n_, k_):
            return float(contraction_ratio(h100, k_, fp8=fp8)) * float(output_ratio(h100, 4096 * n_, k_, fp8=fp8))
        return 1520.0 * factor(n, k) / factor(7168, 16384)

    for n, k, measured in DEEPGEMM_H800_M4096:
        fp8_error = abs(predicted(n, k, True) / measured - 1)
        bf16_error = abs(predicted(n, k, False) / measured - 1)
        assert fp8_error < 0.22 and fp8_error < bf16_error, (n, k, fp8_error, bf16_error)
    assert predicted(32768, 512, True) == pytest.approx(775.0, rel=0.02)
    assert predicted(32768, 512, False) > 1.5 * 775.0


# TileLang's FP8 GEMMs on an H800 at M = N = 8192 (tile-ai/tilelang benchmark/matmul_fp8/README.md
# at b2acfc37): TFLOPS at k 256, 512, 1024, 2048, 4096.
TILELANG_H800_FP8_8192 = (569.0, 858.0, 1129.0, 1343.0, 1467.0)


def test_hopper_fp8_k_ratios_check_against_tilelang(h100):
    """A check, not a fit: the H800's own K sweep (2^26 outputs, so K alone) over its k 4096 figure
    is within 0.02 of B200's FP8 ratios from k 1024 up, above them at 256 and 512 (the transfer
    charges a short K more), and nearer them than H100's BF16 ratios at every k."""
    measured = [t / TILELANG_H800_FP8_8192[-1] for t in TILELANG_H800_FP8_8192]  # 0.388 ... 1
    for k, ratio in zip((256, 512, 1024, 2048, 4096), measured):
        fp8, bf16 = float(contraction_ratio(h100, k, fp8=True)), float(contraction_ratio(h100, k))
        assert abs(fp8 - ratio) < abs(bf16 - ratio) or k == 4096, (k, ratio, fp8, bf16)
        if k >= 1024:
            assert fp8 == pytest.approx(ratio, abs=0.02), (k, ratio, fp8)
        else:
            assert 0.08 < ratio - fp8 < 0.10, (k, ratio, fp8)


def test_fp8_expert_gemms_by_hand_on_b200():
    """Qwen3-30B-A3B as test_expert_gemms_by_hand_on_b200, its GEMMs in FP8: the experts' FC2
    forward contracts over 768, between the FP8 table's k 512 and 1024 (linear in log k)."""
    from sp_planner.catalog import load_model

    b200, model = builtin_hardware("b200"), load_model("Qwen3-30B-A3B")
    fp8_768 = float(contraction_ratio(b200, 768, fp8=True))
    lo, hi = B200_FP8_K512 / B200_FP8_K4096, (2394.0 + 2398.1 + 2651.2) / B200_FP8_K4096
    assert fp8_768 == pytest.approx(lo + (hi - lo) * math.log(768 / 512) / math.log(2))
    assert fp8_768 < float(contraction_ratio(b200, 768)) - 0.05  # 0.64 against BF16's 0.72
    bf16 = layer_gemm_slowdowns(b200, model, tp=1, tokens=4096, ep=8, etp=1)
    fp8 = layer_gemm_slowdowns(b200, model, tp=1, tokens=4096, ep=8, etp=1, fp8=True)
    assert float(fp8[0]) > float(bf16[0]) and float(fp8[1]) > float(bf16[1])
    # Vectorized over candidates: a BF16 and an FP8 one side by side.
    both = layer_gemm_slowdowns(b200, model, tp=np.array([1, 1]), tokens=4096, ep=8, etp=1,
                                fp8=np.array([False, True]))
    assert both[0] == pytest.approx([float(bf16[0]), float(fp8[0])])


def test_routed_expert_terms_by_hand_on_b200():
    """Qwen3-30B-A3B run grouped (torchtitan's GroupedExperts) at tp 1, ep 8, 4096 tokens on a B200:
    the routed experts are all of its MLP (every layer MoE, top 8 of width 768, no shared expert),
    so their share is the FC1 and FC2 shares and their terms those GEMMs' in layer_gemm_slowdowns:
    FC1 over 2048 forward, its data gradient over 1536 and its weight gradient over the busiest
    rank's 2560 rows per expert; FC2 over 768, 2048 and 2560. FP8 takes the table's FP8 ratios,
    bf16 its bf16 ones (cost.gemm_shapes.routed_expert_slowdowns, for torchtitan's bf16 experts)."""
    from sp_planner.catalog import load_model
    from sp_planner.cost.gemm_shapes import routed_expert_slowdowns
    from sp_planner.cost.grouped_gemm import with_expert_gemm
    from sp_planner.cost.tp_overlap import gemm_shares

    b200, model = builtin_hardware("b200"), with_expert_gemm(load_model("Qwen3-30B-A3B"), "grouped")
    _, _, fc1, fc2 = gemm_shares(model)
    for fp8 in (False, True):
        def slow(k):
            return 1 / float(contraction_ratio(b200, k, fp8))
        share, fwd, bwd = routed_expert_slowdowns(b200, model, tp=1, tokens=4096, ep=8, etp=1, fp8=fp8)
        assert float(share) == pytest.approx(fc1 + fc2, rel=1e-12)
        assert float(fwd) == pytest.approx(fc1 * slow(2048) + fc2 * slow(768), rel=1e-12)
        assert float(bwd) == pytest.approx(fc1 * (slow(1536) + slow(2560)) / 2 + fc2 * (slow(2048) + slow(2560)) / 2,
                                           rel=1e-12)
        # The rest of the layer's factors is the attention's: QKV 2048 -> 5120 and the projection
        # 4096 -> 2048 per token over the 4096 tokens, with their output sizes.
        def at(k, outputs):
            return 1 / float(contraction_ratio(b200, k, fp8) * output_ratio(b200, outputs, k, fp8))
        qkv = (at(2048, 4096 * 5120), (at(5120, 4096 * 2048) + at(4096, 2048 * 5120)) / 2)
        proj = (at(4096, 4096 * 2048), (at(2048, 4096 * 4096) + at(4096, 4096 * 2048)) / 2)
        s_qkv, s_proj, _, _ = gemm_shares(model)
        whole = layer_gemm_slowdowns(b200, model, tp=1, tokens=4096, ep=8, etp=1, fp8=fp8)
        assert float(whole[0] - fwd) == pytest.approx(s_qkv * qkv[0] + s_proj * proj[0], rel=1e-12)
        assert float(whole[1] - bwd) == pytest.approx(s_qkv * qkv[1] + s_proj * proj[1], rel=1e-12)
    # FP8's short contraction costs more: bf16 experts' forward terms are the smaller.
    assert float(routed_expert_slowdowns(b200, model, tp=1, tokens=4096, ep=8, fp8=False)[1]) < \
        float(routed_expert_slowdowns(b200, model, tp=1, tokens=4096, ep=8, fp8=True)[1])
    # A dense model has none.
    dense = load_model("llama3-8b")
    assert [float(v) for v in routed_expert_slowdowns(b200, dense, tp=1, tokens=4096, fp8=True)] == [0.0, 0.0, 0.0]
