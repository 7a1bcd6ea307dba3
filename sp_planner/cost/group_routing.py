"""Where group-limited routing sends a token: the EP ranks (or DeepEP's nodes) a token's top_k
experts lie on, as Megatron's router picks them on the random logits of a force-balanced run.

Group-limited routing (MoESpec.router_groups G, router_group_topk M; DeepSeek-V3 8 and 4, arXiv
2412.19437 s2.1.2) keeps a token's top_k experts within M of G contiguous expert groups. Megatron
applies it whenever a run states it, benchmark runs with force-balanced routing too: TopKRouter.forward
replaces the logits by i.i.d. standard normal ones under moe_router_force_load_balancing
(Megatron-LM d98e8a64dd megatron/core/transformer/moe/router.py lines 861-863 -> moe_utils.py
RandomSTE, lines 1258-1280: logits.clone().normal_(), the router's dtype, fp32 in the DeepSeek-V3
recipes) and routes them through topk_routing_with_score_function (router.py lines 779-790;
moe_utils.py lines 766-957) -> group_limited_topk (moe_utils.py lines 673-728):
  - scores: softmax routes on the logits themselves unless pre-softmax (then on the fp32 softmax
    over every expert), sigmoid on fp32 sigmoid(logits) (moe_utils.py lines 900-929);
  - group score: the sum of a group's top top_k // M scores; the top M groups are chosen;
  - the token's experts: the top_k scores among the chosen groups' experts (the others masked -inf).
No closed form is derived: a chosen group won its place with its best scores and so tends to hold
some of the k, which a uniform draw of the groups and of the k within them misses (DeepSeek-V3 at EP
8: 3.63 ranks uniform, 3.96 by Megatron's algorithm). This module runs the algorithm itself on a
fixed sample: SAMPLE_TOKENS tokens of i.i.d. standard normal fp32 logits from numpy's
Generator(PCG64(SAMPLE_SEED)).standard_normal, one sample per (E, k, G, M, score function,
pre-softmax), cached, and every rank or node count is read from the same sample. One shortcut keeps
it cheap without changing a choice: the score functions are monotone, so sigmoid (fp32, as Megatron)
is taken of each group's top top_k // M logits only, for the group scores, and the logits order the
chosen groups' experts as their scores do (fp32 ties of the scores aside, where torch.topk's order
decides; tests/cost/test_group_routing.py routes the same logits through megatron-core's
topk_routing_with_score_function on CPU torch and gets the same experts for every token it checks).
Ranks (or nodes) hold contiguous blocks of E/units experts (Megatron's placement: EP rank r holds
experts r E/ep to (r+1) E/ep - 1); a unit count not dividing E takes the floor boundaries u E //
units. The estimate is the mean over the sample of the distinct units a token's experts lie on, its
own included.

DeepSeek-V3 (E 256, k 8, G 8, M 4, sigmoid), 16384 tokens: EP 8 3.963 ranks (standard error 0.038%
of the mean), EP 32 6.843 (0.096%), EP 64 7.486 (0.068%); DeepEP nodes of 8 ranks at EP 16 / 32:
1.967 (0.071%) / 3.115 (0.138%), every figure's standard error under 0.2%
(tests/cost/test_group_routing.py; a 200k-token run of group_limited_topk on other logits gave 3.97,
6.85, 7.49, 1.97 / 3.13). The uniform draw gave 3.63, 6.60, 7.36 and 1.93 / 2.93; routing among all
experts 5.29, 7.27, 7.68 and 1.99 / 3.61. The figures hang on numpy's PCG64 stream and its
standard_normal (ziggurat) algorithm: a numpy release that changed either would move them within
their standard error. Left out: DeepSeek-V3's expert bias (score_correction_bias), which Megatron
adds to the scores for the choice only; it starts at zero and a force-balanced run's near-even loads
keep its sign-step updates small (moe_router_bias_update_rate, default 1e-3, transformer_config.py
line 821). Megatron's fused router (moe_router_fusion, TE fused_topk_with_score_function) is taken
to choose as the unfused one (not checked here).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Tokens in the routing sample: every DeepSeek-V3 figure's standard error under 0.2% of its mean
# (module docstring); the sample costs ~0.05 s once a process.
SAMPLE_TOKENS = 16384
SAMPLE_SEED = 60


@lru_cache(maxsize=16)
def routed_experts(num_experts: int, top_k: int, groups: int, open_groups: int, score_function: str,
                   pre_softmax: bool) -> np.ndarray:
    """The sample's tokens' top_k experts, (SAMPLE_TOKENS, top_k), each row ascending, as
    Megatron's group_limited_topk chooses them from i.i.d. standard normal logits (module
    docstring)."""
    logits = np.random.Generator(np.random.PCG64(SAMPLE_SEED)).standard_normal(
        (SAMPLE_TOKENS, num_experts), dtype=np.float32)
    if score_function == "softmax" and pre_softmax:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        logits = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    per_group = num_experts // groups
    grouped = logits.reshape(SAMPLE_TOKENS, groups, per_group)
    ranked = top_k // open_groups  # moe_utils.group_limited_topk: a group's topk(topk // group_topk).sum()
    best = np.partition(grouped, per_group - ranked, axis=-1)[..., per_group - ranked:]
    if score_function == "sigmoid":
        best = (1.0 / (1.0 + np.exp(-best))).astype(np.float32)
    chosen = np.sort(np.argpartition(-best.sum(axis=-1), open_groups - 1, axis=-1)[:, :open_groups], axis=1)
    # The top_k among the chosen groups' experts (the others masked -inf); the score function is
    # monotone, so the logits order them as the scores do.
    candidates = np.take_along_axis(grouped, chosen[:, :, None], axis=1).reshape(SAMPLE_TOKENS, -1)
    picks = np.argpartition(candidates, candidates.shape[1] - top_k, axis=1)[:, candidates.shape[1] - top_k:]
    return np.sort(np.take_along_axis(chosen, picks // per_group, axis=1) * per_group + picks % per_group, axis=1)


def units_reached_by_token(experts: np.ndarray, num_experts: int, units: int) -> np.ndarray:
    """Distinct units (contiguous blocks of experts, floor boundaries u E // units) each token's
    experts lie on. Expert e lies on unit ceil((e + 1) units / E) - 1, nondecreasing in e, so rows
    sorted by expert (routed_experts') need no sort of their own."""
    unit = ((np.sort(experts, axis=1) + 1) * units + num_experts - 1) // num_experts - 1
    return 1 + np.count_nonzero(np.diff(unit, axis=1), axis=1)


@lru_cache(maxsize=256)  # the search asks for the same unit counts on every chunk
def group_limited_reach(num_experts: int, top_k: int, groups: int, open_groups: int, score_function: str,
                        pre_softmax: bool, units: int) -> float:
    """Mean units (EP ranks, or DeepEP's nodes) a token reaches, its own included, over the
    routing sample (module docstring)."""
    experts = routed_experts(num_experts, top_k, groups, open_groups, score_function, pre_softmax)
    return float(units_reached_by_token(experts, num_experts, units).mean())
