"""cost.buckets: Megatron's gradient buckets of a stage, derived by hand for a small model.

The model of tests/cost/test_dp_overlap.py: H 2048, FFN 8192 (SwiGLU), 4 layers, vocabulary
32000, untied. A layer's tensors on one rank at tp 1, in backprop order: fc2 = FFN*H = 16.78M,
fc1 = 2*FFN*H + H (fused norm) = 33.56M, qkv = 3*H*H + H = 12.59M, proj = H*H = 4.19M; a layer
67.11M. On a single stage the output layer (32000*H = 65.54M) and the final norm (H) come first,
the embedding (65.54M) last. A bucket closes once it holds bucket_size parameters.
"""

import numpy as np
import pytest

from sp_planner.cost.buckets import bucket_counts, ddp_bucket_params, megatron_layout, stage_layouts
from tests.cost.test_dp_overlap import FFN, H, MODEL, VOCAB

FC2, FC1, QKV, PROJ = FFN * H, 2 * FFN * H + H, 3 * H * H + H, H * H
LAYER, TABLE = FC2 + FC1 + QKV + PROJ, VOCAB * H


def test_bucket_size_is_megatron_default_for_the_dp_size():
    assert ddp_bucket_params(np.array([8, 40, 64])).tolist() == [40_000_000, 40_000_000, 64_000_000]
    assert [ddp_bucket_params(dp) for dp in (8, 40, 64)] == [40_000_000, 40_000_000, 64_000_000]


def test_the_last_bucket_closes_where_the_last_tensor_walked_is_issued():
    # Layer 0 and the tail hold no tensor: the 5 + 7 left over close at layer 1's backward (its
    # tensors walked last); a bucket of exactly its size closes at once.
    assert megatron_layout(((), (5.0, 7.0)), (), (), 100.0).layers == ((), (12.0,))
    # The head's 3 closes with layer 1's 5 (exactly 8), its 7 with layer 0's 1.
    assert megatron_layout(((1.0,), (5.0, 7.0)), (3.0,), (), 8.0) == ((), ((8.0,), (8.0,)), ())
    assert megatron_layout(((), ()), (), (), 8.0) == ((), ((), ()), ())


def test_buckets_of_40m_close_at_fc1_and_carry_qkv_and_proj():
    dense, expert = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=True, dp=8, zero=1)
    # The output layer (65.5M >= 40M) is a bucket; the final norm carries into layer 3, whose fc2 +
    # fc1 close the next. Then qkv + proj carry into the layer below and close with its fc2 + fc1
    # (one layer's worth each); layer 0's qkv + proj go with the embedding.
    assert dense.head == (TABLE,)
    assert dense.layers[3] == (H + FC2 + FC1,)
    assert dense.layers[2] == dense.layers[1] == dense.layers[0] == (QKV + PROJ + FC2 + FC1,)
    assert dense.tail == (QKV + PROJ + TABLE,)
    assert dense.num_calls == 6 and expert.num_calls == 0
    # The buckets that cannot hide: issued at layer 0 and after the embedding.
    assert sum(dense.unhideable) == LAYER + QKV + PROJ + TABLE


def test_buckets_of_64m_hold_one_layer_each_and_the_embedding_alone():
    dense, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=True, dp=64, zero=1)
    # 64M: a layer's first three tensors make 62.9M, its proj closes the bucket.
    assert dense.layers == ((LAYER,), (LAYER,), (LAYER,), (H + LAYER,))
    assert dense.head == (TABLE,) and dense.tail == (TABLE,)
    assert sum(dense.unhideable) == LAYER + TABLE


def test_later_pipeline_stages_keep_one_bucket_and_zero3_gathers_layer_by_layer():
    # A middle stage holds no embedding: its one bucket closes at its first layer.
    later, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=2, single_stage=False, dp=8, zero=1,
                             first_stage=False)
    assert later.num_calls == 1 and later.layers == ((2 * LAYER,), ()) and later.tail == ()
    # The last stage walks its output layer and final norm first, into the same bucket.
    last, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=2, single_stage=False, dp=8, zero=1,
                            first_stage=False, last_stage=True)
    assert last.num_calls == 1 and last.layers == ((2 * LAYER + TABLE + H,), ()) and last.tail == ()
    units, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=True, dp=8, zero=3)
    assert units.layers == ((LAYER,),) * 4 and units.tail == (2 * TABLE + H,)


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
    from sp_planner.cost import buckets

    args = dict(tp=np.array([1, 1, 1]), ep=1, etp=1, layers=np.array([4, 4, 4]), pp=np.array([1, 1, 1]),
                dp=np.array([8, 64, 8]), zero=np.array([1, 1, 3]))
    first = bucket_counts(MODEL, **args)
    assert buckets._known_summaries(MODEL)
    again = bucket_counts(MODEL, **args)
    buckets._known_summaries(MODEL).clear()
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


