"""Transformer Engine module calls' host time beyond one op (cost.te_host)."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.te_host import layer_te_calls, te_module_extra_s

QWEN3_MOE = load_model("Qwen3-30B-A3B")  # 48 MoE layers, no shared expert
DEEPSEEK_V3 = load_model("DeepSeek-V3")  # 3 dense + 58 MoE layers, 1 shared expert
DENSE = load_model("Llama-3-70B")


def test_te_call_extra_is_te_linear_minus_nn_linear_on_grace_only():
    # TE issue #2053, GB200: te.Linear 99.66 us, torch.nn.Linear 37.08 us per forward call.
    assert te_module_extra_s(load_hardware("gb200-nvl72")) == pytest.approx(62.58e-6)
    assert te_module_extra_s(load_hardware("gb300-nvl72")) == pytest.approx(62.58e-6)  # same Grace
    # x86: the table's H100 TE row is not available, so no extra is counted.
    assert te_module_extra_s(load_hardware("b200")) == 0.0
    assert te_module_extra_s(load_hardware("h100-sxm")) == 0.0


def calls(model, scopes=(), full_recompute=False):
    fwd, bwd = layer_te_calls(model, full_recompute=full_recompute, cuda_graphs=frozenset(scopes))
    return float(fwd), float(bwd)


def test_dense_layer_calls_qkv_attention_proj_fc1_fc2():
    assert calls(DENSE) == (5, 0)
    assert calls(DENSE, full_recompute=True) == (5, 5)  # the forward again in the backward
    assert calls(DENSE, ["attn"]) == (2, 0)
    assert calls(DENSE, ["attn", "mlp"]) == (0, 0)


def test_moe_layer_calls_norm_and_two_grouped_linears_instead_of_the_mlp():
    # Attention 3 and Qwen3's q and k TENorm (cost.qk_norm) 2, the pre-MLP norm, two grouped linears.
    assert calls(QWEN3_MOE) == (3 + 2 + 1 + 2, 0)
    # Megatron-Bridge 25.11's Qwen3-30B-A3B MXFP8 graphs: the norm moves into the router graph.
    assert calls(QWEN3_MOE, ["moe_router", "moe_preprocess"]) == (3 + 2 + 2, 0)
    assert calls(QWEN3_MOE, ["attn", "moe_router", "moe_preprocess"]) == (2, 0)
    assert calls(QWEN3_MOE, ["full_iteration"]) == (0, 0)


def test_shared_experts_and_dense_layers_average_over_the_layers():
    # DeepSeek-V3: 3 dense layers of 5 calls, 58 MoE layers of 3 + 1 + 2 shared + 2 grouped.
    assert calls(DEEPSEEK_V3)[0] == pytest.approx((3 * 5 + 58 * 8) / 61)
    # The router graph holds the norm and the shared experts: 3 + 2 per MoE layer.
    assert calls(DEEPSEEK_V3, ["moe_router"])[0] == pytest.approx((3 * 5 + 58 * 5) / 61)
