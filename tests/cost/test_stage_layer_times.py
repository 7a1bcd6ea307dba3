"""cost.stage_layer_times: each pipeline stage's average layer from its own layers' kinds, by hand
from the kinds' layer times, and the step paced by the stage that holds the most global layers."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.kind_table import kind_table
from sp_planner.cost.layer_kinds import distinct_kinds, kind_model
from sp_planner.cost.layer_times import candidate_layer_times
from sp_planner.cost.stage_layer_times import KindTimes, first_chunks_bwd_s, middle_drain_s, stage_layer_times
from sp_planner.cost.step import time_columns
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload
from tests.cost.test_layer_kinds import RUNTIME

SEQ = 131072
WORKLOAD = Workload(seq_len=SEQ, global_batch=32)
# Gemma 3 27B over 8 stages of 8 virtual stages, 7/8/.../8/7 layers: global layers 2, 0, 2, 0, 3,
# 0, 3, 0 by stage (tests/cost/test_layer_kinds.py), the rest local.
PIPED = ParallelPlan(tp=1, ulysses=8, pp=8, vpp=8, first_stage_layers=7, last_stage_layers=7, recompute="full")
SINGLE = ParallelPlan(tp=8, ulysses=8, dp=1, recompute="full")


def _price(model, hardware, c):
    return candidate_layer_times(model, hardware, WORKLOAD, c, **RUNTIME)


def test_each_stage_holds_its_own_global_and_local_layers():
    model, hardware = load_model("Gemma-3-27B"), load_hardware("h100-sxm")
    c = Candidates.concat([Candidates.of_plan(PIPED), Candidates.of_plan(SINGLE)])
    average = _price(model, hardware, c)
    table = kind_table(model, SEQ, c, 32, lambda m, rows: _price(m, hardware, rows))
    stage = stage_layer_times(model, SEQ, c, average, table)
    global_, local = (_price(kind_model(model, k), hardware, c).per_layer_s[0] for k in distinct_kinds(model, SEQ))
    assert global_ > 2 * local  # 128K full attention against a 1024-token window
    assert stage.first.per_layer_s[0] == pytest.approx((2 * global_ + 5 * local) / 7, rel=1e-12)
    assert stage.middle.per_layer_s[0] == pytest.approx((3 * global_ + 5 * local) / 8, rel=1e-12)  # stage 4 or 6
    assert stage.last.per_layer_s[0] == pytest.approx(local, rel=1e-12)
    # The work beside the layers stays the model's; a single stage keeps the average layer bit for bit.
    assert stage.last.logits_s[0] == average.logits_s[0]
    for lt in stage.by_stage:
        assert lt.per_layer_s[1] == average.per_layer_s[1]
        assert lt.attn.fwd_compute_s[1] == average.attn.fwd_compute_s[1]


def test_models_of_one_kind_keep_the_average_layer():
    # Every stage the average layer; only an explicit split's interleaved rows are walked
    # (cost.chunk_path), with the average layer's forward and backward as their one kind.
    model, hardware = load_model("Llama-3-8B"), load_hardware("h100-sxm")
    c = Candidates.concat([Candidates.of_plan(p) for p in (
        ParallelPlan(tp=1, ulysses=8, pp=8, dp=1), ParallelPlan(tp=1, ulysses=8, pp=8, vpp=2, dp=1),
        ParallelPlan(tp=1, ulysses=8, pp=8, vpp=2, dp=1, first_stage_layers=6, last_stage_layers=2))])
    average = _price(model, hardware, c)
    table = kind_table(model, SEQ, c, 32, lambda m, rows: pytest.fail("priced a kind"))
    stage = stage_layer_times(model, SEQ, c, average, table)
    assert stage.uniform and stage.first is average
    assert stage.kinds.rows.tolist() == [2]
    assert stage.kinds.fwd_s.tolist() == [[average.fwd_s[2]]] and stage.kinds.bwd_s.tolist() == [[average.bwd_s[2]]]


def test_the_stage_with_three_global_layers_paces_the_step():
    # Its 8 layers' attention, every micro-batch: 3 global and 5 local layers' kernels.
    model, hardware = load_model("Gemma-3-27B"), load_hardware("h100-sxm")
    c = Candidates.of_plan(PIPED)
    step = time_columns(model, hardware, WORKLOAD, c, gpus_per_node=8)
    attention = [(lambda a: a.fwd_compute_s + a.bwd_compute_s)(_price(kind_model(model, k), hardware, c).attn)[0]
                 for k in distinct_kinds(model, SEQ)]
    m = WORKLOAD.global_batch  # dp 1, micro-batch 1
    assert step.time.attention_s[0] == pytest.approx(m * (3 * attention[0] + 5 * attention[1]), rel=1e-9)
    # The model's average layer would put 8 x 10/62 global layers there: the stage takes longer.
    average = _price(model, hardware, c).attn
    assert step.time.attention_s[0] > 1.5 * m * 8 * float(np.asarray(average.fwd_compute_s + average.bwd_compute_s)[0])


def test_the_drain_from_a_later_middle_stage_runs_the_chunk_0_backwards_of_the_ranks_between():
    # DeepSeek-V3 (3 dense layers, then MoE) over pp 8 x vpp 3 at 7 / 6: stage 1's chunk 0 holds
    # layers 1-3 (two dense, one MoE; pipeline_chunks: 7 = 1 + 3 + 3), so a middle rank 3's last
    # backward ends stage 1's and stage 2's chunk-0 backwards (2 dense + 4 MoE) before stage 1's;
    # rank 1: none; a model of one kind: none.
    model = load_model("DeepSeek-V3")
    plan = ParallelPlan(tp=2, pp=8, vpp=3, dp=32, ring=2, ep=8, first_stage_layers=7, last_stage_layers=6)
    c = Candidates.concat([Candidates.of_plan(plan)] * 3)
    dense, moe = 0.010, 0.025
    kinds = KindTimes(np.arange(3), np.zeros((2, 3)), np.array([[dense] * 3, [moe] * 3]))
    assert [kind.moe for kind in distinct_kinds(model, 4096)] == [False, True]
    drain = middle_drain_s(model, 4096, c, kinds, np.array([3, 1, 2]))
    assert drain == pytest.approx([2 * dense + 4 * moe, 0.0, 2 * dense + moe])
    assert middle_drain_s(load_model("Llama-3-8B"), 4096, c, None, np.array([1, 1, 1])) == 0.0


def test_the_first_stages_chunk_backwards_are_their_own_layers():
    # DeepSeek-V3 over pp 8 x vpp 2 at 9 / 4: the first stage's chunk 0 holds layers 0-4 (3 dense,
    # 2 MoE; 9 = 5 + 4), its chunk 1 layers 31-34 (4 MoE); at vpp 1, none (NaN).
    model = load_model("DeepSeek-V3")
    plans = [ParallelPlan(tp=2, pp=8, vpp=vpp, dp=32, ring=2, ep=8, first_stage_layers=9, last_stage_layers=4)
             for vpp in (2, 1)]
    c = Candidates.concat([Candidates.of_plan(p) for p in plans])
    dense, moe = 0.010, 0.025
    kinds = KindTimes(np.arange(2), np.zeros((2, 2)), np.array([[dense] * 2, [moe] * 2]))
    chunk0, last = first_chunks_bwd_s(model, 4096, c, kinds)
    assert chunk0[0] == pytest.approx(3 * dense + 2 * moe) and last[0] == pytest.approx(4 * moe)
    assert np.isnan(chunk0[1]) and np.isnan(last[1])
    assert first_chunks_bwd_s(model, 4096, c, None) is None
