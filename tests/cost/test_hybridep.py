"""HybridEP's dispatch and combine inside one NVLink domain, timed from DeepEP's published
benchmark (cost.hybridep), against hand derivations."""

from math import comb

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.hybridep import (
    B200_RATES,
    GB200_RATES,
    hybridep_call_s,
    hybridep_rates,
    hybridep_sms,
    hybridep_timed,
    ranks_reached_per_token,
)
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.group_routing import group_limited_reach
from sp_planner.cost.moe import busiest_rank_load, moe_layer_fraction, moe_times

QWEN = load_model("qwen3-30b-a3b")  # 128 experts, top-8, hidden 2048
HYBRIDEP = QWEN.model_copy(update={"moe": QWEN.moe.model_copy(update={"dispatcher": "hybridep",
                                                                      "routing": "balanced"})})
GB200, B200, H100 = (load_hardware(n) for n in ("gb200-nvl72", "b200", "h100-sxm"))
# The NVLink domain the cost model takes for a 64-GPU job on NVL72 racks (one rack, 16 trays).
DOMAIN = GB200.link_domain_gpus(4, 64)


def test_ranks_a_token_reaches_by_hand():
    # EP 8 of 128 experts, 16 a rank: a rank misses a token's 8 picks with C(112, 8) / C(128, 8).
    assert comb(112, 8) / comb(128, 8) == pytest.approx(0.3325, abs=1e-4)
    assert ranks_reached_per_token(128, 8, 8) == pytest.approx(8 * (1 - 0.3325), abs=1e-3)  # 5.34, not 8
    # One expert a rank: every pick is its own rank, as NCCL's all-to-all copies it.
    assert ranks_reached_per_token(8, 2, 8) == pytest.approx(2.0)
    # Vectorized over candidates, the same per element.
    got = ranks_reached_per_token(128, 8, np.array([[8, 16], [16, 64]]))
    assert got.shape == (2, 2) and got[1, 0] == got[0, 1] == pytest.approx(16 * (1 - comb(120, 8) / comb(128, 8)))



def test_group_limited_reach_is_megatrons_routing():
    # DeepSeek-V3: 256 experts, top-8, within 4 of 8 groups (sigmoid): the ranks of the routing
    # sample Megatron's group_limited_topk chooses (cost.group_routing), not 5.29 at EP 8.
    ep = np.array([1, 8, 16, 32, 64])
    got = ranks_reached_per_token(256, 8, ep, 8, 4, "sigmoid")
    assert got.tolist() == [group_limited_reach(256, 8, 8, 4, "sigmoid", False, int(e)) for e in ep]
    assert got[1] == pytest.approx(3.97, abs=0.01) and got[0] == 1.0
    # Every group open, or one group: the unrestricted formula, bit for bit.
    assert np.array_equal(ranks_reached_per_token(256, 8, ep, 8, 8), ranks_reached_per_token(256, 8, ep))
    assert np.array_equal(ranks_reached_per_token(256, 8, ep, 1, 1), ranks_reached_per_token(256, 8, ep))


def test_rates_by_sm_count():
    # README_Hybrid-EP.md GB200, 16 ranks: dispatch BF16 472.84 at 16 SMs and 523.48 at 32, combine
    # 474.48 and 521.55; HybridEP's 24-SM default takes their means, 32 the 32-SM column.
    assert GB200_RATES[0][1][1] == (16, 472.84, 474.48) and GB200_RATES[1][1][1] == (16, 523.48, 521.55)
    default = 1 / ((472.84 + 523.48) / 2 * 1e9) + 1 / ((474.48 + 521.55) / 2 * 1e9)
    assert hybridep_call_s(GB200_RATES, 2.0, 16, 24) == pytest.approx(default)
    assert hybridep_call_s(GB200_RATES, 2.0, 16, 32) == pytest.approx(1 / 523.48e9 + 1 / 521.55e9)
    assert hybridep_call_s(GB200_RATES, 2.0, 16, 64) == pytest.approx(hybridep_call_s(GB200_RATES, 2.0, 16, 32))
    assert B200_RATES == ((16, ((8, 535.94, 530.86),)),)
    assert hybridep_rates(GB200) is GB200_RATES and hybridep_rates(load_hardware("gb300-nvl72")) is GB200_RATES
    assert hybridep_rates(B200) is B200_RATES and hybridep_rates(H100) is None


def test_sm_count_is_the_runs_else_hybrideps_default():
    assert float(hybridep_sms(HYBRIDEP, 16, 1, DOMAIN)) == 24.0  # one NVLink domain
    assert float(hybridep_sms(HYBRIDEP, 16, 1, 8)) == 8.0  # across two 8-GPU nodes
    stated = HYBRIDEP.model_copy(update={"moe": HYBRIDEP.moe.model_copy(update={"dispatcher_sms": 32})})
    assert float(hybridep_sms(stated, 16, 1, 8)) == 32.0
    with pytest.raises(ValueError, match="dispatcher_sms is the flex dispatcher"):
        type(QWEN.moe)(**{**QWEN.moe.model_dump(), "dispatcher_sms": 32})


