from __future__ import annotations

from sp_planner.planfile import PlanFile
from sp_planner.plan import ParallelPlan
from sp_planner.report.from_plan import chosen_estimate, plan_choices


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


def test_an_fp8_plan_is_reported_among_fp8_plans_as_sp_plan_documents_it(tmp_path, run_main):
    # sp-plan searches FP8 only when asked; the report of an FP8 plan file ranks FP8 plans (before
    # stop 42 it searched bf16 and called the plan file's plan 18% faster than "the best"), and its
    # summary.json is sp-plan --format json's document, the framework's plans included.
    import json

    from sp_planner.cli import plan_cmd, report_cmd

    plan = tmp_path / "fp8.json"
    assert run_main(plan_cmd, "--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "32k",
                    "--precision", "fp8", "--out", plan).exit_code == 0
    assert run_main(report_cmd, plan, "--out", tmp_path / "r").exit_code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {p["precision"] for p in summary["plans"]} == {"fp8"}
    assert summary["framework"] == "megatron" and summary["framework_plans"]
    chosen = json.loads(plan.read_text())["estimate"]["step_time_s"]
    assert summary["plans"][0]["step_time_s"] == chosen


def test_bf16_adam_moments_are_searched_with_the_zero_1_they_need():
    # As sp-plan pins them: the report must not rank bf16-moment plans at ZeRO 0, 2 or 3.
    assert plan_choices(ParallelPlan(adam_moments_bf16=True)).zero == 1
    assert plan_choices(ParallelPlan(zero=2)).zero is None
