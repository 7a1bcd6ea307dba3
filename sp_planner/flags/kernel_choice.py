"""The attention kernel sp-plan --attention-kernel timed, in a framework's flags, and the note for
what they cannot say.

Without --attention-kernel the flags select no kernel: each framework runs its own
(cost.framework_kernels FRAMEWORK_KERNEL). With it, the flags select the chosen kernel where the
framework has an option for it (FlagRequest.attention_kernel): Megatron-LM's --attention-backend,
yunchang's attn_type. Elsewhere, and for what the option leaves open, a note says how to make the
run use it, or that the framework cannot.
"""

from __future__ import annotations

from sp_planner.cost.families import compute_capability
from sp_planner.cost.window import local_window
from sp_planner.flags.flash_head_dim import sm_name, te_gpu_refuses
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# Megatron-LM's --attention-backend for each kernel it runs (AttnBackend in megatron/core/transformer/
# enums.py: flash, fused, unfused, local, auto; the flag is TransformerConfig.attention_backend, which
# megatron/training/arguments.py at d98e8a64dd builds with ArgumentGroupFactory, whose enum type reads
# AttnBackend[name]; an add_argument of its own at core_v0.12.1, line 1237). The default, auto,
# leaves the choice to Transformer Engine, which prefers cuDNN's FusedAttention on Hopper and newer
# and FlashAttention on Ampere (cost.attention_kernels); flash is flash-attn, version 3 where it is
# installed on Hopper (Transformer Engine >= 1.11). SDPA has no backend.
MEGATRON_BACKEND: dict[str, str] = {"fa2": "flash", "fa3": "flash", "cudnn": "fused"}
# What --attention-backend flash leaves to the installed flash-attn: Transformer Engine takes the
# newest it may run (get_attention_backend, dot_product_attention/utils.py at d0067d0: FA3 on sm90
# only, from v1.11; FA4 on sm90 where FA3 is not installed and on sm100 and newer; FA2 otherwise).
_FLASH_VERSION = {
    "fa2": "Transformer Engine runs flash-attn 3 (Hopper, from v1.11) or 4 (Hopper without 3, and Blackwell, "
           "in releases that take it) instead where installed: install flash-attn 2 alone",
    "fa3": "Transformer Engine runs flash-attn 3 only where it is installed (from v1.11, on Hopper), else "
           "flash-attn 4 where a release takes it, else flash-attn 2",
}
# The first Transformer Engine release whose FlashAttention takes MLA's head dims (query/key !=
# value); older ones log "Disabling FlashAttention as it does not support MLA" (get_attention_backend,
# transformer_engine/pytorch/attention/dot_product_attention/utils.py). FA3 from v2.8 (c334fc4, "Support
# FA3 for MLA"): query/key in (128, 192] with value in (96, 128], or query/key <= 64 with value <= 512.
# FA2 from v2.17 (8a5af97, "Pad V when Q/V head dims differ (MLA)"): both padded to the larger, which
# must be a multiple of 8 and <= 256, and above 192 a GPU of flags.flash_head_dim.TE_FA2_ABOVE_192.
# Both as at d0067d0.
_MLA_FA3_RELEASE = "v2.8"
_MLA_FA2_RELEASE = "v2.17"


def _mla_fa3_runs(qk: int, v: int) -> bool:
    return (128 < qk <= 192 and 96 < v <= 128) or (qk <= 64 and v <= 512)


def _mla_fa2_runs(qk: int, v: int, capability: tuple[int, int] | None) -> bool:
    padded = max(qk, v)
    return padded % 8 == 0 and padded <= 256 and not te_gpu_refuses(padded, capability)


def _mla_dims(model: ModelSpec) -> tuple[int, int]:
    assert model.mla is not None
    return model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim, model.mla.v_head_dim


def _gpu_refuses(qk: int, v: int, capability: tuple[int, int] | None) -> str:
    """" on sm89" where MLA's dims would run on flash-attn 2 but for the plan's GPU, else ""."""
    if capability is None or not _mla_fa2_runs(qk, v, None) or _mla_fa2_runs(qk, v, capability):
        return ""
    return f" on {sm_name(capability)}"


