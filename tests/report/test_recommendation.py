"""report.recommendation: the recommended plan's section (its headline, why it does not fit, why
it wins, its flags)."""

from __future__ import annotations


def _recommendation(q, chosen, *, from_plan_file):
    from sp_planner.flags import FlagRequest
    from sp_planner.report.recommendation import recommendation_section

    request = FlagRequest(model=q.model, workload=q.workload, plan=chosen.plan, num_nodes=q.num_nodes,
                          gpus_per_node=q.gpus_per_node)
    return str(recommendation_section(chosen=chosen, result=q.result, hardware=q.hardware, flag_request=request,
                                      framework="megatron", from_plan_file=from_plan_file))


def test_a_plan_that_breaks_a_rule_is_said_to_break_it_not_to_run_out_of_memory(question):
    reason = "heads: num_heads 32 is not divisible by tp*ulysses = 3*1"
    broken = question.result.ranked[0].model_copy(update={"fits": False, "reason": reason})
    html = _recommendation(question, broken, from_plan_file=False)
    assert "This plan cannot run: it breaks the hard rule heads (num_heads 32 is not divisible" in html
    assert "of HBM" not in html and "does not fit" not in html and "It cannot run: it breaks a hard rule" in html


def test_a_plan_file_plan_out_of_memory_is_not_said_to_be_the_closest_when_others_fit(question):
    reason = "oom: needs 90.0 GiB per GPU, 79.3 GiB available"
    heavy = question.result.ranked[2].model_copy(update={"fits": False, "reason": reason})
    html = _recommendation(question, heavy, from_plan_file=True)
    assert f"This plan does not fit in 79.3 GiB of HBM: {reason}." in html and "No plan fits" not in html


def test_a_model_mfu_past_100_percent_is_not_shown_in_the_headline(question):
    # The full-square count passes the peak for windowed attention (Mistral at 1M tokens on
    # A100: 1546.6%): the headline says why it does not show it (tests/report/test_sections.py: the table).
    from sp_planner.report.recommendation import _headline

    windowed = question.result.ranked[0].model_copy(update={"mfu": 15.466})
    headline = _headline(windowed, question.hardware)
    assert "1546.6%" not in headline
    assert "model MFU (full square) not shown: its count of the whole attention square" in headline


def test_the_reports_why_text_is_sp_plans_for_the_searchs_best(question):
    # The report gave why_this_plan only the best and the runner-up, so it named at most "plan 2"
    # as a tie where sp-plan's text (every ranked plan) said "plans 2-6" (the README's example).
    from html import unescape

    from sp_planner.present.why import why_this_plan

    best = question.result.ranked[0]
    html = unescape(_recommendation(question, best, from_plan_file=False))
    assert why_this_plan(question.result.ranked, question.hardware) in html
