"""Whether flash-attn 2 runs a model's head dim on the plan's GPU: in Transformer Engine (Megatron-LM's
--attention-backend flash) and in flash-attn itself (yunchang's AttnType.FA and DeepSpeed-Ulysses's
flash_attention_2 call it directly).

Transformer Engine (get_attention_backend, transformer_engine/pytorch/attention/dot_product_attention/
utils.py at d0067d0) disables FlashAttention 2 where its head dim is above 192 on a GPU other than
sm80, sm90, sm100 and sm120 ("(>192 requires sm80/90/100+)"): MLA's query/key and value dims padded to
the larger from v2.17 (8a5af97), the query/key dim before (when MLA disabled FA2 altogether). The list
is in every release from v2.2 (874418853 added sm100 and sm120 to sm80 and sm90) through v2.18 and at
d0067d0: 5535b09 replaced it with ">= sm80" (naming sm103 B300 and sm89 L40S) and 8a5af97 restored it
the next day, before v2.17. Megatron-LM's --attention-backend flash turns FusedAttention and the
unfused path off (NVTE_FUSED_ATTN=0, NVTE_UNFUSED_ATTN=0: megatron/core/models/common/language_module/
language_module.py at d98e8a64dd), so TE has no backend left and raises ("No dot product attention
backend is available", dot_product_attention.py).

Under Megatron-LM's default (--attention-backend auto) TE picks from the backends left (get_attention_
backend at d0067d0; FusedAttention preferred on Hopper and newer): where it disables FA2
(te_fa2_refuses) and cuDNN's FusedAttention does not train the head dims either (flags.fused_head_dim:
above 128 only on sm90, and on sm10x at 192/128 or, from v2.18 with cuDNN 9.23, at 256 without
attention dropout), it runs UnfusedDotProductAttention; that takes no context parallelism ("Disabling
UnfusedDotProductAttention as it does not support context parallelism"), so a plan with ulysses x ring
> 1 has no backend left: Megatron's flags refuse it (te_runs_unfused sets
FlagChoices.te_unfused_attention), so the search's Megatron ranking holds none. Under --framework
megatron that unfused attention times the plans and sizes their s x s scores (cli.plan_kernel,
cost.kernels), and the search holds no context parallelism; under --framework all a published curve
times every framework's plans (yunchang and DeepSpeed call flash-attn 2 there). Where cuDNN does not
train them but FA2 runs (sm100: 256 under attention dropout), TE runs FA2, whose curve then times
Megatron's plans (te_default_kernel).

flash-attn 2 itself: the backward at head dims above 192 (its 256 kernel, run_mha_bwd_hdim256 in
csrc/flash_attn/src/flash_bwd_launch_template.h) needs 144 KB of shared memory a block, which sm86 and
sm89 lack ("sm86 and sm89, max smem is 99 KB. Only works without dropout", from v2.5.5, 2406f28).
Under attention dropout releases up to v2.7.2 raise there (flash_api.cpp mha_bwd, at v2.6.2-v2.7.2
"FlashAttention backward for head dim > 192 with dropout requires A100/A800 or H100/H800"; before
v2.5.5 any head dim above 192) and v2.7.3 on (bbb21d6 dropped that check) launch no backward kernel;
as at v2.8.3 and 0251105a.

PyTorch SDPA's flash backend (a copy of flash-attn 2; torchtitan's SDPA) turns itself off for
training on sm86-sm89 and sm120-sm121 at head dims in (192, 224], and above 224 under dropout
(check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120, aten/src/ATen/native/
transformers/cuda/sdp_utils.cpp at pytorch 001f694a): 256 without dropout trains there, as in flash-attn.
torchtitan's SDPA enables cuDNN, flash and math as its priority order (sdpa_kernel(..., set_priority=
True): ScaledDotProductAttention.sdpa_backends, torchtitan/models/attention.py at v0.2.0-v0.2.2,
models/common/attention.py at b5bcd76c), applies no dropout, and cuDNN's SDPA trains head dims above 128
on sm90 (256, cuDNN >= 9.10) and on sm10x at MLA's 192/128 (cuDNN >= 9.11) only (check_cudnn_tensor_shapes,
sdp_utils.cpp; sdpa_cudnn_trains): elsewhere flash runs (torchtitan_default_kernel), and where flash
refuses too the math backend, which holds the whole s x s scores (torchtitan_sdpa_note).
"""

