"""Megatron's EP all-to-all overlap (cost.ep_overlap): the combined 1F1B layer step on two
streams, by hand, and what a corpus row stating it changes."""

import pytest

from sp_planner.cost.ep_overlap import ep_overlap_saving_s, pair_s, paired_micro_batches
from sp_planner.validation.corpus import load_corpus, default_corpus_path
from sp_planner.validation.row_run import predict_row, row_runtime


def test_pair_by_hand_compute_bound():
    # Short all-to-alls (c = 1) beside long compute: attn_fwd 4, mlp_bwd 3, wgrad 2, mlp_fwd 3,
    # attn_bwd 5. combine_bwd [0,1] | attn_fwd [0,4]; mlp_bwd [4,7]; dispatch_fwd [4,5];
    # wgrad [7,9]; dispatch_bwd [7,8]; mlp_fwd [9,12]; combine_fwd [12,13]; attn_bwd [12,17].
    got = pair_s(attn_fwd_s=4, mlp_fwd_s=3, mlp_dgrad_s=3, mlp_wgrad_s=2, attn_bwd_s=5, all_to_all_s=1)
    assert got == pytest.approx(17.0)  # the compute stream alone: every all-to-all hidden
    saving = ep_overlap_saving_s(attn_fwd_s=4, mlp_fwd_s=3, mlp_dgrad_s=3, mlp_wgrad_s=2, attn_bwd_s=5,
                                 all_to_all_s=1, slowdown=0.25)
    assert saving == pytest.approx((17 + 4 - 17) * 0.75)


def test_pair_by_hand_comm_bound():
    # Long all-to-alls (c = 5), compute 1 each: combine_bwd [0,5] | attn_fwd [0,1]; mlp_bwd [5,6];
    # dispatch_fwd [5,10]; wgrad [6,7]; dispatch_bwd [10,15]; mlp_fwd [10,11]; combine_fwd [15,20];
    # attn_bwd [15,16]: the comm stream's 20, all compute hidden.
    got = pair_s(attn_fwd_s=1, mlp_fwd_s=1, mlp_dgrad_s=1, mlp_wgrad_s=1, attn_bwd_s=1, all_to_all_s=5)
    assert got == pytest.approx(20.0)
    assert ep_overlap_saving_s(attn_fwd_s=1, mlp_fwd_s=1, mlp_dgrad_s=1, mlp_wgrad_s=1, attn_bwd_s=1,
                               all_to_all_s=5, slowdown=0.0) == pytest.approx(5.0)


def test_paired_micro_batches_by_schedule():
    # No pipelining: the first forward and the last backward run alone.
    assert paired_micro_batches(8, 1, 1) == pytest.approx(7)
    # Interleaved, pp 4 x vpp 3, 16 micro-batches: the last stage's warmup (3-1) x 4 + 1 = 9 of
    # 48 chunk-steps run alone: 39 / 3 = 13 micro-batches' worth of layers paired.
    assert paired_micro_batches(16, 4, 3) == pytest.approx(13)
    assert paired_micro_batches(2, 8, 2) == pytest.approx(0)  # all warmup: nothing pairs


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(default_corpus_path())


def test_a_row_stating_the_overlap_hides_part_of_its_all_to_alls(corpus):
    (row,) = [r for r in corpus.rows if r.id == "mlmr-q235-b300-mx"]
    assert row.ep_comm_overlap and row_runtime(row).overlap.ep_comm
    shown = predict_row(row, corpus)
    hidden = predict_row(row.model_copy(update={"ep_comm_overlap": False}), corpus)
    assert shown.time.moe_comm_s < hidden.time.moe_comm_s
    assert shown.time.gemm_s == hidden.time.gemm_s and shown.time.attention_s == hidden.time.attention_s
    with pytest.raises(ValueError, match="overlap-moe-expert-parallel-comm"):
        row_runtime(row.model_copy(update={"ep": 1}))
    with pytest.raises(ValueError, match="interleaving where pp > 1"):
        row_runtime(row.model_copy(update={"pp": 2, "vpp": 1}))


def test_the_unhidden_share_of_a_call_runs_outside_the_pair():
    # c = 5 with 0.2 of it unhidden: the comm stream carries 4 x 4 = 16 (compute 1 each hides
    # inside it), plus 4 x 1 exposed: 20 for a sequential 5 + 20 = 25, saving 5 as with nothing
    # unhidden; with compute that fills the comm stream the unhidden part shows.
    kw = dict(mlp_fwd_s=1, mlp_dgrad_s=1, mlp_wgrad_s=1, attn_bwd_s=1, all_to_all_s=5, slowdown=0.0)
    assert ep_overlap_saving_s(attn_fwd_s=1, unhidden_share=0.2, **kw) == pytest.approx(5.0)
    # Compute-bound (c = 1, compute 17 as in the first test): all 4 hides with nothing unhidden,
    # 4 x 0.8 = 3.2 of it with 0.2 unhidden (the pair 17, then 4 x 0.2 exposed).
    compute = dict(attn_fwd_s=4, mlp_fwd_s=3, mlp_dgrad_s=3, mlp_wgrad_s=2, attn_bwd_s=5, all_to_all_s=1)
    assert ep_overlap_saving_s(**compute, slowdown=0.0, unhidden_share=0.2) == pytest.approx(3.2)