def _mla_fa2_text(qk: int, v: int, capability: tuple[int, int] | None) -> str | None:
    """flash-attn 2 from the release that pads MLA's dims, with the GPUs it needs above 192 where
    the plan's GPU is unknown (`capability` None); None where no release runs them on this GPU."""
    if not _mla_fa2_runs(qk, v, capability):
        return None
    return f"flash-attn 2 from Transformer Engine {_MLA_FA2_RELEASE} ({_padding(qk, v, capability)})"


def _padding(qk: int, v: int, capability: tuple[int, int] | None) -> str:
    gpus = ", on sm80, sm90, sm100 and sm120 only" if max(qk, v) > 192 and capability is None else ""
    return f"it pads them to {max(qk, v)}{gpus}"


def mla_flash_note(chosen: str, model: ModelSpec, capability: tuple[int, int] | None = None) -> str | None:
    """For an MLA model under --attention-backend flash: the first Transformer Engine release whose
    flash-attn takes its head dims, or that none does, on the plan's GPU (`capability`, its CUDA
    compute capability; None: unknown, and the GPUs FA2 needs are named). None for other models
    and kernels."""
    if model.mla is None or chosen not in ("fa2", "fa3"):
        return None
    qk, v = _mla_dims(model)
    dims = f"MLA's head dims (query/key {qk}, value {v})"
    fa2 = _mla_fa2_text(qk, v, capability)
    if chosen == "fa3" and _mla_fa3_runs(qk, v):
        return (f"{dims} run on flash-attn 3 from Transformer Engine {_MLA_FA3_RELEASE}"
                + (f" and on {fa2}" if fa2 else "") + "; earlier releases disable FlashAttention for MLA")
    if chosen == "fa2" and fa2:
        return f"{dims} run on {fa2}; earlier releases disable flash-attn 2 for MLA"
    flash = "flash-attn 3" if chosen == "fa3" else f"flash-attn 2{_gpu_refuses(qk, v, capability)}"
    return (f"no Transformer Engine release runs {dims} on {flash}"
            + (f" (it runs {fa2} instead)" if fa2 else "") + ", so no run of them matches the timed kernel")


def _dropout_fallback(model: ModelSpec, capability: tuple[int, int] | None) -> str:
    """What Transformer Engine runs for --attention-backend flash where attention dropout turns
    FA3 off ("Disabling FlashAttention 3 for dropout", dot_product_attention/utils.py at d0067d0):
    flash-attn 2, which takes MLA's dims only from v2.17 (8a5af97); before, or where FA2 cannot take
    them, no backend is left (--attention-backend flash turns the others off) and TE raises."""
    if model.mla is None:
        return "flash-attn 2"
    qk, v = _mla_dims(model)
    dims = f"MLA's head dims (query/key {qk}, value {v})"
    fa2 = _mla_fa2_text(qk, v, capability)
    if fa2 is None:
        return (f"flash-attn 2, which takes {dims} in no release{_gpu_refuses(qk, v, capability)}: "
                "--attention-backend flash leaves it no other backend and it raises")
    return (f"flash-attn 2, which takes {dims} from Transformer Engine {_MLA_FA2_RELEASE} (8a5af97; "
            f"{_padding(qk, v, capability)}); earlier releases have no backend for them under --attention-backend "
            "flash and raise")


# How to run each kernel in a framework whose flags cannot select it: framework -> kernel -> how.
# yunchang: LongContextAttention's attn_type (yunchang/kernels AttnType: FA, FA3, TORCH_*, ...;
# the torch types run forward only, flags.yunchang). DeepSpeed-Ulysses wraps the model's own
# attention (Hugging Face attn_implementation: flash_attention_2 by default, flash_attention_3,
# sdpa; SDPA picks cuDNN under sdpa_kernel). torchtitan and MindSpeed call one kernel each.
_HOW: dict[str, dict[str, str]] = {
    "megatron": {
        "sdpa": "Megatron-LM has no SDPA backend (--attention-backend flash, fused, unfused, local or auto), "
                "so no run of them matches the timed kernel",
    },
    "yunchang": {
        "sdpa": "yunchang's AttnType.TORCH runs the forward pass only, so no training run matches the timed "
                "kernel",
        "cudnn": "yunchang has no cuDNN attention type, so no run of them matches the timed kernel",
    },
    "deepspeed": {
        "fa3": "DeepSpeed-Ulysses runs the model's own attention: load it with "
               'attn_implementation="flash_attention_3"',
        "sdpa": 'DeepSpeed-Ulysses runs the model\'s own attention: load it with attn_implementation="sdpa"',
        "cudnn": "DeepSpeed-Ulysses runs the model's own attention: load it with attn_implementation=\"sdpa\" "
                 "and run it under torch.nn.attention.sdpa_kernel(SDPBackend.CUDNN_ATTENTION)",
    },
}


