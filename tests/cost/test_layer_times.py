"""cost.layer_times: a layer's TP collectives and the pipeline ends' against a hand count, and
recompute re-running the forward it drops."""

import pytest

from sp_planner.cost.layer_times import layer_times
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.ring_impl import TE_RING
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.plan import ParallelPlan
from sp_planner.space import Candidates
from sp_planner.specs import Workload

WORKLOAD = Workload(seq_len=4096, global_batch=8)


def _times(model, hardware, plan):
    c = Candidates.of_plan(plan)
    return layer_times(model, hardware, WORKLOAD, c, tokens=plan.micro_batch * WORKLOAD.seq_len, cp=1,
                       gpus_per_node=2, overlap=MEGATRON_OVERLAP, ring_impl=TE_RING, loss_bytes_per_logit=4,
                       sequence_parallel=True, tp_gathers=TE_TP_GATHERS)


def test_tp_collectives_of_a_layer_and_of_the_pipeline_ends_by_hand(toy_model, hardware):
    # tp 2 inside a node, no latency: each all-gather / reduce-scatter sends 4096 x 64 x 2 B / 2 at
    # 100 GB/s. A layer: 2 AG + 2 RS forward, 4 AG + 2 RS backward (Megatron-Core sequence
    # parallelism). The output layer: 1 AG forward, 1 AG + 1 RS backward; the embedding 1 RS + 1 AG,
    # on the loss stage at pp 1, on the first stage otherwise.
    call = 4096 * 64 * 2 / 2 / 100e9
    t = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1))
    assert float(t.tp_all_gather_s[0]) == pytest.approx(call)
    assert float(t.tp_reduce_scatter_s[0]) == pytest.approx(call)
    assert (float(t.tp_fwd_s[0]), float(t.tp_bwd_s[0])) == pytest.approx((4 * call, 6 * call))
    assert float(t.tp_layer_s[0]) == pytest.approx(10 * call)
    assert (float(t.out_tp_fwd_s[0]), float(t.out_tp_bwd_s[0])) == pytest.approx((call, 2 * call))
    assert (float(t.head_tp_s[0]), float(t.first_tp_s[0])) == pytest.approx((5 * call, 0.0))
    piped = _times(toy_model, hardware, ParallelPlan(tp=2, pp=2, micro_batch=1))
    assert (float(piped.head_tp_s[0]), float(piped.first_tp_s[0])) == pytest.approx((3 * call, 2 * call))
    assert (float(piped.emb_tp_fwd_s[0]), float(piped.emb_tp_bwd_s[0])) == pytest.approx((call, call))


def test_a_learned_position_table_adds_an_all_gather_to_the_embeddings_forward(toy_model, hardware):
    # With learned_absolute positions Megatron-Core all-reduces the embedding output over TP and then
    # splits it to the sequence shard (language_model_embedding.py at d98e8a64dd lines 51-56,
    # 147-150): forward 1 RS + 1 AG worth, backward the split's 1 AG; same call size as above.
    call = 4096 * 64 * 2 / 2 / 100e9
    learned = toy_model.model_copy(update={"position_embedding": "learned_absolute"})
    piped = _times(learned, hardware, ParallelPlan(tp=2, pp=2, micro_batch=1))
    assert (float(piped.emb_tp_fwd_s[0]), float(piped.emb_tp_bwd_s[0])) == pytest.approx((2 * call, call))
    assert (float(piped.head_tp_s[0]), float(piped.first_tp_s[0])) == pytest.approx((3 * call, 3 * call))
    single = _times(learned, hardware, ParallelPlan(tp=2, micro_batch=1))
    assert (float(single.head_tp_s[0]), float(single.first_tp_s[0])) == pytest.approx((6 * call, 0.0))


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_recompute_reruns_the_forward_it_drops(toy_model, hardware, recompute):
    t = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1, recompute=recompute))
    plain = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1))
    # Full: the whole forward again (GEMMs, attention, TP collectives); selective: core attention.
    want = {"none": 0.0, "selective": float(t.attn.fwd_s[0]), "full": float(t.fwd_s[0])}[recompute]
    assert float(t.recompute_s[0]) == pytest.approx(want)
    assert want > 0 or recompute == "none"
    # The layer's parts add up to its forward and backward, recompute inside the backward.
    assert float(t.per_layer_s[0]) == pytest.approx(float(t.fwd_s[0] + t.bwd_s[0]))
    assert float(t.bwd_s[0]) == pytest.approx(float(plain.bwd_s[0]) + want)