from __future__ import annotations

from sp_planner.cost.attention_kernels import UNFUSED, kernel_curves, own_attention
from sp_planner.cost.kernel_sources import KERNEL_NAMES
from sp_planner.cost.families import compute_capability
from sp_planner.flags.fused_head_dim import (
    FUSED_SM10X_256_COMMIT,
    FUSED_SM10X_256_CUDNN,
    FUSED_SM10X_256_RELEASE,
    fused_256_needs_release,
    fused_trains,
)
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# The GPUs Transformer Engine runs FlashAttention 2 on above head dim 192 (module docstring).
TE_FA2_ABOVE_192 = ((8, 0), (9, 0), (10, 0), (12, 0))
# The GPUs whose 99 KB of shared memory a block run flash-attn 2's head-dim-256 backward only without
# dropout (flash_bwd_launch_template.h run_mha_bwd_hdim256, module docstring).
FLASH_ATTN_99KB = ((8, 6), (8, 9))
# The GPUs on which PyTorch SDPA's flash backend trains head dims in (192, 224] not at all and above
# 224 only without dropout (module docstring), and those bounds.
SDPA_FLASH_SMALL_SMEM = ((8, 6), (8, 7), (8, 9), (12, 0), (12, 1))
SDPA_FLASH_REFUSED_HEAD_DIMS = (192, 224)
# flash-attn's frameworks: they call flash-attn 2 directly (flags.kernel_choice).
_FLASH_ATTN_CALLERS = ("yunchang", "deepspeed")


def fa2_head_dim(model: ModelSpec) -> int:
    """The head dim flash-attn 2 runs the model's attention at: MLA's query/key and value dims
    padded to the larger (Transformer Engine v2.17, 8a5af97), else the model's head dim."""
    if model.mla is None:
        return model.head_dim
    return max(model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim, model.mla.v_head_dim)


def sm_name(capability: tuple[int, int]) -> str:
    """sm89 for (8, 9): the name Transformer Engine's and flash-attn's messages use."""
    return f"sm{capability[0]}{capability[1]}"


def te_gpu_refuses(head_dim: int, capability: tuple[int, int] | None) -> bool:
    """Whether Transformer Engine disables FlashAttention 2 at `head_dim` (padded) on a GPU of this
    compute capability (TE_FA2_ABOVE_192); False where it is unknown."""
    return capability is not None and head_dim > 192 and capability not in TE_FA2_ABOVE_192


def te_fa2_refuses(model: ModelSpec, hardware: HardwareProfile) -> bool:
    """te_gpu_refuses at the model's head dim (fa2_head_dim) on the plan's GPU."""
    return te_gpu_refuses(fa2_head_dim(model), compute_capability(hardware))


def _dims(model: ModelSpec) -> str:
    """"Gemma-2-9B's head dim 256": the head dim FA2 runs at (fa2_head_dim), MLA's said so."""
    return f"{model.name}'s head dim {fa2_head_dim(model)}" + (" (MLA's dims padded to the larger)"
                                                               if model.mla is not None else "")