def test_interleaved_chunks_after_the_first_are_one_bucket_each():
    # pp 2, vpp 2, first stage: chunk 0 (layers 0-1 and the embedding) is bucketed as above; chunk
    # 1 (layers 2-3) is one bucket, issued after its backward, i.e. after layer 2's (Megatron's
    # get_model disables bucketing for chunk_idx > 0).
    dense, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=False, dp=8, zero=1, vpp=2)
    assert dense.layers == ((QKV + PROJ + FC2 + FC1,), (FC2 + FC1,), (2 * LAYER,), ())
    assert dense.tail == (QKV + PROJ + TABLE,)
    # A middle stage: one bucket a chunk, chunk 0's at its first layer (no embedding there).
    later, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=False, dp=8, zero=1, vpp=2,
                             first_stage=False)
    assert later.layers == ((2 * LAYER,), (), (2 * LAYER,), ()) and later.tail == ()
    # The last stage: its last chunk also holds the output layer and the final norm.
    last, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=False, dp=8, zero=1, vpp=2,
                            first_stage=False, last_stage=True)
    assert last.layers == ((2 * LAYER,), (), (2 * LAYER + TABLE + H,), ()) and last.tail == ()


def test_a_counted_split_s_chunks_hold_each_its_own_layers():
    # 3 layers over vpp 2 (Megatron's counted split: the embedding or the loss in a layer's place,
    # pipeline_chunks.chunk_layer_counts): the first stage's chunk 0 holds layer 0, bucketed with the
    # embedding as above (fc2 + fc1 closes at 50.3M, qkv + proj then the table at 82.3M), and chunk 1
    # layers 1-2 in one bucket at layer 1; the last stage's chunk 0 layers 0-1, its last chunk layer
    # 2 with the output layer and the final norm. Every layer is in a bucket (it lost one, 3 // 2).
    first, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=3, single_stage=False, dp=8, zero=0, vpp=2)
    assert first.layers == ((FC2 + FC1,), (2 * LAYER,), ()) and first.tail == (QKV + PROJ + TABLE,)
    last, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=3, single_stage=False, dp=8, zero=1, vpp=2,
                            first_stage=False, last_stage=True)
    assert last.layers == ((2 * LAYER,), (), (LAYER + TABLE + H,)) and last.tail == ()
    # One layer over vpp 2 (a virtual stage of 1 less the embedding or the loss): the first stage's
    # chunk 0 holds only the embedding, the last stage's last chunk only the output layer and the
    # final norm, its own call after their backward.
    first, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=1, single_stage=False, dp=8, zero=0, vpp=2)
    assert first == ((), ((LAYER,),), (TABLE,))
    last, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=1, single_stage=False, dp=8, zero=0, vpp=2,
                            first_stage=False, last_stage=True)
    assert last == ((TABLE + H,), ((LAYER,),), ())


def test_zero2_buckets_never_span_two_model_chunks():
    # Megatron's get_model wraps each model chunk in its own DDP / Megatron-FSDP module, so each
    # chunk is bucketed on its own (40M): a middle stage of 4 layers at vpp 2 is two 2-layer
    # stages, each chunk's top layer's fc2 + fc1 its first bucket, its bottom layer's qkv + proj
    # the rest closed after its last tensor (not carried into the chunk below, another module).
    dense, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=False, dp=8, zero=2, first_stage=False,
                             vpp=2)
    chunk = (QKV + PROJ + FC2 + FC1, QKV + PROJ)  # each chunk's first layer: the buckets it closes
    assert dense.layers == (chunk, (FC2 + FC1,), chunk, (FC2 + FC1,))
    assert dense.num_calls == 6 and sum(dense.unhideable) == LAYER + QKV + PROJ
    # At vpp 1 the stage's buckets as before: one fewer call.
    whole, _ = stage_layouts(MODEL, tp=1, ep=1, etp=1, layers=4, single_stage=False, dp=8, zero=2,
                             first_stage=False)
    assert whole.num_calls == 5


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
    # Each chunk's buckets are its own layers' (_bucketed_chunks): a dense layer's dense tensors
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
