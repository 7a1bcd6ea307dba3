"""cost.dp_times: pricing each distinct shape once gives, on every candidate, exactly what pricing
every candidate row by row gives."""

import numpy as np

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_calls import STAGES, priced_rows
from sp_planner.cost.dp_times import _stage_times, dp_stage_times
from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.states import MEGATRON_STATES
from sp_planner.space import Axes, Pins, degree_tuples, expand_candidates, search_order
from sp_planner.specs.workload import Workload


def _candidates(model, world):
    axes = Axes(num_layers=model.num_layers, num_experts=model.moe.num_experts if model.moe else 0)
    degrees = search_order(degree_tuples(world, Pins()))
    return expand_candidates(Workload(seq_len=32768, global_batch=256), degrees, Pins(), 8, axes=axes)


def test_shapes_priced_once_equal_every_row_priced():
    h100 = load_hardware("h100-sxm")
    for name, world in (("llama3-70b", 64), ("Qwen3-30B-A3B", 32)):
        model = load_model(name)
        c = _candidates(model, world)
        stages = candidate_stage_layers(model, c)
        which = ("first", "middle", "last")
        shared = dp_stage_times(model, h100, c, stages=stages, gpus_per_node=8, seq_len=4096, which=which)
        rows = _stage_times(model, h100, c, stages=stages, gpus_per_node=8, seq_len=4096, states=MEGATRON_STATES,
                            which=which)
        assert len(c) > 1000  # many candidates, far fewer shapes: the dedupe does something
        for stage, one, every in zip(which, shared, rows):
            for field, a, b in zip(one._fields, one, every):
                np.testing.assert_array_equal(np.broadcast_to(a, (len(c),)), np.broadcast_to(b, (len(c),)),
                                              err_msg=f"{stage} {field}")


def test_stages_priced_in_one_batch_equal_each_stage_priced_alone():
    # _stage_times prices the first stage on every row and the middle and last on a pipeline's
    # rows in one batch; each stage priced on its own rows gives the same seconds, and the other
    # rows' later stages are 0.
    h100 = load_hardware("h100-sxm")
    for name, world in (("llama3-70b", 64), ("Qwen3-30B-A3B", 32)):
        model = load_model(name)
        c = _candidates(model, world)
        stages = candidate_stage_layers(model, c)
        batched = _stage_times(model, h100, c, stages=stages, gpus_per_node=8, seq_len=4096, states=MEGATRON_STATES,
                               which=STAGES)
        rows = np.flatnonzero(c.pp > 1)
        assert 0 < len(rows) < len(c) and set(c.zero[rows]) == {0, 1, 2, 3}
        for code, stage in enumerate(STAGES):
            at = np.arange(len(c)) if stage == "first" else rows
            alone = priced_rows(model, h100, c.take(at), stages=type(stages)(*(np.asarray(v)[at] for v in stages)),
                                stage=np.full(len(at), code), gpus_per_node=8, seq_len=4096,
                                states=MEGATRON_STATES)
            for field, one, every in zip(DPTimes._fields, alone, batched[code]):
                np.testing.assert_array_equal(np.broadcast_to(one, (len(at),)), every[at], err_msg=f"{stage} {field}")
                if stage != "first":
                    assert not np.any(np.delete(every, rows)), f"{stage} {field}"
        assert np.any(batched[1].layer_gather_s[rows] > 0) and np.any(batched[2].root_reduce_s[rows] > 0)
        # ZeRO-0/1's later stages without virtual stages: one call (cost.buckets._chunked), unhideable
        # (on whole layers: the candidates hold splits the search later drops).
        whole = (c.zero <= 1) & (c.vpp == 1) & (np.asarray(stages.last) % 1 == 0)
        zero01 = rows[whole[rows]]
        assert np.any(batched[2].grad_all_reduce_s[zero01] > 0)
        np.testing.assert_allclose(batched[2].last_all_reduce_s[zero01], batched[2].grad_all_reduce_s[zero01],
                                   rtol=1e-12)


def test_the_output_layers_calls_are_a_single_stages_root_less_its_embedding():
    # DPTimes.head_gather_s, the calls a forward gathers after the last layer's (cost.dp_once.
    # after_last_gather_s): a pipeline's last stage's root (output layer, final norm) whole, its
    # first stage none; a single stage's root less the embedding table: Llama-3-8B's the same
    # output layer and norm as the last stage of pp 2 at the same dp (one in-node group of 8),
    # to the bit; Gemma-2-9B's tied table leaves the final norm alone, a call's latency.
    from sp_planner.plan import ParallelPlan
    from sp_planner.candidates import Candidates

    h100 = load_hardware("h100-sxm")

    def times(name, **plan):
        c = Candidates.of_plan(ParallelPlan(dp=8, zero=2, **plan))
        model = load_model(name)
        return dp_stage_times(model, h100, c, stages=candidate_stage_layers(model, c), gpus_per_node=8,
                              seq_len=4096, which=STAGES)

    single, (first, _, last) = times("Llama-3-8B")[0], times("Llama-3-8B", pp=2)
    assert float(single.head_gather_s[0]) == float(last.root_gather_s[0]) == float(last.head_gather_s[0]) > 0
    assert float(first.head_gather_s[0]) == 0.0 < float(first.root_gather_s[0])
    tied = times("Gemma-2-9B")[0]
    assert 0 < float(tied.head_gather_s[0]) < float(tied.root_gather_s[0]) / 100
    # DPTimes.tail_gather_s: the embedding's bucket(s), among the first calls; none on the last stage.
    for holder in (single, first):
        assert 0 < float(holder.tail_gather_s[0]) <= float(holder.first_all_gather_s[0])
    assert float(last.tail_gather_s[0]) == 0.0