def flash_head_dim_problem(model: ModelSpec, hardware: HardwareProfile, *, stack: str, chosen: str | None,
                           timed: str | None) -> str | None:
    """Why the plans cannot run flash-attn 2 at the model's head dim on this GPU, or None: Megatron
    with --attention-kernel fa2 (`chosen`; its --attention-backend flash leaves TE no other backend),
    or a framework that calls flash-attn 2 itself (`timed` fa2, `stack` the framework that times the
    plans) under attention dropout on sm86/sm89 (module docstring)."""
    capability = compute_capability(hardware)
    if capability is None or fa2_head_dim(model) <= 192:
        return None
    dim = _dims(model)
    gpu = f"{hardware.name} ({sm_name(capability)})"
    if stack == "megatron" and chosen == "fa2" and te_fa2_refuses(model, hardware):
        return (f"--attention-kernel fa2: Transformer Engine disables flash-attn 2 for {dim} on {gpu}: above 192 "
                "it runs it on sm80, sm90, sm100 and sm120 only (get_attention_backend, v2.2 to v2.18 and d0067d0), "
                "and --attention-backend flash leaves it no other backend, so it raises; leave --attention-kernel "
                "out")
    if stack in _FLASH_ATTN_CALLERS and timed == "fa2" and model.attention_dropout > 0 \
            and capability in FLASH_ATTN_99KB:
        return (f"{stack} runs flash-attn 2, whose backward at {dim} needs 144 KB of shared memory a block "
                f"under attention dropout ({model.attention_dropout:g}); {gpu} has 99 KB: flash-attn up to v2.7.2 "
                "raises and v2.7.3 on runs no backward kernel (flash_bwd_launch_template.h "
                "run_mha_bwd_hdim256); plan with --framework megatron, whose Transformer Engine runs another backend "
                "there, or a model without dropout")
    return None


def te_runs_unfused(model: ModelSpec, hardware: HardwareProfile) -> bool:
    """Whether Transformer Engine runs its unfused attention for the model on the plan's GPU: FA2
    disabled (te_fa2_refuses) and no cuDNN fused attention trains the head dims there
    (fused_head_dim.fused_trains). That path takes no context parallelism, so Megatron's flags refuse
    ulysses x ring > 1 there (FlagChoices.te_unfused_attention)."""
    capability = compute_capability(hardware)
    return capability is not None and te_fa2_refuses(model, hardware) and not fused_trains(model, capability)


def _te_flash_replaces_fused(model: ModelSpec, hardware: HardwareProfile) -> bool:
    """Whether Transformer Engine runs FA2 on a GPU where Megatron's default is cuDNN's fused
    attention (Hopper and newer), as cuDNN does not train the head dims there (module docstring)."""
    capability = compute_capability(hardware)
    return (capability is not None and capability >= (9, 0) and not fused_trains(model, capability)
            and not te_fa2_refuses(model, hardware))


def te_default_kernel(model: ModelSpec, hardware: HardwareProfile, kernel: str | None) -> str | None:
    """The kernel that times Megatron's default (no --attention-kernel): `kernel`, its framework
    default (cost.framework_kernels.default_kernel), or FA2 where TE runs it in place of cuDNN
    (_te_flash_replaces_fused) and FA2's curve is published for the GPU."""
    if kernel == "cudnn" and _te_flash_replaces_fused(model, hardware) and kernel_curves(hardware, "fa2") is not None:
        return "fa2"
    return kernel


def _te_runs_unfused(model: ModelSpec, hardware: HardwareProfile, *, stack: str, chosen: str | None,
                     timed: str | None) -> bool:
    """Whether Megatron's default (no --attention-kernel) times the plans with a published kernel's
    curves where Transformer Engine runs its unfused attention instead (te_runs_unfused)."""
    return stack == "megatron" and chosen is None and timed is not None and te_runs_unfused(model, hardware)


def _te_unfused_why(model: ModelSpec, hardware: HardwareProfile) -> str:
    capability = compute_capability(hardware)
    assert capability is not None
    dropout = (f" under attention dropout {model.attention_dropout:g}"
               if capability[0] == 10 and model.attention_dropout > 0 else "")
    return (f"Transformer Engine disables flash-attn 2 for {model.name}'s head dim {fa2_head_dim(model)} on "
            f"{hardware.name} ({sm_name(capability)}) and no cuDNN fused attention trains it there{dropout}")