def megatron_backend_flags(kernel: str | None) -> list[str]:
    """--attention-backend for the kernel the user timed the plan with; none without a choice (auto,
    Megatron's default) or for a kernel Megatron-LM has no backend for (sdpa, npu)."""
    backend = MEGATRON_BACKEND.get(kernel) if kernel is not None else None
    return [] if backend is None else [f"--attention-backend {backend}"]


def yunchang_fa3_drops(model: ModelSpec, workload: Workload) -> list[str]:
    """What yunchang's AttnType.FA3 leaves out of the model's attention: it calls flash-attn 3 with
    causal=False, window_size=(-1, -1), softcap=0.0 and no dropout in both passes, whatever
    LongContextAttention is given (yunchang/kernels/attention.py flash_attn3_func_forward and
    flash_attn3_func_backward, at 0.6.4 and at 56118e0)."""
    window = model.window
    return [what for what, dropped in (
        ("the causal mask", workload.causal),
        ("the sliding window", local_window(model, workload.seq_len) is not None),
        ("the logit softcap", window is not None and window.logit_softcapping is not None),
        ("attention dropout", model.attention_dropout > 0),
    ) if dropped]


def yunchang_attn_type(kernel: str | None, model: ModelSpec, workload: Workload) -> str:
    """LongContextAttention's attn_type: FA3 for a plan timed with fa3 whose attention it computes
    as the model does (yunchang_fa3_drops), else FA (flash-attn 2, yunchang's default)."""
    return "FA3" if kernel == "fa3" and not yunchang_fa3_drops(model, workload) else "FA"


def kernel_choice_note(framework: str, chosen: str | None, runs: str, *, model: ModelSpec,
                       workload: Workload, hardware: HardwareProfile | None = None) -> str | None:
    """A note where the plans are timed with `chosen` (--attention-kernel) and `framework`'s flags
    cannot say all of it: they select no such kernel (its own default, `runs`:
    cost.framework_kernels.framework_kernel, runs instead) or leave part of it to what is installed.
    None where the flags run it or none was chosen. `framework` is the one whose flags follow the
    table (megatron for --framework all); `hardware`, the plan's GPU, where known."""
    if chosen is None:
        return None
    capability = compute_capability(hardware) if hardware is not None else None
    timed = f"the plans are timed with {chosen} attention (--attention-kernel)"
    if framework == "megatron" and chosen in MEGATRON_BACKEND:
        flag = megatron_backend_flags(chosen)[0]
        if chosen == "fa3" and model.attention_dropout > 0:
            # Transformer Engine's backend filter: "Disabling FlashAttention 3 for dropout"
            # (transformer_engine/pytorch/attention/dot_product_attention/utils.py at d0067d0).
            return (f"{timed}, which megatron's flags select with {flag}, but under the model's attention dropout "
                    f"{model.attention_dropout:g} Transformer Engine runs {_dropout_fallback(model, capability)}, "
                    "so no run of them matches the timed kernel")
        caveat = _FLASH_VERSION.get(chosen)
        # cuDNN's is the one fused backend; no FA3 where flash is the default
        parts = [part for part in (None if chosen == runs else caveat, mla_flash_note(chosen, model, capability))
                 if part]
        return f"{timed}, which megatron's flags select with {flag}: {'; '.join(parts)}" if parts else None
    if framework == "yunchang" and chosen == "fa3":
        drops = yunchang_fa3_drops(model, workload)
        if not drops:
            return None  # the snippet's attn_type=AttnType.FA3
        return (f"{timed}, but yunchang's snippet runs {runs}: its AttnType.FA3 calls flash-attn 3 without "
                f"{' or '.join(drops)} (yunchang/kernels/attention.py), so no run of them matches the timed kernel")
    if chosen == runs:
        return None
    how = _HOW.get(framework, {}).get(chosen, f"{framework} has no option for it, so no run of them matches the "
                                               "timed kernel")
    return f"{timed}, but {framework}'s flags run {runs}: {how}"
