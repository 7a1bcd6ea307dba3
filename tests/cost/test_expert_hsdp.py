"""HSDP over routed experts by hand (cost.fsdp.expert_shard_size): the experts' states shard over
edp / dp_replicate ranks, their gradients reduce-scatter there and the shard is all-reduced over the
replicas, as Megatron-Core's intra- and inter-partial expert data-parallel groups do
(parallel_state.py initialize_model_parallel at d98e8a6 lines 1447-1497)."""

import pytest

from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import MoESpec, Workload

WORKLOAD = Workload(seq_len=64, global_batch=8)
# The toy model (h 64, 2 layers, 4 heads of 16, 2 KV heads, vocab 100) with 4 routed experts of
# width 32 in every layer: an expert is 3 x 64 x 32 = 6144 parameters (SwiGLU).
EXPERT = 3 * 64 * 32
# Per rank at tp 1, ep 2: 2 layers x 4 / 2 experts; the rest: Q and O 64 x 64, K and V 64 x 32,
# 2 norms of 64 and the 64 x 4 router a layer, the embedding and output layer 100 x 64 and the
# final norm 64.
EXPERTS = 2 * 2 * EXPERT  # 24,576
DENSE = 2 * (2 * 4096 + 2 * 2048 + 2 * 64 + 64 * 4) + 2 * 6400 + 64  # 38,208
# 2 nodes of 4 GPUs, dp 8, ep 2: edp 4 (ranks 2 apart); 2 replicas shard the dense states over 4
# ranks (0-3), the experts' over 2 ({0, 2}), and the replicas are 4 ranks apart (the next node).
HSDP = ParallelPlan(dp=8, ep=2, zero=1, dp_replicate=2)


@pytest.fixture
def moe_model(toy_model):
    return toy_model.model_copy(update={"moe": MoESpec(num_experts=4, top_k=2, moe_intermediate_size=32)})


def _estimate(model, hardware, plan):
    return evaluate(model, hardware, WORKLOAD, plan, num_nodes=2, gpus_per_node=4)


def test_expert_optimizer_states_shard_over_edp_over_the_replicas(moe_model, hardware):
    # Megatron's distributed optimizer: fp32 master weights and two Adam moments, 12 B a parameter.
    assert _estimate(moe_model, hardware, HSDP).memory.optimizer_bytes == pytest.approx(
        12 * (DENSE / 4 + EXPERTS / 2))  # 262,080 B (188,352 when the experts were sharded over all 4)
    plain = _estimate(moe_model, hardware, HSDP.model_copy(update={"dp_replicate": 1}))
    assert plain.memory.optimizer_bytes == pytest.approx(12 * (DENSE / 8 + EXPERTS / 4))


def test_expert_gradients_reduce_in_the_shard_group_then_over_the_replicas(moe_model, hardware):
    est = _estimate(moe_model, hardware, HSDP)
    comm, links = est.comm_bytes, est.comm_links
    # fp32 gradients reduce-scattered once a step (ZeRO-1), (n-1)/n of the buffer; bf16 parameters
    # gathered after the update.
    assert comm.edp_reduce_scatter == 4 * EXPERTS // 2
    assert comm.edp_all_gather == 2 * EXPERTS // 2
    assert comm.dp_reduce_scatter == 4 * DENSE * 3 // 4
    assert comm.dp_all_gather == 2 * DENSE * 3 // 4
    # Both fp32 shards all-reduced over the 2 replicas: 2 x 1/2 of (38,208 / 4 + 24,576 / 2) x 4 B.
    assert comm.dp_all_reduce == 4 * (DENSE // 4 + EXPERTS // 2)
    # The expert shard group {0, 2} is inside a node (all edp {0, 2, 4, 6} spanned two); the
    # replicas are on the next node.
    assert (links.edp_reduce_scatter, links.edp_all_gather, links.dp_all_reduce) == ("intra", "intra", "inter")
    plain = _estimate(moe_model, hardware, HSDP.model_copy(update={"dp_replicate": 1}))
    assert plain.comm_bytes.edp_reduce_scatter == 4 * EXPERTS * 3 // 4
    assert plain.comm_links.edp_reduce_scatter == "inter"


def test_expert_shard_size_is_edp_over_the_replicas_and_never_zero():
    import numpy as np

    from sp_planner.candidates import Candidates
    from sp_planner.cost.fsdp import expert_shard_size

    assert expert_shard_size(HSDP) == 2  # edp 4 / 2
    # Candidates: edp 16 / 4 = 4; edp 2 / 4 (the expert_replicas rule's breaker) kept at 1.
    c = Candidates.of_plan(ParallelPlan(dp=16, ep=1, zero=1, dp_replicate=4))
    assert expert_shard_size(c).tolist() == [4]
    c = Candidates.of_plan(ParallelPlan(dp=16, ep=8, zero=1, dp_replicate=4))
    assert np.asarray(expert_shard_size(c)).tolist() == [1]
