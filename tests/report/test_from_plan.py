from __future__ import annotations

from sp_planner.planfile import PlanFile
from sp_planner.report.from_plan import chosen_estimate


def _plan_file(question, plan):
    return PlanFile(model=question.model, hardware=question.hardware, workload=question.workload,
                    num_nodes=question.num_nodes, gpus_per_node=question.gpus_per_node, plan=plan)


def test_chosen_estimate_is_the_search_row_of_the_plan_file_plan(question):
    third = question.result.ranked[2]
    assert chosen_estimate(_plan_file(question, third.plan), question.result) == third


def test_a_plan_the_search_does_not_list_is_evaluated_alone(question):
    # The search enumerates zigzag rings only; a contiguous ring is a legal plan it skips.
    best = question.result.ranked[0].plan
    assert best.ring > 1
    contiguous = best.model_copy(update={"ring_layout": "contiguous"})
    estimate = chosen_estimate(_plan_file(question, contiguous), question.result)
    assert estimate.plan == contiguous
    # Same degrees, same bytes sent: zigzag and contiguous rings exchange the same blocks.
    assert estimate.comm_bytes == question.result.ranked[0].comm_bytes