def te_unfused_note(model: ModelSpec, hardware: HardwareProfile, *, stack: str, chosen: str | None,
                    timed: str | None, context_parallel: bool = True) -> str | None:
    """The note where Transformer Engine runs its unfused attention (_te_runs_unfused): under
    --framework megatron that times the plans (`timed` unfused: cost.kernels, its s x s scores in
    memory, sp-plan's search then holding ulysses x ring 1 plans only); under --framework all, whose
    ranking yunchang's and DeepSpeed's flash-attn 2 calls run, the plans are timed with a published
    kernel's curves (flash-attn 2 on sm89, cuDNN's on sm103) and Megatron's flags refuse context
    parallelism where plans may have it (`context_parallel`: --ulysses and --ring do not both pin 1);
    None elsewhere."""
    if not _te_runs_unfused(model, hardware, stack=stack, chosen=chosen, timed=timed):
        return None
    if timed == UNFUSED:
        return (f"{_te_unfused_why(model, hardware)}, so it runs its unfused attention, which times the plans, "
                "its s x s scores in memory" + ("; it takes no context parallelism, so the plans have ulysses x "
                                                "ring 1" if context_parallel else ""))
    kernel = KERNEL_NAMES.get(str(timed), str(timed))
    return (f"{_te_unfused_why(model, hardware)}, so it runs its unfused attention, while the plans are timed "
            f"with {kernel} (--framework megatron times megatron's with it)"
            + ("; that takes no context parallelism, so megatron's flags take plans with ulysses x ring 1 only"
               if context_parallel else ""))


def te_context_parallel_problem(model: ModelSpec, hardware: HardwareProfile, *, framework: str, chosen: str | None,
                                timed: str | None, ulysses: int | None, ring: int | None) -> str | None:
    """The one-line refusal where --ulysses or --ring pins context parallelism on Megatron and
    Transformer Engine's only backend there is its unfused attention (te_unfused_note), else None."""
    pinned = [f"--{name} {degree}" for name, degree in (("ulysses", ulysses), ("ring", ring))
              if degree is not None and degree > 1]
    if not pinned or not _te_runs_unfused(model, hardware, stack=framework, chosen=chosen, timed=timed):
        return None
    return (f"{' and '.join(pinned)}: {_te_unfused_why(model, hardware)}, and its unfused attention takes no "
            "context parallelism (get_attention_backend at d0067d0), so it has no backend and raises; give "
            "--ulysses 1 --ring 1")


def te_kernel_note(model: ModelSpec, hardware: HardwareProfile, *, stack: str, chosen: str | None,
                   timed: str | None) -> str | None:
    """Where Megatron's plans are timed with what Transformer Engine runs at a head dim above 128 on
    Hopper and newer other than cuDNN's usual fused attention: FA2 in its place
    (te_default_kernel), or cuDNN through the sm10x 256 branch, which needs TE v2.18 and cuDNN 9.23
    (fused_head_dim); None elsewhere."""
    capability = compute_capability(hardware)
    if stack != "megatron" or capability is None or chosen not in (None, timed):
        return None
    gpu = f"{hardware.name} ({sm_name(capability)})"
    if chosen is None and timed == "fa2" and _te_flash_replaces_fused(model, hardware):
        dropout = f" under attention dropout {model.attention_dropout:g}" if model.attention_dropout > 0 else ""
        return (f"no cuDNN fused attention trains {_dims(model)} on {gpu}{dropout} (nvte_get_fused_attn_backend at "
                "d0067d0 and v2.18), so Transformer Engine runs flash-attn 2, whose curve times the plans")
    if timed == "cudnn" and fused_256_needs_release(model, capability):
        earlier = ("flash-attn 2 there" if not te_fa2_refuses(model, hardware) else
                   "its unfused attention there, which takes no context parallelism")
        return (f"the plans are timed with cuDNN's fused attention, which trains {_dims(model)} on {gpu} from "
                f"Transformer Engine {FUSED_SM10X_256_RELEASE} ({FUSED_SM10X_256_COMMIT}) with cuDNN >= "
                f"{FUSED_SM10X_256_CUDNN}; with an earlier release or cuDNN it runs {earlier}")
    return None


