"""cost.buckets: Megatron's gradient buckets of a stage, derived by hand for a small model.

The model of tests/cost/test_dp_overlap.py: H 2048, FFN 8192 (SwiGLU), 4 layers, vocabulary
32000, untied. A layer's tensors on one rank at tp 1, in backprop order: fc2 = FFN*H = 16.78M,
fc1 = 2*FFN*H + H (fused norm) = 33.56M, qkv = 3*H*H + H = 12.59M, proj = H*H = 4.19M; a layer
67.11M. On a single stage the output layer (32000*H = 65.54M) and the final norm (H) come first,
the embedding (65.54M) last. A bucket closes once it holds bucket_size parameters.
"""

import numpy as np

from sp_planner.cost.buckets import ddp_bucket_params, megatron_layout, stage_layouts
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
