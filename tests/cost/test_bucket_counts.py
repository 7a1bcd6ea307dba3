"""cost.bucket_counts: a stage's buckets summarised per candidate, on the small model of
tests/cost/test_buckets.py (its tensors derived by hand there: a layer LAYER = 67.11M, the
vocabulary's tables TABLE = 65.54M each, QKV + PROJ = 16.78M of a layer's)."""

import numpy as np
import pytest

from sp_planner.cost.bucket_counts import bucket_counts
from sp_planner.cost.buckets import stage_layouts
from tests.cost.test_buckets import LAYER, PROJ, QKV, TABLE
from tests.cost.test_dp_overlap import H, MODEL


def test_counts_per_candidate():
    dense, expert = bucket_counts(MODEL, tp=np.array([1, 1, 1]), ep=1, etp=1, layers=np.array([4, 4, 4]),
                                  pp=np.array([1, 1, 1]), dp=np.array([8, 64, 8]), zero=np.array([1, 1, 3]))
    assert dense.num_calls.tolist() == [6, 6, 5]
    assert dense.num_unhideable.tolist() == [2, 2, 2]
    assert dense.unhideable_params == pytest.approx([LAYER + QKV + PROJ + TABLE, LAYER + TABLE, LAYER + 2 * TABLE + H])
    assert expert.num_calls.tolist() == [0, 0, 0]


def test_counts_remembered_per_model_are_the_ones_priced_afresh():
    # bucket_counts keeps each model's distinct layouts (_known_summaries): asked again, and after
    # they are forgotten, it gives the same counts.
    from sp_planner.cost import bucket_counts as counts_module

    args = dict(tp=np.array([1, 1, 1]), ep=1, etp=1, layers=np.array([4, 4, 4]), pp=np.array([1, 1, 1]),
                dp=np.array([8, 64, 8]), zero=np.array([1, 1, 3]))
    first = bucket_counts(MODEL, **args)
    assert counts_module._known_summaries(MODEL)
    again = bucket_counts(MODEL, **args)
    counts_module._known_summaries(MODEL).clear()
    afresh = bucket_counts(MODEL, **args)
    for a, b, c in zip(first, again, afresh):
        for x, y, z in zip(a, b, c):
            assert x.tolist() == y.tolist() == z.tolist()


def test_stage_per_candidate():
    # pp 2, dp 8, ZeRO-1, 2 layers a stage: the first stage's buckets, the last's and a middle's
    # in one call, each row its own stage, as three calls with one stage each give them. The last
    # stage's one bucket holds its layers, the output layer and the final norm; the middle's its
    # layers; the first stage's buckets hold its layers and, issued last, the embedding.
    shape = dict(tp=np.array([1, 1, 1]), ep=1, etp=1, layers=np.array([2, 2, 2]), pp=np.array([2, 2, 2]),
                 dp=np.array([8, 8, 8]), zero=np.array([1, 1, 1]))
    dense, _ = bucket_counts(MODEL, **shape, first_stage=np.array([True, False, False]),
                             last_stage=np.array([False, False, True]))
    alone = [bucket_counts(MODEL, **shape, first_stage=first, last_stage=last)[0]
             for first, last in ((True, False), (False, False), (False, True))]
    for field in dense._fields:
        assert getattr(dense, field).tolist() == [getattr(one, field)[i] for i, one in enumerate(alone)], field
    assert dense.num_calls.tolist()[1:] == [1, 1]
    assert dense.unhideable_params.tolist()[1:] == pytest.approx([2 * LAYER, 2 * LAYER + TABLE + H])