def sdpa_flash_refuses(head_dim: int, capability: tuple[int, int] | None, *, dropout: bool) -> bool:
    """Whether PyTorch SDPA's flash backend refuses to train at `head_dim` on a GPU of this compute
    capability (SDPA_FLASH_SMALL_SMEM, module docstring); False where it is unknown."""
    low, high = SDPA_FLASH_REFUSED_HEAD_DIMS
    return capability in SDPA_FLASH_SMALL_SMEM and (low < head_dim <= high or (head_dim > high and dropout))


def torchtitan_sdpa_note(model: ModelSpec, hardware: HardwareProfile, *, stack: str, timed: str | None) -> str | None:
    """Where torchtitan's plans are timed with SDPA's flash curve but its SDPA runs the math backend:
    flash refuses the head dim (MLA's padded to the larger, fa2_head_dim) for training on this GPU and
    cuDNN's SDPA takes none above 128 off sm90 and sm10x (module docstring; torchtitan applies no
    dropout); None elsewhere."""
    capability = compute_capability(hardware)
    if stack != "torchtitan" or timed != "sdpa" or capability is None:
        return None
    if not sdpa_flash_refuses(fa2_head_dim(model), capability, dropout=False):
        return None
    return (f"torchtitan's SDPA (cuDNN, flash, then math) trains {_dims(model)} on "
            f"{hardware.name} ({sm_name(capability)}) with neither cuDNN (above 128 on sm90 and sm10x only) nor "
            "flash (PyTorch refuses head dims in (192, 224] there: sdp_utils.cpp "
            "check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120), so it runs the math backend, "
            "which holds the whole s x s scores: the plans are timed with SDPA flash's curve and sized without "
            "them")


def sdpa_cudnn_trains(model: ModelSpec, capability: tuple[int, int]) -> bool:
    """Whether PyTorch SDPA's cuDNN backend takes the model's head dims (query/key, value) on a GPU of
    this compute capability: multiples of 8 up to 128; up to 256 on sm90; 192/128 on sm10x
    (check_cudnn_tensor_shapes in aten/src/ATen/native/transformers/cuda/sdp_utils.cpp)."""
    qk, v = ((model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim, model.mla.v_head_dim)
             if model.mla is not None else (model.head_dim, model.head_dim))
    limit = 256 if capability == (9, 0) else 192 if capability[0] == 10 and (qk, v) == (192, 128) else 128
    return max(qk, v) <= limit and qk % 8 == 0 and v % 8 == 0


def torchtitan_default_kernel(model: ModelSpec, hardware: HardwareProfile, *, runs: str,
                              kernel: str | None) -> str | None:
    """The kernel that times torchtitan's default (no --attention-kernel): `kernel` (default_kernel's),
    or, where its SDPA tries cuDNN first (`runs`, framework_kernel's: v0.2.x) but PyTorch's cuDNN SDPA
    does not take the head dims on this GPU (sdpa_cudnn_trains) or no cuDNN curve is published for it,
    SDPA's flash backend, the next in its order (module docstring); a profile's own curves stay."""
    if runs != "cudnn" or own_attention(hardware):
        return kernel
    capability = compute_capability(hardware)
    if kernel == "cudnn" and (capability is None or sdpa_cudnn_trains(model, capability)):
        return kernel
    return "sdpa" if kernel_curves(hardware, "sdpa") is not None else kernel
