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


def _tied(question, steps_s):
    """The search's first fitting plans in rank order, their steps set to `steps_s` (as the MFU bound
    sets equal steps that its order before the bound keeps apart)."""
    from sp_planner.estimate import SearchResult

    frame = question.result.frame
    frame = frame[frame["fits"].astype(bool)].head(len(steps_s)).copy()
    frame["step_time_s"] = steps_s
    return SearchResult(candidates_evaluated=len(frame), ranked=question.result.ranked[:len(steps_s)],
                        prune_counts={}, frame=frame)


def test_a_plan_not_ranked_first_is_compared_with_the_plan_ranked_right_after_it(question):
    # A plan file's plan ranked second with the step of the first (ZeRO-3 beside ZeRO-2 at 199.01 s,
    # Llama-3-8B 32K on 8 A800s, ulysses 2 x all-gather ring 2): the section compared it with the
    # first, which the bound ties and which was faster before it, under "Against the next slower plan".
    from sp_planner.estimate import PlanEstimate
    from sp_planner.report.recommendation import _heading, _ranked_next

    result = _tied(question, [10.0, 10.0, 10.0, 12.0])
    first, second, third, fourth = (PlanEstimate.from_row(row) for _, row in result.frame.iterrows())
    assert _ranked_next(result, second) == [third]
    assert _heading(second, [third], is_best=False) == "Against the next plan ranked"
    assert _ranked_next(result, third) == [fourth]
    assert _heading(third, [fourth], is_best=False) == "Against the next slower plan"
    assert _ranked_next(result, fourth) == [] and _heading(fourth, [], is_best=False) == "Why this plan"
    # A plan the search does not rank: the first plan of a step no faster than its own.
    unranked = first.model_copy(update={"plan": first.plan.model_copy(update={"micro_batch": 64}),
                                        "step_time_s": 11.0})
    assert _ranked_next(result, unranked) == [fourth]


# Qwen3-30B-A3B on 2 x 8 H200 at 16K, dp 16 x ep 8, FSDP keeping parameters gathered: a plan only
# torchtitan's flags express (tests/cli/test_plan_file_out.py's TORCHTITAN_MOE).
TORCHTITAN_MOE = ("--model", "qwen3-30b-a3b", "--hardware", "h200", "--nodes", "2", "--seq-len", "16k",
                  "--tp", "1", "--pp", "1", "--ulysses", "1", "--ring", "1", "--dp", "16", "--ep", "8", "--zero", "3",
                  "--no-reshard-after-forward", "--micro-batch", "2", "--recompute", "full",
                  "--framework-version", "0.2.2", "--precision", "fp8", "--framework", "all", "--top", "2")
OWN_RECIPE_NOTE = ("torchtitan runs tensorwise FP8 scaling, its own, where the plans were ranked with delayed "
                   "scaling; sp-plan --framework torchtitan times them so.")
DELAYED_REFUSED = "fp8_recipe delayed cannot be expressed: torchtitan's float8 (torchao)"


def test_the_report_asks_torchtitan_with_its_own_recipe_as_sp_plan_prints_it(tmp_path, run_main):
    # --framework all without --fp8-recipe ranks with Megatron's delayed scaling, which torchtitan's
    # flags refuse; sp-plan prints them for plan 1 with its own tensorwise and a note
    # (flags.own_recipe), and the report and summary.json now say the same: before, both showed
    # torchtitan refusing plan 1 for delayed scaling. With --fp8-recipe delayed given, they refuse it.
    import json
    from html import escape

    from sp_planner.cli import plan_cmd

    refused = escape(DELAYED_REFUSED)  # as index.html writes it
    for given, report in (((), tmp_path / "own"), (("--fp8-recipe", "delayed"), tmp_path / "given")):
        planned = run_main(plan_cmd, *TORCHTITAN_MOE, *given, "--report", report)
        assert planned.exit_code == 0, planned.stderr
        first = json.loads((report / "summary.json").read_text())["plans"][0]
        titan, html = first["flags"]["torchtitan"], (report / "index.html").read_text()
        assert first["fp8_recipe"] == "delayed" and first["flags"]["megatron"]["notes"][-1:] != [OWN_RECIPE_NOTE]
        if not given:
            assert titan["supported"] and 'recipe_name = "tensorwise"' in titan["text"]
            assert titan["notes"][-1] == OWN_RECIPE_NOTE and OWN_RECIPE_NOTE in planned.stdout.replace("\n", " ")
            assert "recipe_name = &quot;tensorwise&quot;" in html and f"<li>{OWN_RECIPE_NOTE}</li>" in html
            assert refused not in html
        else:
            assert not titan["supported"] and titan["reason"].startswith(DELAYED_REFUSED)
            assert OWN_RECIPE_NOTE not in html and f"torchtitan cannot express this plan: {refused}" in html
