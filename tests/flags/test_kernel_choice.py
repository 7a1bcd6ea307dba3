"""flags.kernel_choice: the flags that select the --attention-kernel that timed the plans, and the
note for what they cannot say."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import ATTENTION_KERNELS
from sp_planner.cost.framework_kernels import framework_kernel
from sp_planner.flags.kernel_choice import (kernel_choice_note, megatron_backend_flags, mla_flash_note,
                                            yunchang_attn_type, yunchang_fa3_drops)
from sp_planner.specs.attention import WindowSpec
from sp_planner.specs.workload import Workload
from tests.flags.conftest import LLAMA3_8B

H100 = load_hardware("h100-sxm")
A800 = load_hardware("a800")
CAUSAL = Workload(seq_len=8192, global_batch=8)
BIDIRECTIONAL = Workload(seq_len=8192, global_batch=8, causal=False)


def note(framework, chosen, runs, model=LLAMA3_8B, workload=CAUSAL):
    return kernel_choice_note(framework, chosen, runs, model=model, workload=workload)


@pytest.mark.parametrize(("kernel", "flags"), [
    # AttnBackend (megatron/core/transformer/enums.py): flash is flash-attn (2 or 3), fused cuDNN's.
    ("fa2", ["--attention-backend flash"]), ("fa3", ["--attention-backend flash"]),
    ("cudnn", ["--attention-backend fused"]), ("sdpa", []), ("npu", []), (None, []),
])
def test_megatron_backend_of_each_kernel(kernel, flags):
    assert megatron_backend_flags(kernel) == flags


@pytest.mark.parametrize(("framework", "chosen", "runs", "how"), [
    ("megatron", "sdpa", "cudnn", "but megatron's flags run cudnn: Megatron-LM has no SDPA backend"),
    ("yunchang", "sdpa", "fa2", "AttnType.TORCH runs the forward pass only"),
    ("yunchang", "cudnn", "fa2", "yunchang has no cuDNN attention type"),
    ("deepspeed", "fa3", "fa2", 'attn_implementation="flash_attention_3"'),
    ("torchtitan", "fa3", "sdpa", "torchtitan has no option for it"),
])
def test_a_kernel_the_flags_cannot_select_says_how(framework, chosen, runs, how):
    text = note(framework, chosen, runs)
    assert text is not None and text.startswith(
        f"the plans are timed with {chosen} attention (--attention-kernel), but {framework}'s flags run {runs}: ")
    assert how in text


def test_megatrons_flash_backend_notes_only_the_flash_attn_version():
    # --attention-backend flash runs whichever flash-attn is installed (FA3 from Transformer Engine 1.11 on
    # Hopper): on an H100, whose default is cuDNN, the note says which to install; fused is cuDNN's alone.
    fa3 = note("megatron", "fa3", "cudnn")
    assert fa3 == ("the plans are timed with fa3 attention (--attention-kernel), which megatron's flags select with "
                   "--attention-backend flash: Transformer Engine runs flash-attn 3 only where it is installed (from "
                   "v1.11, on Hopper), else flash-attn 4 where a release takes it, else flash-attn 2")
    assert note("megatron", "fa2", "cudnn").endswith("or 4 (Hopper without 3, and Blackwell, in releases that "
                                                     "take it) instead where installed: install flash-attn 2 alone")
    assert note("megatron", "cudnn", "fa2") is None  # --attention-backend fused on an A800
    assert note("megatron", "fa2", "fa2") is None  # flash on an A800: no FA3 before Hopper


def test_megatron_fa3_under_dropout_runs_fa2():
    # Transformer Engine's backend filter disables FA3 for attention dropout != 0.
    dropout = LLAMA3_8B.model_copy(update={"attention_dropout": 0.1})
    text = note("megatron", "fa3", "cudnn", model=dropout)
    assert text is not None and text.endswith(
        "under the model's attention dropout 0.1 Transformer Engine runs flash-attn 2, so no run of them matches the "
        "timed kernel")


def test_megatron_fa3_under_dropout_on_mla_names_the_release_whose_fa2_takes_its_dims():
    # DeepSeek-V3 with dropout: TE turns FA3 off ("Disabling FlashAttention 3 for dropout") and runs FA2,
    # which takes MLA's 192/128 only from v2.17 (8a5af97 pads V to 192); before, FA2 is off for MLA
    # too and --attention-backend flash (NVTE_FUSED_ATTN=0, NVTE_UNFUSED_ATTN=0) leaves no backend.
    deepseek = load_model("DeepSeek-V3").model_copy(update={"attention_dropout": 0.1})
    assert note("megatron", "fa3", "cudnn", model=deepseek) == (
        "the plans are timed with fa3 attention (--attention-kernel), which megatron's flags select with "
        "--attention-backend flash, but under the model's attention dropout 0.1 Transformer Engine runs flash-attn 2, "
        "which takes MLA's head dims (query/key 192, value 128) from Transformer Engine v2.17 (8a5af97; it pads them "
        "to 192); earlier releases have no backend for them under --attention-backend flash and raise, so no run of "
        "them matches the timed kernel")
    # Value 256 pads past 192: on an H100 (sm90) FA2 takes it, on an L40S (sm89) no release does.
    mla = deepseek.mla
    assert mla is not None
    wide = deepseek.model_copy(update={"mla": mla.model_copy(update={"v_head_dim": 256})})
    h100 = kernel_choice_note("megatron", "fa3", "cudnn", model=wide, workload=CAUSAL, hardware=H100)
    assert h100 is not None and "(8a5af97; it pads them to 256); earlier releases" in h100
    l40s = kernel_choice_note("megatron", "fa3", "cudnn", model=wide, workload=CAUSAL, hardware=load_hardware("l40s"))
    assert l40s is not None and l40s.endswith(
        "Transformer Engine runs flash-attn 2, which takes MLA's head dims (query/key 192, value 256) in no release on "
        "sm89: --attention-backend flash leaves it no other backend and it raises, so no run of them matches the "
        "timed kernel")


def test_yunchang_fa3_type_only_where_it_computes_the_models_attention():
    # yunchang's FA3 calls pass causal=False, no window, no softcap, no dropout (attention.py at 0.6.4).
    assert yunchang_fa3_drops(LLAMA3_8B, BIDIRECTIONAL) == []
    assert yunchang_attn_type("fa3", LLAMA3_8B, BIDIRECTIONAL) == "FA3"
    assert note("yunchang", "fa3", "fa2", workload=BIDIRECTIONAL) is None
    assert yunchang_attn_type("fa3", LLAMA3_8B, CAUSAL) == "FA"
    assert yunchang_attn_type("fa2", LLAMA3_8B, BIDIRECTIONAL) == "FA"
    assert yunchang_attn_type(None, LLAMA3_8B, BIDIRECTIONAL) == "FA"
    windowed = LLAMA3_8B.model_copy(update={
        "window": WindowSpec(window_tokens=4096, local_layers=1, global_layers=1, logit_softcapping=50.0),
        "attention_dropout": 0.1})
    assert yunchang_fa3_drops(windowed, CAUSAL) == ["the causal mask", "the sliding window", "the logit softcap",
                                                    "attention dropout"]
    assert note("yunchang", "fa3", "fa2") == (
        "the plans are timed with fa3 attention (--attention-kernel), but yunchang's snippet runs fa2: its "
        "AttnType.FA3 calls flash-attn 3 without the causal mask (yunchang/kernels/attention.py), so no run of them "
        "matches the timed kernel")


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_no_note_without_a_choice_or_for_the_kernel_the_flags_run(kernel):
    assert note("megatron", None, kernel) is None and note("deepspeed", None, kernel) is None
    if kernel != "fa3":  # yunchang's FA3 type drops the causal mask (above)
        assert note("yunchang", kernel, kernel) is None


@pytest.mark.parametrize(("framework", "hardware", "kernel"), [
    ("megatron", H100, "cudnn"), ("megatron", A800, "fa2"), ("torchtitan", H100, "sdpa"),
    ("yunchang", H100, "fa2"), ("deepspeed", A800, "fa2"), ("mindspeed", H100, "npu"),
])
def test_the_kernel_each_framework_runs(framework, hardware, kernel):
    # cost.framework_kernels FRAMEWORK_KERNEL by GPU generation, whether or not a curve is published
    # (MindSpeed's NPU kernel has none on H100, where default_kernel falls back to the profile's).
    assert framework_kernel(framework, hardware) == kernel


def test_megatron_flash_on_mla_names_the_first_transformer_engine_release_that_runs_it():
    # DeepSeek-V3's MLA: query/key 128 + 64 = 192, value 128. Transformer Engine's get_attention_backend
    # takes them on FA3 from v2.8 (c334fc4: 128 < qk <= 192, 96 < v <= 128) and on FA2 from v2.17 (8a5af97
    # pads V to 192); before, "Disabling FlashAttention as it does not support MLA".
    deepseek = load_model("DeepSeek-V3")
    fa3 = note("megatron", "fa3", "cudnn", model=deepseek)
    assert fa3 is not None and fa3.endswith(
        "else flash-attn 2; MLA's head dims (query/key 192, value 128) run on flash-attn 3 from Transformer Engine "
        "v2.8 and on flash-attn 2 from Transformer Engine v2.17 (it pads them to 192); earlier releases disable "
        "FlashAttention for MLA")
    # flash on an A800 runs FA2, the default there: the MLA line alone.
    assert note("megatron", "fa2", "fa2", model=deepseek) == (
        "the plans are timed with fa2 attention (--attention-kernel), which megatron's flags select with "
        "--attention-backend flash: MLA's head dims (query/key 192, value 128) run on flash-attn 2 from Transformer "
        "Engine v2.17 (it pads them to 192); earlier releases disable flash-attn 2 for MLA")
    assert note("megatron", "cudnn", "fa2", model=deepseek) is None


def test_mla_head_dims_no_flash_attn_takes():
    # query/key 96 (FA3 wants (128, 192] or <= 64), value 256 pads past 192: FA2 only on sm80/90/100/120;
    # a value of 260 is no multiple of 8 (FA2 refuses it).
    mla = load_model("DeepSeek-V3").mla
    assert mla is not None
    odd = mla.model_copy(update={"qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 256})
    assert mla_flash_note("fa3", LLAMA3_8B.model_copy(update={"mla": odd})) == (
        "no Transformer Engine release runs MLA's head dims (query/key 96, value 256) on flash-attn 3 (it runs "
        "flash-attn 2 from Transformer Engine v2.17 (it pads them to 256, on sm80, sm90, sm100 and sm120 only) "
        "instead), so no run of them matches the timed kernel")
    odd = odd.model_copy(update={"v_head_dim": 260})
    assert mla_flash_note("fa2", LLAMA3_8B.model_copy(update={"mla": odd})) == (
        "no Transformer Engine release runs MLA's head dims (query/key 96, value 260) on flash-attn 2, so no run of "
        "them matches the timed kernel")
    assert mla_flash_note("fa2", LLAMA3_8B) is None and mla_flash_note("cudnn", load_model("DeepSeek-V3")) is None


def test_mla_flash_note_checks_the_gpus_fa2_needs_above_192_against_the_plans():
    # TE runs FA2 above 192 on sm80/90/100/120 only (dot_product_attention/utils.py at d0067d0): with the
    # GPU known the note names no list; on sm89 (L40S) and sm103 (B300) no release runs the padded 256.
    mla = load_model("DeepSeek-V3").mla
    assert mla is not None
    odd = LLAMA3_8B.model_copy(update={"mla": mla.model_copy(update={
        "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 256})})
    assert mla_flash_note("fa2", odd, (9, 0)) == (
        "MLA's head dims (query/key 96, value 256) run on flash-attn 2 from Transformer Engine v2.17 (it pads them to "
        "256); earlier releases disable flash-attn 2 for MLA")
    for capability, sm in (((8, 9), "sm89"), ((10, 3), "sm103")):
        assert mla_flash_note("fa2", odd, capability) == (
            f"no Transformer Engine release runs MLA's head dims (query/key 96, value 256) on flash-attn 2 on {sm}, so "
            "no run of them matches the timed kernel")
    # 192 needs no such GPU: DeepSeek-V3 reads the same on an L40S.
    deepseek = load_model("DeepSeek-V3")
    assert mla_flash_note("fa2", deepseek, (8, 9)) == mla_flash_note("fa2", deepseek)
