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
    assert f"model MFU (full square) {best.mfu:.1%}" in html
    # The full-square figure names the Megatron-LM releases that counted so (8873b55d halved causal attention).
    assert "whole s x s square and no recompute (Megatron-LM to core_v0.11; later releases halve" in html
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
    # The full-square count passes the peak for windowed attention (Mistral at 1M tokens on
    # A100: 1546.6%); the report, like the terminal table, shows "-" and says why, and keeps the
    # TFLOPS (plans.csv and summary.json keep the figure; the headline: tests/report/test_recommendation.py).
    from sp_planner.report.sections import top_plans_section

    best = question.result.ranked[0]
    windowed = best.model_copy(update={"mfu": 15.466})
    top = top_plans_section([windowed], chosen=windowed, hardware=question.hardware)
    assert "1546.6%" not in top and "<td class=\"num\">-</td>" in top
    assert "model MFU -: the full attention square counted (Megatron-LM to core_v0.11) passes the GPU" in top
    assert "model MFU -:" not in top_plans_section([best], chosen=best, hardware=question.hardware)


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


def test_the_top_plans_table_shows_a_pinned_micro_batch_group(question):
    # sp-plan --vpp-group 6 (a search row holds the group pinned): a column of its own after the
    # virtual stages; unpinned (the group priced, in plans.csv) no column, the table as it was.
    from sp_planner.report.sections import top_plans_section

    best = question.result.ranked[0]
    interleaved = best.plan.model_copy(update={"pp": 4, "vpp": 2})  # a row of the table, not a plan to run
    pinned = best.model_copy(update={"plan": interleaved.model_copy(update={"vpp_group": 6})})
    plain = best.model_copy(update={"plan": best.plan.model_copy(update={"micro_batch": 2})})
    html = str(top_plans_section([pinned, plain], chosen=pinned, hardware=question.hardware))
    headers = re.findall(r"<th>([^<]*)</th>", html)
    at = headers.index("micro-batch group")
    assert headers[at - 1] == "virtual stages"
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html)[1:]]
    assert [row[at - 1:at + 1] for row in cells] == [["2", "6"], ["-" if best.plan.pp == 1 else str(best.plan.vpp),
                                                                  "-"]]
    unpinned = pinned.model_copy(update={"plan": interleaved})
    assert "micro-batch group" not in str(top_plans_section([unpinned, plain], chosen=unpinned,
                                                              hardware=question.hardware))


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
