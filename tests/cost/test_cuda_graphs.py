"""CUDA graph scopes: which host ops a graph replays as one launch (cost.cuda_graphs, cost.host)."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.cuda_graphs import (
    ATTENTION_BACKWARD_OPS,
    ATTENTION_FORWARD_OPS,
    check_graph_scopes,
)
from sp_planner.cost.host import (
    DENSE_BACKWARD_OPS,
    DENSE_FORWARD_OPS,
    host_syncs_per_layer,
    layer_host_ops,
)
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

QWEN3_MOE = load_model("Qwen3-30B-A3B")  # 48 MoE layers, 128 experts, no shared expert
DENSE = load_model("Llama-3-70B")


def ops(model, scopes=(), **kw):
    args = {"tp": 1, "ep": 1, "etp": 1, "low_precision": False, "full_recompute": False} | kw
    fwd, bwd = layer_host_ops(model, cuda_graphs=frozenset(scopes), **args)
    return float(fwd), float(bwd)


def test_attention_is_the_first_part_of_the_dense_count():
    # norm + QKV, attention and its copy (2), projection, residual add; the rest of the dense 10
    # forward / 18 backward is the MLP part. RoPE's 2 + 2 (cost.rope) join the attention part of a
    # rope model: 7 and 12 of its 12 and 20.
    assert (ATTENTION_FORWARD_OPS, ATTENTION_BACKWARD_OPS) == (5, 10)
    assert (DENSE_FORWARD_OPS - ATTENTION_FORWARD_OPS, DENSE_BACKWARD_OPS - ATTENTION_BACKWARD_OPS) == (5, 8)


def test_a_graphed_dense_layer_costs_one_replay_each_way():
    # attn and mlp together: one graph per layer (TE captures the layer's scoped parts as one
    # callable), whatever the precision or TP collectives inside.
    assert ops(DENSE, ["attn", "mlp"]) == (1, 1)
    assert ops(DENSE, ["attn", "mlp"], low_precision=True, tp=8) == (1, 1)
    # attn alone: 12 - 7 + 1 forward, 20 - 12 + 1 backward.
    assert ops(DENSE, ["attn"]) == (6, 9)
    # FP8: the projection's input quantize (+1) and two output-gradient quantizes (+2) go with it.
    assert ops(DENSE, ["attn"], low_precision=True) == (14 - 8 + 1, 24 - 14 + 1)
    # TP 8: half the layer's collectives (2 of 4 forward, 3 of 6 backward) are the attention's.
    assert ops(DENSE, ["attn"], tp=8) == (16 - 9 + 1, 26 - 15 + 1)


def test_router_and_preprocess_graphs_on_the_30b_gb200_recipe():
    # Megatron-Bridge v0.2.0 QWEN3_30B_A3B_GB200_FP8_MX_BASE_CONFIG: moe_router + moe_preprocess,
    # ep 8, MXFP8. Eager 113 forward / 135 backward (test_host: 110 / 133 and the QK norm's 3 / 2);
    # the graph takes the norm and router (11) and the preprocess and permute (11) forward, the
    # router's 7 and the permute's 2 backward, and costs one replay each way.
    assert ops(QWEN3_MOE, ep=8, low_precision=True) == (113, 135)
    assert ops(QWEN3_MOE, ["moe_router", "moe_preprocess"], ep=8, low_precision=True) == (113 - 22 + 1, 135 - 9 + 1)
    assert ops(QWEN3_MOE, ["moe_router"], ep=8, low_precision=True) == (113 - 11 + 1, 135 - 7 + 1)
    # With attn (the 235B GB200 BF16 recipe's scopes): the attention's 8 and 14 and the QK norm's 3
    # and 2 join the same graph.
    assert ops(QWEN3_MOE, ["attn", "moe_router", "moe_preprocess"], ep=8, low_precision=True) == (
        113 - 33 + 1, 135 - 25 + 1)


def test_shared_experts_ride_in_the_router_graph():
    # Megatron graphs shared experts not overlapped with the dispatch with the router (3 forward,
    # 5 backward); DeepSeek-V3 has one, on 58 of its 61 layers.
    dsv3 = load_model("DeepSeek-V3")
    share = dsv3.num_moe_layers / dsv3.num_layers
    eager, graphed = ops(dsv3, ep=64), ops(dsv3, ["moe_router"], ep=64)
    assert eager[0] - graphed[0] == pytest.approx(share * (11 + 3 - 1))
    assert eager[1] - graphed[1] == pytest.approx(share * (7 + 5 - 1))


def test_a_whole_moe_graph_leaves_only_the_attention_eager():
    padded = QWEN3_MOE.model_copy(update={"moe": QWEN3_MOE.moe.model_copy(
        update={"capacity_factor": 1.0, "pad_to_capacity": True})})
    # The attention's 7 forward and 12 backward ops and the QK norm's 3 and 2 stay eager.
    assert ops(padded, ["moe"], ep=8) == (7 + 3 + 1, 12 + 2 + 1)
    assert ops(padded, ["attn", "moe"], ep=8) == (1, 1)


def test_full_iteration_graphs_leave_no_layer_ops_and_no_sync():
    assert ops(QWEN3_MOE, ["full_iteration"], ep=8, low_precision=True) == (0, 0)
    assert not host_syncs_per_layer(QWEN3_MOE, frozenset({"full_iteration"}))
    # Per-layer graphs keep the dropless dispatcher's sync (the D2H copies move out of the graph).
    assert host_syncs_per_layer(QWEN3_MOE, frozenset({"moe_router", "moe_preprocess"}))


def test_graphs_shorten_the_host_stretch_but_keep_the_sync():
    # Qwen3-30B-A3B on 8 GB200s, micro batch 4, MXFP8 (the 25.11/26.08 Megatron-Bridge layout):
    # host-bound eager; router/preprocess graphs leave less exposed host time, still some (the
    # forward stretch before each layer's sync); a full-iteration graph none. Routing
    # force-balanced and the HybridEP dispatcher, as those benchmarks ran them.
    hw, workload = load_hardware("gb200-nvl72"), Workload(seq_len=4096, global_batch=512)
    plan = ParallelPlan(dp=8, ep=8, micro_batch=4, zero=1, precision="mxfp8")
    balanced = QWEN3_MOE.model_copy(update={"moe": QWEN3_MOE.moe.model_copy(
        update={"routing": "balanced", "dispatcher": "hybridep"})})

    def host_s(*scopes):
        return evaluate(balanced, hw, workload, plan, num_nodes=2, gpus_per_node=4,
                        runtime=MEGATRON_RUNTIME.model_copy(update={"cuda_graphs": frozenset(scopes)})
                        ).time.host_overhead_s

    eager, partial = host_s(), host_s("moe_router", "moe_preprocess")
    assert eager > partial > 0.0
    assert host_s("full_iteration") == 0.0


@pytest.mark.parametrize("model, scopes, message", [
    (QWEN3_MOE, ["layer"], "unknown CUDA graph scope layer"),
    (QWEN3_MOE, ["full_iteration", "attn"], "full_iteration graphs the whole step"),
    (QWEN3_MOE, ["moe", "moe_router"], "moe and moe_router exclude each other"),
    (QWEN3_MOE, ["moe_preprocess"], "moe_preprocess CUDA graph needs moe_router"),
    (DENSE, ["moe_router"], "need MoE layers"),
    (QWEN3_MOE, ["mlp"], "every layer of Qwen3-30B-A3B is MoE"),
    (QWEN3_MOE, ["moe"], "needs MoE padded to capacity"),
])
def test_scopes_megatron_refuses(model, scopes, message):
    with pytest.raises(ValueError, match=message):
        check_graph_scopes(model, frozenset(scopes))


def test_preprocess_graph_refuses_a_capped_dispatch():
    capped = QWEN3_MOE.model_copy(update={"moe": QWEN3_MOE.moe.model_copy(update={"capacity_factor": 1.0})})
    with pytest.raises(ValueError, match="capped dispatch"):
        check_graph_scopes(capped, frozenset({"moe_router", "moe_preprocess"}))
    check_graph_scopes(capped, frozenset({"moe_router"}))  # the router alone is fine
