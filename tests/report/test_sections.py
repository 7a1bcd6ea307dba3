from __future__ import annotations

import re

from sp_planner.catalog import load_model
from sp_planner.report import render_index


def _page(q, **extra):
    args = {k: v for k, v in q.report_args().items() if k != "summary"}
    return render_index(**args, runs=(), framework="megatron", chosen=q.result.ranked[0], from_plan_file=False,
                        **extra)


def test_question_and_top_plans_show_the_search_numbers(question):
    html = _page(question)
    best = question.result.ranked[0]
    assert "2 nodes x 8 GPUs = 16 GPUs" in html
    assert f"{question.result.candidates_evaluated:,} candidate plans evaluated" in html
    top = html[html.index('id="top-plans"'):html.index('id="figures"')]
    rows = re.findall(r"<tr( class=\"chosen\")?><td>(\d+)</td><td class=\"num\">(\d+)</td>", top)
    # Ten ranked plans, the first highlighted as the recommendation; the second column is tp.
    assert [int(n) for _, n, _ in rows] == list(range(1, 11))
    assert rows[0][0] and not any(chosen for chosen, _, _ in rows[1:])
    assert [int(tp) for _, _, tp in rows] == [e.plan.tp for e in question.result.ranked]
    assert f"{best.hardware_mfu:.1%} of peak in executed FLOPs (hardware MFU;" in html
    assert f"model MFU (Megatron) {best.mfu:.1%}" in html
    assert html.index('id="question"') < html.index('id="recommendation"') < html.index('id="top-plans"')


def test_report_when_no_plan_fits_shows_the_closest_and_no_pareto_front(asker):
    # 405B parameters need ~18 bytes each of optimizer state and more: far beyond 8 x 40 GiB.
    q = asker(load_model("llama3.1-405b"), "a100-40gb", num_nodes=1)
    assert not any(e.fits for e in q.result.ranked)
    html = _page(q)
    assert "No plan fits in 39.6 GiB of HBM" in html and "The closest plan</h3>" in html
    assert 'id="fig-heatmap"' in html and 'id="fig-pareto"' not in html
    assert "there is no Pareto front" in html
    assert "<td>no: oom</td>" in html


def test_the_recommended_plan_is_found_in_the_frame_even_with_an_even_pipeline_split(question):
    from sp_planner.report.sections import _row_index

    frame = question.result.frame
    best = question.result.ranked[0]
    assert best.plan.first_stage_layers is None and frame["first_stage_layers"].isna().iloc[0]
    # The frame lists plans in rank order: the best is its first row (the Pareto figure stars it).
    assert _row_index(frame, frame["fits"].to_numpy(dtype=bool), best) == frame.index[0]
    nothing_fits = frame["fits"].to_numpy(dtype=bool) & False
    assert _row_index(frame, nothing_fits, best) is None


def test_a_model_mfu_past_100_percent_is_not_shown_as_a_share(question):
    # Megatron's full-square count passes the peak for windowed attention (Mistral at 1M tokens on
    # A100: 1546.6%); the report, like the terminal table, shows "-" and says why, and keeps the
    # TFLOPS (plans.csv and summary.json keep the figure).
    from sp_planner.report.sections import _headline, top_plans_section

    best = question.result.ranked[0]
    windowed = best.model_copy(update={"mfu": 15.466})
    top = top_plans_section([windowed], chosen=windowed, hardware=question.hardware)
    assert "1546.6%" not in top and "<td class=\"num\">-</td>" in top
    assert "model MFU -: Megatron&#x27;s count (full attention square) passes the GPU&#x27;s peak" in top
    headline = _headline(windowed, question.hardware)
    assert "1546.6%" not in headline and "model MFU (Megatron) not shown: its full-attention count" in headline
    assert "model MFU -:" not in top_plans_section([best], chosen=best, hardware=question.hardware)


def _recommendation(q, chosen, *, from_plan_file):
    from sp_planner.flags import FlagRequest
    from sp_planner.report.sections import recommendation_section

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


