"""The ranks a group-limited router's token reaches (cost.group_routing): the sample's choices
against Megatron-Core's own router, and DeepSeek-V3's figures with their standard errors."""

import importlib.util
import warnings

import numpy as np
import pytest

from sp_planner.cost.group_routing import (
    SAMPLE_SEED,
    SAMPLE_TOKENS,
    group_limited_reach,
    routed_experts,
    units_reached_by_token,
)

DSV3 = (256, 8, 8, 4, "sigmoid", False)  # E, k, G, M, score function, pre-softmax
HAVE_MEGATRON = importlib.util.find_spec("megatron") is not None and importlib.util.find_spec(
    "megatron.core") is not None


@pytest.mark.skipif(not HAVE_MEGATRON, reason="megatron-core is not installed")
@pytest.mark.parametrize(("experts", "top_k", "groups", "open_groups", "score", "pre"),
                         [DSV3, (128, 8, 8, 4, "softmax", False), (128, 8, 8, 4, "softmax", True),
                          (64, 6, 8, 3, "sigmoid", False)])
def test_choices_are_megatrons(experts, top_k, groups, open_groups, score, pre):
    # The same logits through moe_utils.topk_routing_with_score_function (-> group_limited_topk) on
    # CPU torch: every one of the first 4096 tokens takes the same experts.
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.transformer.moe.moe_utils import topk_routing_with_score_function
    tokens = 4096
    logits = np.random.Generator(np.random.PCG64(SAMPLE_SEED)).standard_normal(
        (SAMPLE_TOKENS, experts), dtype=np.float32)[:tokens]
    _, routing_map = topk_routing_with_score_function(torch.from_numpy(logits), top_k, use_pre_softmax=pre,
                                                      num_groups=groups, group_topk=open_groups,
                                                      score_function=score)
    ours = np.zeros((tokens, experts), dtype=bool)
    np.put_along_axis(ours, routed_experts(experts, top_k, groups, open_groups, score, pre)[:tokens], True, axis=1)
    assert np.array_equal(routing_map.numpy(), ours)


def test_every_token_within_its_open_groups():
    experts = routed_experts(*DSV3)
    assert experts.shape == (SAMPLE_TOKENS, 8)
    assert all(len(set(row)) == 8 for row in experts[:256])
    # At most 4 of the 8 groups of 32 a token.
    assert units_reached_by_token(experts, 256, 8).max() == 4


@pytest.mark.parametrize(("units", "want"), [(8, 3.97), (32, 6.85), (64, 7.49), (2, 1.97), (4, 3.13)])
def test_deepseek_v3_reach_and_its_standard_error(units, want):
    # A Monte-Carlo of group_limited_topk with 200k tokens (another seed) reached 3.97 ranks at EP 8,
    # 6.85 at 32, 7.49 at 64, and DeepEP's nodes of 8 ranks at EP 16 / 32 1.97 / 3.13: the sample
    # lies within 3 standard errors (plus those figures' rounding) of each, and each standard error
    # is under 0.2% of the mean.
    per_token = units_reached_by_token(routed_experts(*DSV3), 256, units)
    mean = per_token.mean()
    se = per_token.std(ddof=1) / np.sqrt(per_token.size)
    assert se < 0.002 * mean
    assert abs(mean - want) < 3 * se + 0.005
    assert group_limited_reach(*DSV3, units) == mean


def test_reach_between_the_uniform_draw_and_no_limit():
    # Uniform groups and experts within them (the earlier model) reach fewer ranks, routing among
    # all 256 experts more: 3.63 < 3.96 < 5.29 at EP 8.
    from math import comb

    got = group_limited_reach(*DSV3, 8)
    assert 4 * (1 - comb(96, 8) / comb(128, 8)) < got < 8 * (1 - comb(224, 8) / comb(256, 8))
    assert group_limited_reach(*DSV3, 1) == 1.0 and group_limited_reach(*DSV3, 256) == 8.0


def test_units_not_dividing_the_experts_take_floor_boundaries():
    # 10 experts over 4 units: boundaries 0, 2, 5, 7, 10.
    got = units_reached_by_token(np.array([[0, 1], [1, 2], [4, 5], [6, 9]]), 10, 4)
    assert got.tolist() == [1, 2, 2, 2]
