from __future__ import annotations

from sp_planner.plan import ParallelPlan
from sp_planner.report.labels import plan_label, reason_key


def test_plan_label_names_every_choice_and_only_a_non_default_ring_layout():
    plan = ParallelPlan(dp=2, pp=1, tp=2, ulysses=4, ring=2, zero=1, recompute="selective", micro_batch=1)
    assert plan_label(plan) == "tp2 u4 r2 dp2 pp1 | z1 sel-rc mb1"
    contiguous = plan.model_copy(update={"ring_layout": "contiguous", "recompute": "none", "zero": 3})
    assert plan_label(contiguous) == "tp2 u4 r2 dp2 pp1 | z3 no-rc mb1 contig"
    # Without a ring the layout means nothing and is not shown.
    assert plan_label(contiguous.model_copy(update={"ring": 1, "dp": 4})) == "tp2 u4 r1 dp4 pp1 | z3 no-rc mb1"


def test_reason_key_is_the_rule_before_the_colon():
    assert reason_key("heads: num_heads 32 is not divisible by tp*ulysses = 1*64") == "heads"
    assert reason_key("oom: needs 90.1 GiB per GPU, 80.0 GiB available") == "oom"
    assert reason_key("") == "" and reason_key(None) == "" and reason_key(float("nan")) == ""