def test_zero2_later_chunks_first_layers_keep_the_rest_their_own_walk_leaves():
    # The first stage at vpp 2: chunk 0's layer 0 closes QKV + PROJ + FC2 + FC1 and leaves its
    # QKV + PROJ to the embedding's bucket (the tail); chunk 1, bucketed on its own, closes that
    # rest at its own first layer (layer 2): 2 calls of LAYER + QKV + PROJ, not chunk 0's 1 of LAYER.
    one = np.ones(3, dtype=int)
    dense, _ = bucket_counts(MODEL, tp=one, ep=one, etp=one, layers=4 * one, pp=2 * one, dp=8 * one,
                             zero=np.array([2, 1, 2]), vpp=np.array([2, 2, 1]), first_stage=True)
    assert sum(stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=False, dp=8, zero=2,
                             vpp=2)[0].layers[0]) == LAYER
    assert dense.later_first_params.tolist() == [LAYER + QKV + PROJ, 0, 0]
    assert dense.num_later_first.tolist() == [2, 0, 0]
    # At vpp 2 chunk 1 is the last chunk; ZeRO-1 (one bucket a later chunk) and vpp 1 count none.
    assert dense.end_first_params.tolist() == dense.later_first_params.tolist()
    # Chunk 0's and the last chunk's layers stay a share of the stage's on a model of alike layers.
    assert dense.num_chunk0.tolist() == [0, 0, 0] and dense.end_params.tolist() == [0, 0, 0]


def test_zero2_chunks_of_mixed_kinds_count_their_own_layers_buckets():
    # DeepSeek-V3 (dense layers 0-2, MoE after) over pp 8 x vpp 3 at 7 / 6, tp 2, ep 8, dp 32
    # (40M buckets): the first stage's chunk 0 holds layer 0, its last chunk layers 34-36;
    # stage 1's chunk 0 layers 1-3 (two dense, one MoE), stage 2's layers 4-6 (pipeline_chunks).
    # Each chunk's buckets are its own layers' (cost.buckets._bucketed_chunks): a dense layer's dense tensors
    # 291.7M in 3 buckets, a MoE layer's 117.4M (attention, router, shared expert) in 2 and its
    # experts 1.41G in 2 (each layer's tensors past 40M close their own buckets).
    from sp_planner.catalog import load_model
    from sp_planner.cost.rank_tensors import stage_tensors

    dsv3 = load_model("DeepSeek-V3")
    (dense_layer, moe_layer), (_, experts) = (tuple(sum(t) for t in part)
                                              for part in stage_tensors(dsv3, 2, 8, 1, 2, (False, True)))
    shape = dict(tp=np.full(3, 2), ep=8, etp=1, layers=np.array([7, 8, 8]), pp=8, dp=32, zero=2, vpp=3,
                 first_stage=np.array([True, False, False]), last_stage=False, first_stage_layers=7,
                 last_stage_layers=6)
    (dense, expert), (light, light_expert) = (bucket_counts(dsv3, **shape, lightest=x) for x in (False, True))
    # Row 0 the first stage; rows 1-2 a middle one: the most MoE layers' (stage 2), or the fewest's (stage 1).
    assert dense.num_chunk0.tolist() == [3, 6, 6] and light.num_chunk0.tolist() == [3, 8, 8]
    assert dense.chunk0_params.tolist() == [dense_layer, 3 * moe_layer, 3 * moe_layer]
    assert light.chunk0_params[1] == 2 * dense_layer + moe_layer
    assert expert.chunk0_params.tolist() == [0, 3 * experts, 3 * experts] and light_expert.chunk0_params[1] == experts
    # The first stage's last chunk holds 3 MoE layers, a middle stage's 2 (3 / 3 / 2), the first of
    # them issued last in backward: the one that cannot hide.
    assert dense.end_params.tolist() == [3 * moe_layer, 2 * moe_layer, 2 * moe_layer]
    assert expert.end_params.tolist() == [3 * experts, 2 * experts, 2 * experts]
    assert dense.end_first_params.tolist() == [moe_layer] * 3 and expert.num_end_first.tolist() == [2, 2, 2]
    # Only the chunks' fields are the relayed stage's own: its stage's calls stay the heaviest's
    # (its unhideable buckets a MoE layer's; cost.pipeline_dp._relay_blocks).
    for field in ("num_calls", "num_unhideable", "unhideable_params", "end_params", "end_first_params"):
        assert getattr(light, field).tolist() == getattr(dense, field).tolist(), field
    assert light.unhideable_params[1] == moe_layer
    # Not ZeRO-2, or one chunk: none counted (the chunks' share of the stage's calls stands).
    for other in (dict(zero=1), dict(vpp=1)):
        assert bucket_counts(dsv3, **{**shape, **other})[0].num_chunk0.tolist() == [0, 0, 0]
