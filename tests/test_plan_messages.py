"""plan_messages: the rule messages' own parts, by hand (the messages through plan.violations:
tests/test_pipeline_layout.py, tests/test_rules.py)."""

from __future__ import annotations

from sp_planner.plan import ParallelPlan
from sp_planner.plan_messages import even_vpp_text, rule_message
from sp_planner.plan_rules import RuleFacts


def test_even_vpp_text_names_the_divisors_nearest_the_pinned_vpp():
    # 16 layers a stage divide by 2, 4, 8, 16; nearest 64 in log distance: 16, 8, 4.
    assert even_vpp_text(16, 64) == "pin --vpp 4, 8 or 16, which split the 16 layers per stage evenly"
    # 12: 2, 3, 4, 6, 12; nearest 5: 4 (0.22), 6 (0.18), 3 (0.51).
    assert even_vpp_text(12, 5) == "pin --vpp 3, 4 or 6, which split the 12 layers per stage evenly"
    assert even_vpp_text(7, 2) == "pin --vpp 7, which splits the 7 layers per stage evenly"
    assert even_vpp_text(1, 2) == "1 layer per stage interleaves with no vpp above 1: pin --vpp 1"


def test_batch_message_names_the_product_that_must_divide_it():
    facts = RuleFacts(num_heads=32, num_kv_heads=8, seq_len=8192, global_batch=100)
    plan = ParallelPlan(dp=8, micro_batch=2)
    assert rule_message("batch", facts, plan) == ("global_batch 100 is not divisible by dp*micro_batch = 8*2 "
                                                  "(Megatron: GBS % (MBS*DP) == 0)")
