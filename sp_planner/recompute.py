"""The activation-recompute choices a plan names, and their integer codes in candidate arrays.

none: nothing recomputed. selective: Megatron's --recompute-granularity selective with its default
recompute_modules [core_attn] (transformer_config.py at d98e8a64 line 1941). full: every layer's
forward again (--recompute-granularity full). mla_up_proj: --recompute-granularity selective
--recompute-modules mla_up_proj, without core_attn: multi-latent attention's up-projections and
RoPE re-run in backward from the saved latents (multi_latent_attention.py at d98e8a64 lines
171-174, 983-988), as Megatron-Bridge's DeepSeek-V3 recipes run it; MLA models only
(transformer_config.py lines 1969-1973).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Recompute = Literal["none", "selective", "full", "mla_up_proj"]
# Recompute as integer codes in candidate arrays (the index into RECOMPUTE).
RECOMPUTE: tuple[Recompute, ...] = get_args(Recompute)
RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL, RECOMPUTE_MLA_UP_PROJ = (
    RECOMPUTE.index(r) for r in ("none", "selective", "full", "mla_up_proj"))


def recompute_code(recompute):
    """The code of a plan's value (a name), or the codes as given (candidate columns)."""
    return RECOMPUTE.index(recompute) if isinstance(recompute, str) else recompute


def reruns_core_attention(recompute):
    """Whether backward runs the core attention forward again, with its CP traffic (selective, full);
    mla_up_proj keeps core attention's saved tensors (vectorized over codes)."""
    recompute = np.asarray(recompute)
    return (recompute == RECOMPUTE_SELECTIVE) | (recompute == RECOMPUTE_FULL)
