"""Whether cuDNN's FusedAttention, Transformer Engine's fused backend (the one Megatron-LM's default
runs on Hopper and newer), trains a model's head dims on the plan's GPU.

nvte_get_fused_attn_backend (transformer_engine/common/fused_attn/fused_attn.cpp at d0067d0, and the
same lines at v2.18) takes bf16 training at head dims up to 128 on sm80 and newer, up to 256 on sm90
(cuDNN 9.5), and on sm100 to sm10x (sm_arch_ >= 100 && sm_arch_ < 110: B200 and B300 alike) at
query/key 192 with value 128 (cuDNN 9.11) and at 256 with 256 (cuDNN 9.23), the last "forced onto the
deterministic bprop algorithm, which on Blackwell rejects dBias, dropout, and ALiBi (and supports
vanilla softmax only)": so with attention dropout or another softmax no fused backend trains 256
there. That 256 branch came with bffde8f4a (#3056, 2026-07-31) on main and its pick 3bc3d551a on the
release branch, so it is in v2.18 (2026-08-04) and in no earlier release (v2.17.1 has no such line):
with those, or a cuDNN before 9.23, Transformer Engine runs flash-attn 2 at 256 on sm100 and its
unfused attention on sm103 (flags.flash_head_dim: FA2 above 192 on sm80/90/100/120 only).
"""

from __future__ import annotations

from sp_planner.specs.attention import VANILLA
from sp_planner.specs.model import ModelSpec

# Head dims cuDNN trains on every GPU from sm80, and on sm90 (cuDNN 9.5) (module docstring).
FUSED_MAX_HEAD_DIM = 128
FUSED_SM90_MAX_HEAD_DIM = 256
# (query/key, value) dims cuDNN trains on sm10x above 128: MLA's (cuDNN 9.11), and 256 (cuDNN 9.23,
# Transformer Engine v2.18) without attention dropout and with the vanilla softmax.
FUSED_SM10X_DIMS = (192, 128)
FUSED_SM10X_256 = (256, 256)
# The first Transformer Engine release with the 256 branch, its commit there, and its cuDNN.
FUSED_SM10X_256_RELEASE, FUSED_SM10X_256_COMMIT, FUSED_SM10X_256_CUDNN = "v2.18", "3bc3d551a", "9.23"


def attention_dims(model: ModelSpec) -> tuple[int, int]:
    """(query/key, value) head dims of the model's attention: MLA's own, else its head dim twice."""
    if model.mla is None:
        return model.head_dim, model.head_dim
    return model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim, model.mla.v_head_dim


def fused_trains(model: ModelSpec, capability: tuple[int, int]) -> bool:
    """Whether cuDNN's FusedAttention trains the model's head dims in bf16 on a GPU of this compute
    capability (module docstring), at the newest cuDNN its branch names."""
    dims = attention_dims(model)
    if max(dims) <= FUSED_MAX_HEAD_DIM:
        return True
    if capability == (9, 0):
        return max(dims) <= FUSED_SM90_MAX_HEAD_DIM
    if capability[0] != 10:
        return False
    return dims == FUSED_SM10X_DIMS or (dims == FUSED_SM10X_256 and model.attention_dropout == 0
                                        and model.softmax_type == VANILLA)


def fused_256_needs_release(model: ModelSpec, capability: tuple[int, int] | None) -> bool:
    """Whether cuDNN trains the model on this GPU through the sm10x 256 branch alone, which needs
    Transformer Engine v2.18 and cuDNN 9.23 (module docstring)."""
    return (capability is not None and capability[0] == 10 and attention_dims(model) == FUSED_SM10X_256
            and fused_trains(model, capability))
