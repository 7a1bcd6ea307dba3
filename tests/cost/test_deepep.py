"""DeepEP's dispatch and combine (Megatron's flex dispatcher, DeepEP backend; cost.deepep), its
buffers and where it runs, against hand derivations from DeepEP's published figures."""

from math import comb

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.deepep import deepep_buffer_bytes, deepep_group_breaks, deepep_refusal
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.group_routing import group_limited_reach
from sp_planner.cost.moe import moe_layer_fraction, moe_times, nccl_dispatch, permutation_bytes_per_token
from sp_planner.plan import ParallelPlan, violations
from sp_planner.specs.moe import MoESpec
from sp_planner.specs.workload import Workload

QWEN = load_model("qwen3-30b-a3b")  # 128 experts, top-8, hidden 2048
DEEPEP = QWEN.model_copy(update={"moe": QWEN.moe.model_copy(update={"dispatcher": "deepep", "routing": "balanced"})})
H100, B200 = load_hardware("h100-sxm"), load_hardware("b200")
TOKENS = 4096


def _a2a(hardware, model, ep, ep_stride=1):
    return float(moe_times(hardware, model, tokens_per_tp_rank=TOKENS, ep=np.array([ep]), etp=np.array([1]),
                           ep_stride=np.array([ep_stride]), elem_bytes=BF16_BYTES, gpus_per_node=8).all_to_all_s[0])


def _mean_s_per_byte(dispatch_bytes_per_s, combine_bytes_per_s):
    return (1 / dispatch_bytes_per_s + 1 / combine_bytes_per_s) / 2


def test_hopper_inside_a_node_by_hand():
    # EP 8: a token reaches 8 (1 - C(112, 8) / C(128, 8)) = 5.34 ranks, its own included; H800's
    # 153 / 158 of 200 GB/s NVLink as a share of H100's 450.
    reached = 8 * (1 - comb(112, 8) / comb(128, 8))
    received = TOKENS * 2048 * 2 * reached
    want = received * _mean_s_per_byte(153 / 200 * 450e9, 158 / 200 * 450e9) * moe_layer_fraction(DEEPEP)
    assert _a2a(H100, DEEPEP, 8) == pytest.approx(want, rel=1e-9)


def test_hopper_across_nodes_counts_nodes_reached_by_hand():
    # EP 16 over 2 nodes: RDMA bytes = tokens x nodes reached (own included), 2 (1 - C(64, 8) / C(128, 8)),
    # at DeepEP's 43 / 43 GB/s of a 50 GB/s NIC; EP 32 at 58 / 57, EP 24 halfway between 16's and 32's.
    nodes = 2 * (1 - comb(64, 8) / comb(128, 8))
    want = TOKENS * 2048 * 2 * nodes * _mean_s_per_byte(43e9, 43e9)
    assert _a2a(H100, DEEPEP, 16) == pytest.approx(want, rel=1e-9)
    nodes = 4 * (1 - comb(96, 8) / comb(128, 8))
    assert _a2a(H100, DEEPEP, 32) == pytest.approx(TOKENS * 2048 * 2 * nodes * _mean_s_per_byte(58e9, 57e9), rel=1e-9)


def test_blackwell_nodes_take_v1s_fractions_of_their_links():
    # No V1 figure on SM100: H800's 153 / 158 of 200 GB/s as a share of NVLink5's 900, and the same
    # CX-7's 43 / 43 of 50 across two nodes; the SM count does not move the time (no V1 SM sweep).
    reached = 8 * (1 - comb(112, 8) / comb(128, 8))
    received = TOKENS * 2048 * 2 * reached
    assert _a2a(B200, DEEPEP, 8) == pytest.approx(received * _mean_s_per_byte(688.5e9, 711e9), rel=1e-9)
    at64 = DEEPEP.model_copy(update={"moe": DEEPEP.moe.model_copy(update={"dispatcher_sms": 64})})
    assert _a2a(B200, at64, 8) == _a2a(B200, DEEPEP, 8)
    nodes = 2 * (1 - comb(64, 8) / comb(128, 8))
    assert _a2a(B200, DEEPEP, 16) == pytest.approx(TOKENS * 2048 * 2 * nodes * _mean_s_per_byte(43e9, 43e9), rel=1e-9)
    # The h800 profile gets DeepEP's own figures back (NVLink 200 GB/s a direction).
    h800 = load_hardware("h800")
    assert _a2a(h800, DEEPEP, 8) == pytest.approx(received * _mean_s_per_byte(153e9, 158e9), rel=1e-9)


def test_permutations_are_megatrons_around_deepep():
    # Permute: read the 5.34 received rows, write 8 copies; unpermute the reverse (16 local experts).
    reached = 8 * (1 - comb(112, 8) / comb(128, 8))
    got = permutation_bytes_per_token(DEEPEP, np.array([8]), np.array([1]), BF16_BYTES)
    assert got[0] == pytest.approx(2 * (reached + 8) * 2048 * 2)
    assert not nccl_dispatch(DEEPEP)



