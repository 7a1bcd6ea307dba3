"""flags.flash_head_dim: whether flash-attn 2 runs a head dim above 192 on the plan's GPU, in
Transformer Engine's terms (get_attention_backend at d0067d0) and flash-attn's (run_mha_bwd_hdim256)."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.flags.flash_head_dim import (
    fa2_head_dim,
    flash_head_dim_problem,
    te_context_parallel_problem,
    te_default_kernel,
    te_fa2_refuses,
    te_kernel_note,
    te_runs_unfused,
    te_unfused_note,
    sdpa_cudnn_trains,
    sdpa_flash_refuses,
    torchtitan_default_kernel,
    torchtitan_sdpa_note,
)
from tests.flags.conftest import LLAMA3_8B

GEMMA2_9B = load_model("Gemma-2-9B")  # head_dim 256
DEEPSEEK_V3 = load_model("DeepSeek-V3")  # MLA: query/key 128 + 64 = 192, value 128


def test_the_head_dim_flash_attn_2_runs_at():
    # MLA's dims padded to the larger (TE v2.17, 8a5af97), not the model's mean head dim 160.
    assert (fa2_head_dim(LLAMA3_8B), fa2_head_dim(GEMMA2_9B), fa2_head_dim(DEEPSEEK_V3)) == (128, 256, 192)
    assert DEEPSEEK_V3.head_dim == 160
    mla = DEEPSEEK_V3.mla
    assert mla is not None
    odd = DEEPSEEK_V3.model_copy(update={"mla": mla.model_copy(update={"qk_rope_head_dim": 32, "v_head_dim": 256})})
    assert fa2_head_dim(odd) == 256


@pytest.mark.parametrize(("profile", "refused"), [
    # TE's list above 192: (8, 0), (9, 0), (10, 0), (12, 0); L40S/L20 are sm89, B300/GB300 sm103.
    ("a800", False), ("a100-80gb", False), ("h100-sxm", False), ("h200", False), ("b200", False),
    ("gb200-nvl72", False), ("l40s", True), ("l20", True), ("b300", True), ("gb300-nvl72", True),
    ("mi300x", False),  # no CUDA compute capability: nothing is claimed
])
def test_transformer_engine_turns_flash_attn_2_off_above_192_outside_its_gpu_list(profile, refused):
    hardware = load_hardware(profile)
    assert te_fa2_refuses(GEMMA2_9B, hardware) is refused
    assert not te_fa2_refuses(LLAMA3_8B, hardware) and not te_fa2_refuses(DEEPSEEK_V3, hardware)  # 128, 192


def test_megatron_with_fa2_chosen_is_refused_where_transformer_engine_has_no_backend():
    l40s = load_hardware("l40s")
    problem = flash_head_dim_problem(GEMMA2_9B, l40s, stack="megatron", chosen="fa2", timed="fa2")
    assert problem == (
        "--attention-kernel fa2: Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on L40S "
        "(sm89): above 192 it runs it on sm80, sm90, sm100 and sm120 only (get_attention_backend, v2.2 to v2.18 "
        "and d0067d0), and --attention-backend flash leaves it no other backend, so it raises; leave "
        "--attention-kernel out")
    assert "on B300 (sm103)" in str(flash_head_dim_problem(GEMMA2_9B, load_hardware("b300"), stack="megatron",
                                                            chosen="fa2", timed="fa2"))
    # Without the flag Megatron's auto lets TE pick another backend; on sm80/90/100 FA2 runs it.
    assert flash_head_dim_problem(GEMMA2_9B, l40s, stack="megatron", chosen=None, timed="fa2") is None
    for profile in ("a800", "h100-sxm", "b200"):
        assert flash_head_dim_problem(GEMMA2_9B, load_hardware(profile), stack="megatron", chosen="fa2",
                                      timed="fa2") is None
    assert flash_head_dim_problem(DEEPSEEK_V3, l40s, stack="megatron", chosen="fa2", timed="fa2") is None


def test_megatrons_default_fa2_timing_where_transformer_engine_runs_its_unfused_attention():
    # sm89: TE disables FA2 above 192 and cuDNN's fused attention trains head dims above 128 on sm90
    # and sm10x only (fused_attn.cpp at d0067d0), so UnfusedDotProductAttention runs: before, no word.
    l40s = load_hardware("l40s")
    # --framework all: FA2 times every framework's plans (yunchang's and DeepSpeed's run it).
    assert te_unfused_note(GEMMA2_9B, l40s, stack="megatron", chosen=None, timed="fa2") == (
        "Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on L40S (sm89) and no cuDNN fused "
        "attention trains it there, so it runs its unfused attention, while the plans are timed with flash-attn 2 "
        "(--framework megatron times megatron's with it); that takes no context parallelism, so megatron's flags "
        "take plans with ulysses x ring 1 only")
    assert te_unfused_note(GEMMA2_9B, load_hardware("l20"), stack="megatron", chosen=None, timed="fa2",
                           context_parallel=False) == (
        "Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on L20 (sm89) and no cuDNN fused "
        "attention trains it there, so it runs its unfused attention, while the plans are timed with flash-attn 2 "
        "(--framework megatron times megatron's with it)")
    # --framework megatron: the unfused attention times the plans (cost.kernels).
    assert te_unfused_note(GEMMA2_9B, l40s, stack="megatron", chosen=None, timed="unfused") == (
        "Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on L40S (sm89) and no cuDNN fused "
        "attention trains it there, so it runs its unfused attention, which times the plans, its s x s scores in "
        "memory; it takes no context parallelism, so the plans have ulysses x ring 1")
    # FA2 runs (A800 sm80, Llama's 128), or the timed kernel is not FA2 (--attention-kernel, another stack).
    assert te_unfused_note(GEMMA2_9B, load_hardware("a800"), stack="megatron", chosen=None, timed="fa2") is None
    assert te_unfused_note(LLAMA3_8B, l40s, stack="megatron", chosen=None, timed="fa2") is None
    assert te_unfused_note(GEMMA2_9B, l40s, stack="megatron", chosen="fa2", timed="fa2") is None
    assert te_unfused_note(GEMMA2_9B, l40s, stack="yunchang", chosen=None, timed="fa2") is None
    # Under context parallelism TE has no backend left: a pinned --ulysses/--ring > 1 is refused.
    assert te_context_parallel_problem(GEMMA2_9B, l40s, framework="megatron", chosen=None, timed="fa2",
                                       ulysses=4, ring=None) == (
        "--ulysses 4: Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on L40S (sm89) and no "
        "cuDNN fused attention trains it there, and its unfused attention takes no context parallelism "
        "(get_attention_backend at d0067d0), so it has no backend and raises; give --ulysses 1 --ring 1")
    for ulysses, ring in ((1, 1), (None, None), (1, None)):
        assert te_context_parallel_problem(GEMMA2_9B, l40s, framework="megatron", chosen=None, timed="fa2",
                                           ulysses=ulysses, ring=ring) is None
    # --framework all: yunchang's and DeepSpeed's flash-attn 2 run it there, so it is not refused.
    assert te_context_parallel_problem(GEMMA2_9B, l40s, framework="all", chosen=None, timed="fa2", ulysses=4,
                                       ring=None) is None


def test_flash_attn_callers_under_dropout_on_99_kb_gpus():
    # run_mha_bwd_hdim256: sm86/sm89 (99 KB a block) only without dropout; A800 (sm80) has 163 KB.
    dropout = GEMMA2_9B.model_copy(update={"attention_dropout": 0.1})
    l40s = load_hardware("l40s")
    problem = flash_head_dim_problem(dropout, l40s, stack="yunchang", chosen=None, timed="fa2")
    assert problem == (
        "yunchang runs flash-attn 2, whose backward at Gemma-2-9B's head dim 256 needs 144 KB of shared memory a "
        "block under attention dropout (0.1); L40S (sm89) has 99 KB: flash-attn up to v2.7.2 raises and v2.7.3 on "
        "runs no backward kernel (flash_bwd_launch_template.h run_mha_bwd_hdim256); plan with --framework "
        "megatron, whose Transformer Engine runs another backend there, or a model without dropout")
    assert flash_head_dim_problem(dropout, l40s, stack="deepspeed", chosen="fa2", timed="fa2") is not None
    assert flash_head_dim_problem(GEMMA2_9B, l40s, stack="yunchang", chosen=None, timed="fa2") is None
    assert flash_head_dim_problem(dropout, load_hardware("a800"), stack="yunchang", chosen=None, timed="fa2") is None
    assert flash_head_dim_problem(dropout, l40s, stack="torchtitan", chosen=None, timed="sdpa") is None


@pytest.mark.parametrize(("profile", "unfused"), [
    # sm89: FA2 off above 192 and no cuDNN training above 128; sm80/sm100 run FA2, sm90 cuDNN 9.5,
    # sm103 cuDNN 9.23 at 256 (bffde8f4a); MI300X has no compute capability: nothing is claimed.
    ("l40s", True), ("l20", True), ("a800", False), ("h100-sxm", False), ("b200", False), ("b300", False),
    ("mi300x", False),
])
def test_transformer_engine_runs_its_unfused_attention_where_no_fused_backend_trains_the_head_dim(profile, unfused):
    hardware = load_hardware(profile)
    assert te_runs_unfused(GEMMA2_9B, hardware) is unfused
    assert not te_runs_unfused(LLAMA3_8B, hardware) and not te_runs_unfused(DEEPSEEK_V3, hardware)  # 128, 192


def test_under_attention_dropout_blackwell_runs_flash_attn_2_on_sm100_and_unfused_attention_on_sm103():
    # cuDNN's sm10x 256 branch refuses dropout (fused_head_dim): B200 keeps FA2 (TE's list above 192),
    # B300 has neither, so its unfused attention runs, without context parallelism.
    dropout = GEMMA2_9B.model_copy(update={"attention_dropout": 0.1})
    b200, b300, h100 = load_hardware("b200"), load_hardware("b300"), load_hardware("h100-sxm")
    assert te_default_kernel(dropout, b200, "cudnn") == "fa2" and te_default_kernel(GEMMA2_9B, b200, "cudnn") == "cudnn"
    # No FA2 there: the unfused attention times --framework megatron's plans (cli.plan_kernel), cuDNN's
    # curve --framework all's.
    assert te_default_kernel(dropout, b300, "cudnn") == "cudnn"
    assert te_default_kernel(dropout, h100, "cudnn") == "cudnn"  # cuDNN 9.5 trains 256 with dropout on sm90
    assert te_runs_unfused(dropout, b300) and te_runs_unfused(dropout, load_hardware("gb300-nvl72"))
    assert not te_runs_unfused(dropout, b200)
    assert te_kernel_note(dropout, b200, stack="megatron", chosen=None, timed="fa2") == (
        "no cuDNN fused attention trains Gemma-2-9B's head dim 256 on B200 (sm100) under attention dropout 0.1 "
        "(nvte_get_fused_attn_backend at d0067d0 and v2.18), so Transformer Engine runs flash-attn 2, whose curve "
        "times the plans")
    assert te_unfused_note(dropout, b300, stack="megatron", chosen=None, timed="cudnn") == (
        "Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on B300 (sm103) and no cuDNN fused "
        "attention trains it there under attention dropout 0.1, so it runs its unfused attention, while the plans "
        "are timed with cuDNN's fused attention (--framework megatron times megatron's with it); that takes no "
        "context parallelism, so megatron's flags take plans with ulysses x ring 1 only")


def test_cudnns_256_on_blackwell_is_said_to_need_transformer_engine_v2_18():
    b300 = load_hardware("b300")
    assert te_kernel_note(GEMMA2_9B, b300, stack="megatron", chosen=None, timed="cudnn") == (
        "the plans are timed with cuDNN's fused attention, which trains Gemma-2-9B's head dim 256 on B300 (sm103) "
        "from Transformer Engine v2.18 (3bc3d551a) with cuDNN >= 9.23; with an earlier release or cuDNN it runs its "
        "unfused attention there, which takes no context parallelism")
    assert te_kernel_note(GEMMA2_9B, load_hardware("b200"), stack="megatron", chosen="cudnn", timed="cudnn") \
        .endswith("with an earlier release or cuDNN it runs flash-attn 2 there")
    # Not said: Hopper (cuDNN 9.5, every release), head dim 128, another stack, another kernel.
    assert te_kernel_note(GEMMA2_9B, load_hardware("h100-sxm"), stack="megatron", chosen=None, timed="cudnn") is None
    assert te_kernel_note(LLAMA3_8B, b300, stack="megatron", chosen=None, timed="cudnn") is None
    assert te_kernel_note(GEMMA2_9B, b300, stack="yunchang", chosen=None, timed="fa2") is None
    assert te_kernel_note(GEMMA2_9B, b300, stack="megatron", chosen="fa2", timed="fa2") is None


@pytest.mark.parametrize(("head_dim", "capability", "dropout", "refused"), [
    # sdp_utils.cpp: on sm86-sm89 (and sm120-121) training takes <= 192, or > 224 without dropout.
    (192, (8, 9), True, False), (200, (8, 9), False, True), (224, (8, 6), False, True),
    (256, (8, 9), False, False), (256, (8, 9), True, True), (224, (12, 0), False, True),
    (224, (8, 0), True, False), (224, (9, 0), False, False), (256, None, True, False),
])
def test_pytorch_sdpas_flash_backend_refuses_head_dims_above_192_on_small_shared_memory_gpus(
        head_dim, capability, dropout, refused):
    assert sdpa_flash_refuses(head_dim, capability, dropout=dropout) is refused


def test_torchtitans_sdpa_runs_the_math_backend_where_neither_cudnn_nor_flash_trains_the_head_dim():
    l40s = load_hardware("l40s")
    dim_224 = GEMMA2_9B.model_copy(update={"head_dim": 224})
    assert torchtitan_sdpa_note(dim_224, l40s, stack="torchtitan", timed="sdpa") == (
        "torchtitan's SDPA (cuDNN, flash, then math) trains Gemma-2-9B's head dim 224 on L40S (sm89) with neither "
        "cuDNN (above 128 on sm90 and sm10x only) nor flash (PyTorch refuses head dims in (192, 224] there: "
        "sdp_utils.cpp check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120), so it runs the math "
        "backend, which holds the whole s x s scores: the plans are timed with SDPA flash's curve and sized without "
        "them")
    # 256 trains in SDPA's flash there (torchtitan has no dropout), as timed; sm80 and sm90 take 224.
    assert torchtitan_sdpa_note(GEMMA2_9B, l40s, stack="torchtitan", timed="sdpa") is None
    for profile in ("a800", "h100-sxm"):
        assert torchtitan_sdpa_note(dim_224, load_hardware(profile), stack="torchtitan", timed="sdpa") is None
    assert torchtitan_sdpa_note(dim_224, l40s, stack="megatron", timed="fa2") is None


@pytest.mark.parametrize("model,capability,trains", [
    (LLAMA3_8B, (8, 0), True), (LLAMA3_8B, (12, 0), True),  # 128: every GPU
    (GEMMA2_9B, (9, 0), True),  # 256 on sm90 (cuDNN >= 9.10)
    (GEMMA2_9B, (10, 0), False), (GEMMA2_9B, (8, 9), False),  # above 128 elsewhere
    (DEEPSEEK_V3, (10, 0), True), (DEEPSEEK_V3, (10, 3), True),  # MLA's 192/128 on sm10x (cuDNN >= 9.11)
    (DEEPSEEK_V3, (12, 0), False), (DEEPSEEK_V3, (9, 0), True),
])
def test_pytorch_sdpas_cudnn_backend_takes_head_dims_above_128_on_sm90_and_mla_on_sm10x(model, capability, trains):
    assert sdpa_cudnn_trains(model, capability) is trains


def test_torchtitan_0_2_times_cudnn_where_pytorchs_cudnn_sdpa_takes_the_head_dim_else_sdpa_flash():
    h100, b200, a800 = load_hardware("h100-sxm"), load_hardware("b200"), load_hardware("a800")
    assert torchtitan_default_kernel(LLAMA3_8B, h100, runs="cudnn", kernel="cudnn") == "cudnn"
    assert torchtitan_default_kernel(GEMMA2_9B, h100, runs="cudnn", kernel="cudnn") == "cudnn"
    # Head dim 256 on sm100: cuDNN's SDPA refuses it, flash (SDPA's next) runs.
    assert torchtitan_default_kernel(GEMMA2_9B, b200, runs="cudnn", kernel="cudnn") == "sdpa"
    # cuDNN runs on sm80 but no curve is published: SDPA flash's (the A800's own FA2 curve) times it.
    assert torchtitan_default_kernel(LLAMA3_8B, a800, runs="cudnn", kernel=None) == "sdpa"
    # 0.3.0 (FlexAttention, timed as SDPA flash) and the user's own curves are left as they are.
    assert torchtitan_default_kernel(GEMMA2_9B, b200, runs="sdpa", kernel="sdpa") == "sdpa"
    edited = h100.model_copy(update={"efficiency": h100.efficiency.model_copy(
        update={"attention_fwd": tuple(p.model_copy(update={"efficiency": p.efficiency / 2})
                                       for p in h100.efficiency.attention_fwd)})})
    assert torchtitan_default_kernel(LLAMA3_8B, edited, runs="cudnn", kernel=None) is None