def test_one_call_at_the_mean_of_dispatch_and_combine_rates():
    received = 1e9
    expected = received * (1 / 535.94e9 + 1 / 530.86e9) / 2
    assert hybridep_call_s(B200_RATES, received, 8, 24) == pytest.approx(expected)  # its one column, any SMs
    # Between listed sizes linear; beyond the last one held (EP 64 on an NVL72: the 36-rank figure).
    mid = hybridep_call_s(GB200_RATES, received, 12, 24)
    assert hybridep_call_s(GB200_RATES, received, 8, 24) < mid < hybridep_call_s(GB200_RATES, received, 16, 24)
    assert hybridep_call_s(GB200_RATES, received, 64, 24) == pytest.approx(
        hybridep_call_s(GB200_RATES, received, 36, 24))
    # Vectorized over candidates.
    got = hybridep_call_s(GB200_RATES, received, np.array([8, 16, 64]), 24)
    assert got.shape == (3,) and got[2] == pytest.approx(float(hybridep_call_s(GB200_RATES, received, 36, 24)))


def test_moe_times_take_hybridep_inside_a_domain_only():
    tokens = 16384.0
    f = moe_layer_fraction(HYBRIDEP)
    got = moe_times(GB200, HYBRIDEP, tokens_per_tp_rank=tokens, ep=16, etp=1, ep_stride=1, elem_bytes=BF16_BYTES,
                    gpus_per_node=DOMAIN)
    # Qwen3-30B-A3B at EP 16, balanced: 6.60 rows a token of 2048 bf16 elements, at GB200's 16-rank rates.
    rows = 16 * (1 - comb(120, 8) / comb(128, 8))
    dispatch, combine = (472.84 + 523.48) / 2, (474.48 + 521.55) / 2  # HybridEP's 24 SMs
    by_hand = tokens * rows * 2048 * 2 * (1 / (dispatch * 1e9) + 1 / (combine * 1e9)) / 2
    assert float(busiest_rank_load(HYBRIDEP, 16)) == 1.0
    assert float(got.all_to_all_s) == pytest.approx(f * by_hand)
    # EP 16 over 16-GPU domains of 8 (two HGX B200 nodes), H100 (no figure) and the alltoall
    # dispatcher: NCCL's all-to-all as before.
    for hardware, model, ep, domain in ((B200, HYBRIDEP, 16, 8), (H100, HYBRIDEP, 8, 8), (GB200, QWEN, 16, DOMAIN)):
        assert not hybridep_timed(hardware, model, ep, 1, domain)
    nccl = moe_times(GB200, QWEN.model_copy(update={"moe": QWEN.moe.model_copy(update={"routing": "balanced"})}),
                     tokens_per_tp_rank=tokens, ep=16, etp=1, ep_stride=1, elem_bytes=BF16_BYTES, gpus_per_node=DOMAIN)
    assert float(nccl.all_to_all_s) != pytest.approx(float(got.all_to_all_s), rel=0.01)
    # No expert parallelism, no dispatch.
    assert not hybridep_timed(GB200, HYBRIDEP, 1, 1, DOMAIN)
    alone = moe_times(GB200, HYBRIDEP, tokens_per_tp_rank=tokens, ep=1, etp=1, ep_stride=1, elem_bytes=BF16_BYTES,
                      gpus_per_node=DOMAIN)
    assert float(alone.all_to_all_s) == 0.0



def test_moe_times_take_the_groups_reach():
    # Qwen3-30B-A3B's 128 experts in 8 groups of 16, 4 open, at EP 16 (8 experts a rank, half a
    # group): the rows received scale with the sample's reach, not 16 (1 - C(120, 8) / C(128, 8)).
    tokens = 16384.0
    grouped = HYBRIDEP.model_copy(update={"moe": HYBRIDEP.moe.model_copy(update={"router_groups": 8,
                                                                                "router_group_topk": 4})})
    times = [float(moe_times(GB200, m, tokens_per_tp_rank=tokens, ep=16, etp=1, ep_stride=1, elem_bytes=BF16_BYTES,
                             gpus_per_node=DOMAIN).all_to_all_s) for m in (HYBRIDEP, grouped)]
    rows = group_limited_reach(128, 8, 8, 4, "softmax", HYBRIDEP.moe.router_pre_softmax, 16)
    assert times[1] / times[0] == pytest.approx(rows / (16 * (1 - comb(120, 8) / comb(128, 8))), rel=1e-12)


def test_unhidden_share_from_kernel_only_against_whole_call_rates():
    from sp_planner.cost.hybridep import hybridep_unhidden_share

    # GB200 EP 16: torch 498.16 / 498.015, kernel-only (661.93 + 706.95) / 2 and (600.75 + 666.26) / 2.
    kernel = 1 / ((661.93 + 706.95) / 2) + 1 / ((600.75 + 666.26) / 2)
    torch = 1 / ((472.84 + 523.48) / 2) + 1 / ((474.48 + 521.55) / 2)
    got = hybridep_unhidden_share(GB200, HYBRIDEP, 16, 1, DOMAIN)
    assert float(got) == pytest.approx(1 - kernel / torch) and float(got) == pytest.approx(0.243, abs=0.001)
    # H100 EP 16 over two 8-GPU nodes: the "IB Bandwidth" rows at 8 SMs.
    h100 = hybridep_unhidden_share(H100, HYBRIDEP, 16, 1, 8)
    assert float(h100) == pytest.approx(1 - (1 / 76.80 + 1 / 68.00) / (1 / 57.74 + 1 / 56.96))
    # Nothing published inside an H100 node; NCCL's all-to-all is all kernel.
    assert float(hybridep_unhidden_share(H100, HYBRIDEP, 8, 1, 8)) == 0.0
    assert float(hybridep_unhidden_share(GB200, QWEN, 16, 1, DOMAIN)) == 0.0
