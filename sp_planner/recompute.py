"""The activation-recompute choices a plan names, and their integer codes in candidate arrays.

none: nothing recomputed. selective: Megatron's --recompute-granularity selective with its default
recompute_modules [core_attn] (transformer_config.py at d98e8a64 line 1941). full: every layer's
forward again (--recompute-granularity full). mla_up_proj: --recompute-granularity selective
--recompute-modules mla_up_proj, without core_attn: multi-latent attention's up-projections and
RoPE re-run in backward from the saved latents (multi_latent_attention.py at d98e8a64 lines
171-174, 983-988), as Megatron-Bridge's DeepSeek-V3 recipes run it; MLA models only
(transformer_config.py lines 1969-1973). moe_act and moe_act+layernorm: --recompute-modules
moe_act (layernorm), the routed experts' activation function and the standalone norms re-run from
their kept inputs (cost.module_recompute), as Megatron-LM's Qwen3 MoE recipes and Megatron-Bridge's
MoE recipes run them; MoE models only (moe_act needs moe_grouped_gemm, transformer_config.py lines
1964-1967, which only MoE models have). mlp and mla_up_proj+mlp: --recompute-modules mlp
[mla_up_proj], the dense layers' whole MLP re-run in backward from its kept input
(transformer_layer.py at d98e8a64 lines 537-539, 992-1010; cost.mlp_recompute), as 5
Megatron-Bridge recipes run mlp and 6 of its DeepSeek recipes mla_up_proj mlp; models with dense
layers only (Megatron sets recompute_mlp on non-MoE layers alone), the combination MLA models only.
"""

from __future__ import annotations

from typing import get_args

import numpy as np

from sp_planner.choices import Recompute

# Recompute as integer codes in candidate arrays (the index into RECOMPUTE).
RECOMPUTE: tuple[Recompute, ...] = get_args(Recompute)
(RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL, RECOMPUTE_MLA_UP_PROJ, RECOMPUTE_MOE_ACT,
 RECOMPUTE_MOE_ACT_LAYERNORM, RECOMPUTE_MLP, RECOMPUTE_MLA_UP_PROJ_MLP) = (RECOMPUTE.index(r) for r in RECOMPUTE)
# Megatron's recompute_modules of each selective choice (--recompute-granularity selective
# --recompute-modules ...; transformer_config.py at d98e8a64 lines 560-581).
RECOMPUTE_MODULES: dict[Recompute, tuple[str, ...]] = {
    "selective": ("core_attn",), "mla_up_proj": ("mla_up_proj",), "moe_act": ("moe_act",),
    "moe_act+layernorm": ("moe_act", "layernorm"), "mlp": ("mlp",), "mla_up_proj+mlp": ("mla_up_proj", "mlp")}


def choices_with(*modules: str) -> tuple[Recompute, ...]:
    """The selective choices whose recompute_modules hold any of `modules` (RECOMPUTE_MODULES)."""
    return tuple(r for r, held in RECOMPUTE_MODULES.items() if set(held) & set(modules))


# The choices that re-run modules of MoE layers only (plan rule moe_act).
MOE_MODULE_RECOMPUTES = choices_with("moe_act", "layernorm")
# The choices that re-run the dense layers' MLP (plan rule mlp), and MLA's up-projections (rule mla_up_proj).
MLP_RECOMPUTES = choices_with("mlp")
MLA_UP_PROJ_RECOMPUTES = choices_with("mla_up_proj")


def recompute_code(recompute):
    """The code of a plan's value (a name), or the codes as given (candidate columns)."""
    return RECOMPUTE.index(recompute) if isinstance(recompute, str) else recompute


def reruns_core_attention(recompute):
    """Whether backward runs the core attention forward again, with its CP traffic (selective, full);
    the module choices keep core attention's saved tensors (vectorized over codes)."""
    recompute = np.asarray(recompute)
    return (recompute == RECOMPUTE_SELECTIVE) | (recompute == RECOMPUTE_FULL)


def _recomputes(recompute, module: str):
    """Whether each code's choice re-runs `module` in backward (vectorized over codes)."""
    recompute = np.asarray(recompute)
    out = np.zeros(recompute.shape, dtype=bool)
    for choice in choices_with(module):
        out = out | (recompute == RECOMPUTE.index(choice))
    return out


def recomputes_moe_act(recompute):
    """Whether the routed experts' activation function re-runs in backward (vectorized over codes)."""
    return _recomputes(recompute, "moe_act")


def recomputes_layernorm(recompute):
    """Whether the standalone norms re-run in backward (vectorized over codes)."""
    return _recomputes(recompute, "layernorm")


def recomputes_mlp(recompute):
    """Whether the dense layers' MLP re-runs in backward (vectorized over codes)."""
    return _recomputes(recompute, "mlp")


def recomputes_mla_up_proj(recompute):
    """Whether MLA's up-projections re-run in backward (vectorized over codes)."""
    return _recomputes(recompute, "mla_up_proj")