def test_group_limited_routing_narrows_the_reach():
    # 128 experts in 8 groups of 16, a token's 8 within 4 of them (DeepSeek-V3's 4 of 8), as
    # Megatron's router picks them on random logits (cost.group_routing).
    grouped = DEEPEP.model_copy(update={"moe": DEEPEP.moe.model_copy(update={"router_groups": 8,
                                                                            "router_group_topk": 4})})
    def reach(units):
        return group_limited_reach(128, 8, 8, 4, "softmax", DEEPEP.moe.router_pre_softmax, units)
    # EP 8 in a node: a group a rank, at most 4 reached.
    assert 3 < reach(8) <= 4
    want = TOKENS * 2048 * 2 * reach(8) * _mean_s_per_byte(153 / 200 * 450e9, 158 / 200 * 450e9)
    assert _a2a(H100, grouped, 8) == pytest.approx(want * moe_layer_fraction(grouped), rel=1e-9)
    # EP 16 over 2 nodes of 4 groups each: the tokens times the nodes reached.
    assert _a2a(H100, grouped, 16) == pytest.approx(TOKENS * 2048 * 2 * reach(2) * _mean_s_per_byte(43e9, 43e9),
                                                    rel=1e-9)
    # The permute reads the rows received (one a rank reached) and writes the 8 copies.
    got = permutation_bytes_per_token(grouped, np.array([8]), np.array([1]), BF16_BYTES)
    assert got[0] == pytest.approx(2 * (reach(8) + 8) * 2048 * 2)


@pytest.mark.parametrize("name", ["gb200-nvl72", "a100-80gb", "mi300x"])
def test_generations_without_figures_are_refused(name):
    hardware = load_hardware(name)
    assert "no published benchmark" in deepep_refusal(hardware, DEEPEP, 8)
    with pytest.raises(ValueError, match="DeepEP dispatcher has no published benchmark"):
        _a2a(hardware, DEEPEP, 8)
    assert deepep_refusal(hardware, QWEN, 8) is None
    assert "needs 8 GPUs a node" in deepep_refusal(H100, DEEPEP, 4)


def test_group_rule_follows_deepeps_configs():
    # Megatron's DeepEP group is the expert tp x ep group; DeepEP's Buffer has configs for a few sizes only.
    assert deepep_group_breaks(np.array([1, 2, 1, 1, 3]), np.array([8, 16, 12, 1, 8])).tolist() == [
        False, False, True, True, False]
    workload = Workload(seq_len=4096, global_batch=48)
    rules = {v.rule for v in violations(ParallelPlan(tp=1, dp=12, ep=12, etp=1), DEEPEP, workload)}
    assert "deepep_group" in rules
    # tp does not enter the group (Megatron's tp_size there is the expert TP group's): tp 2 x ep 16 runs.
    rules = {v.rule for v in violations(ParallelPlan(tp=2, dp=16, ep=16, etp=1), DEEPEP, Workload(
        seq_len=4096, global_batch=64))}
    assert "deepep_group" not in rules
    assert "deepep_group" not in {v.rule for v in violations(ParallelPlan(tp=1, dp=12, ep=12, etp=1), QWEN, workload)}


def test_buffer_bytes_by_hand():
    # config.hpp hints at 20 SMs (10 channels), hidden_bytes 4096: 8 ranks, NVLink only, 256 tokens.
    per_token = 4096 + 8 + 128 * 12 + 128 * 4
    assert deepep_buffer_bytes(QWEN, np.array([8]), 20)[0] == pytest.approx(10 * 8 * (5 * 4 + 256 * per_token))
    # 16 ranks: 2 RDMA ranks, 288 NVLink tokens, and the RDMA buffer of 128 tokens x 2 plus 1 MiB.
    nvl = 10 * 8 * (7 * 4 + 288 * per_token)
    rdma = 10 * 2 * (18 * 2 * 4 + 128 * 2 * (per_token + 16)) + 1_048_576
    assert deepep_buffer_bytes(QWEN, np.array([16]), 20)[0] == pytest.approx(nvl + rdma)
    assert deepep_buffer_bytes(QWEN, np.array([12]), 20)[0] == 0.0


def test_megatron_validity_rules():
    base = dict(num_experts=8, top_k=2, moe_intermediate_size=64)
    with pytest.raises(ValueError, match="cannot pad experts to capacity"):
        MoESpec(**base, dispatcher="deepep", capacity_factor=1.0, pad_to_capacity=True)
    with pytest.raises(ValueError, match="even SM count"):
        MoESpec(**base, dispatcher="deepep", dispatcher_sms=21)
    with pytest.raises(ValueError, match="flex dispatcher's SM count"):
        MoESpec(**base, dispatcher_sms=20)
    assert MoESpec(**base, dispatcher="deepep", dispatcher_sms=24).dispatcher_sms == 24
