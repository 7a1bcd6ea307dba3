"""Which token dispatches the simulator times from a benchmark rather than on the cluster graph."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.sim.moe_work import dispatch_timed_off_graph, network_dispatch_off_graph


def _qwen(dispatcher: str):
    qwen = load_model("qwen3-30b-a3b")
    return qwen.model_copy(update={"moe": qwen.moe.model_copy(update={"dispatcher": dispatcher})})


@pytest.mark.parametrize(("dispatcher", "hardware", "ep", "etp", "gpus_per_node", "off_graph", "across"), [
    ("deepep", "h100-sxm", 16, 1, 8, True, True),  # DeepEP over 2 nodes: its internode benchmark
    ("deepep", "h100-sxm", 8, 1, 8, True, False),  # inside a node: NVLink, no fabric to reach
    ("deepep", "h100-sxm", 4, 2, 8, True, False),  # ep 4 at stride etp 2: 8 ranks, one node
    ("deepep", "h100-sxm", 8, 2, 8, True, True),  # ep 8 at stride 2 spans 16 ranks, 2 nodes
    ("alltoall", "h100-sxm", 16, 1, 8, False, False),  # NCCL's all-to-all: flows on the graph
    # 16 GPUs of one NVL72 domain (the graph's node, link_domain_gpus): HybridEP's benchmark.
    ("hybridep", "gb200-nvl72", 16, 1, 16, True, False),
    ("hybridep", "b200", 16, 1, 8, False, False),  # across B200 nodes: NCCL-like flows on the graph
])
def test_dispatch_off_the_graph_and_across_nodes(dispatcher, hardware, ep, etp, gpus_per_node, off_graph, across):
    model, hw = _qwen(dispatcher), load_hardware(hardware)
    plan = ParallelPlan(dp=16, ep=ep, etp=etp, zero=1)
    assert dispatch_timed_off_graph(hw, model, plan, gpus_per_node) is off_graph
    assert network_dispatch_off_graph(hw, model, plan, gpus_per_node) is across


def test_a_dense_model_has_no_dispatch():
    model, hw = load_model("llama3-8b"), load_hardware("h100-sxm")
    assert not dispatch_timed_off_graph(hw, model, ParallelPlan(dp=16), 8)
    assert not network_dispatch_off_graph(hw, model, ParallelPlan(dp=16), 8)
