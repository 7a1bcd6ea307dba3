"""flags.fused_head_dim: where cuDNN's FusedAttention trains a model's head dims (Transformer
Engine's nvte_get_fused_attn_backend at d0067d0 and v2.18)."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_model
from sp_planner.flags.fused_head_dim import attention_dims, fused_256_needs_release, fused_trains
from tests.flags.conftest import LLAMA3_8B

GEMMA2_9B = load_model("Gemma-2-9B")  # head_dim 256
DEEPSEEK_V3 = load_model("DeepSeek-V3")  # MLA: query/key 192, value 128
GEMMA2_DROPOUT = GEMMA2_9B.model_copy(update={"attention_dropout": 0.1})
GEMMA2_SINKS = GEMMA2_9B.model_copy(update={"softmax_type": "learnable"})


def test_the_dims_are_mlas_own_or_the_head_dim_twice():
    assert (attention_dims(LLAMA3_8B), attention_dims(GEMMA2_9B), attention_dims(DEEPSEEK_V3)) == (
        (128, 128), (256, 256), (192, 128))


@pytest.mark.parametrize(("capability", "trains"), [
    # Up to 128 everywhere from sm80; up to 256 on sm90 (cuDNN 9.5); on sm10x 192/128 (cuDNN 9.11) and
    # 256/256 (cuDNN 9.23) without dropout and with the vanilla softmax; nothing above 128 on sm80/sm89.
    ((8, 0), (True, False, False, False, False)),
    ((8, 9), (True, False, False, False, False)),
    ((9, 0), (True, True, True, True, True)),
    ((10, 0), (True, True, True, False, False)),
    ((10, 3), (True, True, True, False, False)),
    ((12, 0), (True, False, False, False, False)),
])
def test_cudnn_trains_above_128_on_hopper_and_on_blackwell_at_its_two_dim_pairs(capability, trains):
    models = (LLAMA3_8B, DEEPSEEK_V3, GEMMA2_9B, GEMMA2_DROPOUT, GEMMA2_SINKS)
    assert tuple(fused_trains(model, capability) for model in models) == trains


def test_the_sm10x_256_branch_needs_transformer_engine_v2_18():
    assert fused_256_needs_release(GEMMA2_9B, (10, 0)) and fused_256_needs_release(GEMMA2_9B, (10, 3))
    assert not fused_256_needs_release(GEMMA2_9B, (9, 0))  # cuDNN 9.5's branch, in every release
    assert not fused_256_needs_release(GEMMA2_DROPOUT, (10, 0))  # it does not train there at all
    assert not fused_256_needs_release(DEEPSEEK_V3, (10, 0)) and not fused_256_needs_release(GEMMA2_9B, None)
