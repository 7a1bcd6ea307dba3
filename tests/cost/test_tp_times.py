"""cost.tp_times: a layer's TP collectives and the pipeline ends', by hand."""

import pytest

from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.cost.tp_times import layer_tp_times
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates

TOKENS = 4096
CALL_S = TOKENS * 64 * 2 / 2 / 100e9  # one call: 4096 x 64 x 2 B / 2 at 100 GB/s


def _tp(model, hardware, plan):
    return layer_tp_times(model, hardware, Candidates.of_plan(plan), tokens=TOKENS, gpus_per_node=2,
                          overlap=MEGATRON_OVERLAP, sequence_parallel=True, tp_gathers=TE_TP_GATHERS, gemm_only_s=0.0)


def test_tp_collectives_of_a_layer_and_of_the_pipeline_ends_by_hand(toy_model, hardware):
    # tp 2 inside a node, no latency: each all-gather / reduce-scatter sends 4096 x 64 x 2 B / 2 at
    # 100 GB/s. A layer: 2 AG + 2 RS forward, 4 AG + 2 RS backward (Megatron-Core sequence
    # parallelism). The output layer: 1 AG forward, 1 AG + 1 RS backward; the embedding 1 RS + 1 AG.
    t = _tp(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1))
    assert float(t.all_gather_s[0]) == pytest.approx(CALL_S)
    assert float(t.reduce_scatter_s[0]) == pytest.approx(CALL_S)
    assert (float(t.fwd_s[0]), float(t.bwd_s[0])) == pytest.approx((4 * CALL_S, 6 * CALL_S))
    assert (float(t.out_fwd_s[0]), float(t.out_bwd_s[0])) == pytest.approx((CALL_S, 2 * CALL_S))
    assert (float(t.emb_fwd_s[0]), float(t.emb_bwd_s[0])) == pytest.approx((CALL_S, CALL_S))


def test_a_learned_position_table_adds_an_all_gather_to_the_embeddings_forward(toy_model, hardware):
    # With learned_absolute positions Megatron-Core all-reduces the embedding output over TP and then
    # splits it to the sequence shard (language_model_embedding.py at d98e8a64dd lines 51-56,
    # 147-150): forward 1 RS + 1 AG worth, backward the split's 1 AG; same call size as above.
    learned = toy_model.model_copy(update={"position_embedding": "learned_absolute"})
    t = _tp(learned, hardware, ParallelPlan(tp=2, pp=2, micro_batch=1))
    assert (float(t.emb_fwd_s[0]), float(t.emb_bwd_s[0])) == pytest.approx((2 * CALL_S, CALL_S))