def test_the_top_plans_table_says_how_the_ring_moves_kv_and_how_zero_keeps_parameters(question):
    # Two plans equal but for cp_comm (and ZeRO-3 keeping parameters) must not read the same row.
    from sp_planner.report.sections import top_plans_section

    best = question.result.ranked[0]
    ring = best.plan.model_copy(update={"ring": 2, "cp_comm": "allgather", "zero": 3, "reshard_after_forward": False})
    gather = best.model_copy(update={"plan": ring})
    p2p = best.model_copy(update={"plan": ring.model_copy(update={"cp_comm": "p2p", "zero": 1,
                                                                   "reshard_after_forward": True})})
    html = str(top_plans_section([gather, p2p], chosen=gather, hardware=question.hardware))
    assert "<th>ring K/V</th>" in html and "<td>all-gather</td>" in html and "<td>p2p</td>" in html  # words, left
    assert "<td class=\"num\">3k</td>" in html and "ZeRO 3k: parameters kept from forward to backward." in html
    assert "<th>ep</th>" not in html and "offloaded layers" not in html  # a dense search's table
    moe = best.model_copy(update={"plan": best.plan.model_copy(update={"ep": 4, "cpu_offload_layers": 2})})
    html = str(top_plans_section([moe], chosen=moe, hardware=question.hardware))
    assert "<th>ep</th>" in html and "<th>etp</th>" in html and "<th>offloaded layers</th>" in html


def test_the_question_names_the_gemm_precision_the_plans_run(question):
    # An FP8 plan's report said "bf16 mixed precision" (Workload.precision is always bf16): the
    # question names the precisions the ranked plans run their GEMMs in.
    from sp_planner.report.sections import _numerics

    workload = question.report_args()["workload"]
    assert _numerics(workload, question.result) == "bf16 mixed precision with adam"
    mixed = tuple(est.model_copy(update={"plan": est.plan.model_copy(update={"precision": precision})})
                  for est, precision in zip(question.result.ranked, ("fp8", "bf16", "fp8")))
    result = question.result.model_copy(update={"ranked": mixed})
    assert _numerics(workload, result) == "fp8 or bf16 GEMMs (bf16 mixed precision otherwise) with adam"
    only_fp8 = question.result.model_copy(update={"ranked": mixed[:1]})
    assert _numerics(workload, only_fp8) == "fp8 GEMMs (bf16 mixed precision otherwise) with adam"


def test_a_recommended_plan_outside_the_first_plans_is_not_numbered_as_first(question):
    # sp-report of a plan file whose plan the search ranks below its first ten: that plan leads the
    # table unnumbered, and the search's plans keep their ranks.
    import re

    from sp_planner.report.sections import top_plans_section

    ranked = list(question.result.ranked)
    slow = ranked[-1].model_copy(update={"plan": ranked[-1].plan.model_copy(update={"micro_batch": 7})})
    html = str(top_plans_section([slow, *ranked[:3]], chosen=slow, hardware=question.hardware, chosen_outside=True))
    assert re.findall(r"<tr[^>]*><td>([^<]*)</td>", html) == ["-", "1", "2", "3"]
    from html import unescape
    assert "The highlighted first row is the recommended plan, which is not among the search's first 3 (its # is " \
           "blank); the others are those, ranked by predicted step time." in unescape(html)
    plain = str(top_plans_section(ranked[:3], chosen=ranked[0], hardware=question.hardware))
    assert re.findall(r"<tr[^>]*><td>([^<]*)</td>", plain) == ["1", "2", "3"]
    assert "Ranked by predicted step time; the highlighted row is the recommended plan." in plain


def test_the_reports_why_text_is_sp_plans_for_the_searchs_best(question):
    # The report gave why_this_plan only the best and the runner-up, so it named at most "plan 2"
    # as a tie where sp-plan's text (every ranked plan) said "plans 2-6" (the README's example).
    from html import unescape

    from sp_planner.present.why import why_this_plan

    best = question.result.ranked[0]
    html = unescape(_recommendation(question, best, from_plan_file=False))
    assert why_this_plan(question.result.ranked, question.hardware) in html
