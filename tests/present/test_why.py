"""The "why this plan" paragraph and the no-fit advice, on hand-made estimates with round numbers."""

from __future__ import annotations

from sp_planner.catalog import load_hardware
from sp_planner.estimate import CommBytes, CommLinks, MemoryBreakdown, PlanEstimate, TimeBreakdown
from sp_planner.plan import ParallelPlan
from sp_planner.present.advice import FitSuggestion
from sp_planner.present.why import closest_and_fixes, plan_differences, why_this_plan
from sp_planner.units import GIB

# Round numbers: an A800 with 80 GiB of HBM (the built-in profile holds what the runtime reports,
# 79.3 GiB).
A800 = load_hardware("a800").model_copy(update={"hbm_bytes": 80 * GIB})


def _estimate(plan: ParallelPlan, *, attention_s: float, ulysses_s: float, activations_gib: float,
              fits: bool = True, reason: str | None = None) -> PlanEstimate:
    memory = MemoryBreakdown(params_bytes=2 * GIB, grads_bytes=2 * GIB, optimizer_bytes=4 * GIB,
                             activations_bytes=activations_gib * GIB, logits_bytes=0.0, comm_buffers_bytes=0.0,
                             reserve_bytes=0.0)
    time = TimeBreakdown(gemm_s=2.0, attention_s=attention_s, recompute_s=0.0, tp_comm_s=0.0,
                         ulysses_comm_s=ulysses_s, ring_comm_exposed_s=0.0, pp_comm_s=0.0, dp_comm_exposed_s=0.0,
                         bubble_s=0.0, optimizer_s=0.0)
    step = sum(time.model_dump().values())
    return PlanEstimate(
        plan=plan, fits=fits, reason=reason, memory=memory, memory_peak_bytes=memory.total_bytes, time=time,
        step_time_s=step, tokens_per_s=1000.0 / step, model_tflops_per_gpu=100.0, hardware_tflops_per_gpu=60.0,
        mfu=0.5, hardware_mfu=0.3,
        comm_bytes=CommBytes(ulysses_all_to_all=1, ring_p2p=0, tp_all_gather=0, tp_reduce_scatter=0, pp_p2p=0,
                             dp_reduce_scatter=0, dp_all_gather=0),
        comm_links=CommLinks(ulysses_all_to_all="intra", ring_p2p="none", tp_all_gather="none",
                             tp_reduce_scatter="none", pp_p2p="none", dp_reduce_scatter="none", dp_all_gather="none"),
    )


BEST = _estimate(ParallelPlan(ulysses=8), attention_s=6.0, ulysses_s=2.0, activations_gib=40.0)  # 10 s, 48 GiB
RUNNER_UP = _estimate(ParallelPlan(ulysses=4, ring=2), attention_s=6.0, ulysses_s=3.0, activations_gib=38.0)


def test_winner_paragraph_names_its_limits_headroom_and_the_runner_up():
    text = why_this_plan([BEST, RUNNER_UP], A800)
    # attention 6 s of a 10 s step, then GEMMs 2 s (ulysses also 2 s, but GEMMs come first).
    assert "dominated by attention kernels (6.00 s, 60% of the step), then GEMMs (2.00 s, 20% of the step)" in text
    # 48 GiB of 80 GiB: 32 GiB of headroom; activations 40 GiB the largest part.
    assert "It needs 48.0 GiB of 80.0 GiB per GPU, leaving 32.0 GiB of headroom" in text
    assert "activations the largest part at 40.0 GiB" in text
    # Runner-up: 11 s, 1 s (10%) slower, all of it Ulysses all-to-all, and 2 GiB lighter.
    assert "The runner-up (ulysses 4 instead of 8, ring 2 instead of 1) is 1.00 s (10.0%) slower per step" in text
    assert "mostly from Ulysses all-to-all (+1.00 s)" in text
    assert "though it needs 2.0 GiB less memory per GPU" in text


def _held(est: PlanEstimate, ceiling_s: float) -> PlanEstimate:
    """`est` stretched by `ceiling_s` to the best published MFU (cost.mfu_ceiling)."""
    time = est.time.model_copy(update={"mfu_ceiling_s": ceiling_s})
    return est.model_copy(update={"time": time, "step_time_s": est.step_time_s + ceiling_s})


def test_runner_up_held_to_the_same_step_by_the_mfu_bound_is_compared_before_it():
    # 10 s + 1 s and 10.5 s + 0.5 s: both held at 11 s; before the bound the runner-up is 0.5 s
    # (5.0% of the best's 10 s) slower, all of it Ulysses all-to-all.
    slower = _estimate(ParallelPlan(ulysses=4, ring=2), attention_s=6.0, ulysses_s=2.5, activations_gib=38.0)
    text = why_this_plan([_held(BEST, 1.0), _held(slower, 0.5)], A800)
    assert ("The runner-up (ulysses 4 instead of 8, ring 2 instead of 1) is predicted at the same step: the best "
            "published MFU for this hardware holds both to it; before that bound it is 0.50 s (5.0%) slower, "
            "mostly from Ulysses all-to-all (+0.50 s)") in text
    # Only the best held (10 s + 0.2 s against 10.5 s): the difference per step, 0.3 s of 10.2 s;
    # its parts without the bound's stretch.
    text = why_this_plan([_held(BEST, 0.2), slower], A800)
    assert ("The runner-up (ulysses 4 instead of 8, ring 2 instead of 1) is 0.30 s (2.9%) slower per step, "
            "mostly from Ulysses all-to-all (+0.50 s)") in text


def test_runner_up_faster_before_the_mfu_bound_says_faster():
    # A plan shown first that the search did not rank first (sp-plan --simulate, sp-report of a
    # plan file): both held at 11 s, the runner-up 0.5 s faster before the bound, by its Ulysses
    # all-to-all; said as faster, not as a negative time slower (was "-500.0 ms (-5.0%) slower").
    slower = _estimate(ParallelPlan(ulysses=4, ring=2), attention_s=6.0, ulysses_s=2.5, activations_gib=38.0)
    text = why_this_plan([_held(slower, 0.5), _held(BEST, 1.0)], A800)
    assert ("The runner-up (ulysses 8 instead of 4, ring 1 instead of 2) is predicted at the same step: the best "
            "published MFU for this hardware holds both to it; before that bound it is 0.50 s (4.8%) faster, "
            "mostly from Ulysses all-to-all (-0.50 s)") in text


def test_runner_up_at_the_same_step_says_what_cancels():
    # 6 + 2 + 2 s against 5 + 3 + 2 s: the same 10 s, attention 1 s shorter, all-to-all 1 s longer.
    even = _estimate(ParallelPlan(ulysses=4, ring=2), attention_s=5.0, ulysses_s=3.0, activations_gib=40.0)
    text = why_this_plan([BEST, even], A800)
    assert ("The runner-up (ulysses 4 instead of 8, ring 2 instead of 1) takes the same time per step: its Ulysses "
            "all-to-all (+1.00 s) is offset by attention kernels (-1.00 s).") in text
    assert "slower per step" not in text


def test_a_split_change_is_said_as_the_split():
    uneven = ParallelPlan(pp=4, vpp=2, first_stage_layers=6, last_stage_layers=8)
    assert plan_differences(ParallelPlan(pp=4, vpp=2), uneven) == (
        "6/8 layers on the first/last stage instead of the even split")


def test_runner_up_that_does_not_fit_is_named_with_its_reason():
    heavy = _estimate(ParallelPlan(ring=8), attention_s=5.0, ulysses_s=0.0, activations_gib=90.0, fits=False,
                      reason="oom: needs 98.0 GiB per GPU, 80.0 GiB available")
    text = why_this_plan([BEST, heavy], A800)
    assert "The next candidate (ulysses 1 instead of 8, ring 8 instead of 1) does not fit: oom: needs 98.0 GiB" in text


def test_single_plan_and_no_plan():
    assert why_this_plan([BEST], A800).endswith("No other candidate was ranked.")
    assert "nothing to rank" in why_this_plan([], A800)


def test_runner_up_beyond_the_shown_plans_is_compared():
    """sp-plan --top 1 shows one plan of many: the runner-up it passes is compared as the second
    shown plan would be (10 s against 11 s: ulysses all-to-all 2 s -> 3 s; 10% apart, outside the
    2.2% ranking band, so the two paragraphs are the same)."""
    alone = why_this_plan([BEST], A800, runner_up=RUNNER_UP)
    assert alone == why_this_plan([BEST, RUNNER_UP], A800)
    assert "The runner-up (ulysses 4 instead of 8, ring 2 instead of 1) is 1.00 s (10.0%) slower per step" in alone
    # A second shown plan comes first.
    assert why_this_plan([BEST, RUNNER_UP], A800, runner_up=BEST) == why_this_plan([BEST, RUNNER_UP], A800)


def test_plan_differences_lists_each_changed_field():
    assert plan_differences(ParallelPlan(), ParallelPlan()) == "the same settings"
    assert plan_differences(ParallelPlan(zero=1), ParallelPlan(zero=3, recompute="full")) == (
        "ZeRO-3 instead of ZeRO-1, recompute full instead of none"
    )
    # In the words the tables use, not the plan file's field names.
    assert plan_differences(ParallelPlan(ring=2), ParallelPlan(ring=2, micro_batch=2, cp_comm="allgather")) == (
        "micro batch 2 instead of 1, all-gather CP instead of P2P ring CP")
    assert plan_differences(ParallelPlan(zero=3), ParallelPlan(zero=3, reshard_after_forward=False, vpp=2)) == (
        "parameters kept from forward to backward instead of parameters resharded after forward, "
        "virtual stages 2 instead of 1")


def test_closest_and_fixes_reports_the_overshoot_and_each_checked_fix():
    over = _estimate(ParallelPlan(ulysses=8), attention_s=6.0, ulysses_s=2.0, activations_gib=92.0, fits=False,
                     reason="oom")  # 100 GiB: 20 GiB over 80
    fix = FitSuggestion(change="nodes", option="--nodes 4", description="would fit on 4 nodes (32 GPUs)",
                        estimate=BEST, global_batch=4)
    text = closest_and_fixes([over], A800, [fix])
    lines = text.splitlines()
    assert lines[0].startswith("No plan fits. The closest is tp 1 x ulysses 8 x ring 1 x dp 1 x pp 1")
    assert lines[0].endswith("100.0 GiB per GPU against 80.0 GiB, 20.0 GiB over.")
    assert lines[2].startswith("  --nodes 4: would fit on 4 nodes (32 GPUs); best plan tp 1")
    assert lines[2].endswith("48.0 GiB per GPU, 10.00 s per step")
    assert "None of the changes tried" in closest_and_fixes([over], A800, [])
    assert closest_and_fixes([over], A800, [fix], pinned=True).startswith("The pinned plan does not fit.")


def test_closest_names_the_rule_where_every_plan_breaks_one_and_memory_where_it_refuses():
    # pp 4 x vpp 2 at m 3 (sp-plan --pp 4 --vpp 2 --global-batch 3): the vpp rule refuses every plan,
    # at 28 GiB of 80, so the closest was "28.0 GiB per GPU against 80.0 GiB (vpp: ...)": the rule, now.
    plan = ParallelPlan(tp=2, pp=4, vpp=2)
    rule = _estimate(plan, attention_s=1.0, ulysses_s=0.0, activations_gib=20.0, fits=False,
                     reason="vpp: vpp 2 (interleaved 1F1B) needs at least pp 4 micro-batches per step, has 3; "
                            "use a global batch of 4 or more (m 4)")
    fix = FitSuggestion(change="global_batch", option="--global-batch 4", description="fills groups of pp",
                        estimate=BEST, global_batch=4)
    assert closest_and_fixes([rule], A800, [fix]).splitlines()[0] == (
        "No plan can run: each breaks a rule, whatever its memory. The first, tp 2 x ulysses 1 x ring 1 x dp 1 "
        "x pp 4, ZeRO-1, no recompute, micro batch 1, 2 virtual stages per rank, breaks the vpp rule: vpp 2 "
        "(interleaved 1F1B) needs at least pp 4 micro-batches per step, has 3; use a global batch of 4 or more (m 4).")
    # Where a plan that breaks no rule is over memory, memory is the reason: that plan is the closest.
    over = _estimate(ParallelPlan(ulysses=8), attention_s=6.0, ulysses_s=2.0, activations_gib=92.0, fits=False,
                     reason="oom")
    assert closest_and_fixes([rule, over], A800, [fix]).splitlines()[0] == (
        "No plan fits. The closest is tp 1 x ulysses 8 x ring 1 x dp 1 x pp 1, ZeRO-1, no recompute, micro batch "
        "1: 100.0 GiB per GPU against 80.0 GiB, 20.0 GiB over.")


def test_a_runner_up_that_is_faster_is_said_to_be_faster():
    # sp-report compares the plan file's plan with the next one, which can be the faster (the plan
    # file's plan evaluated apart from the search): never "-1.00 s (-10.0%) slower".
    text = why_this_plan([RUNNER_UP, BEST], A800)
    assert "is 1.00 s (9.1%) faster per step, mostly from Ulysses all-to-all (-1.00 s)" in text
    assert "slower" not in text
    # The faster one needs 48 GiB against 46 GiB: 2 GiB more goes against its time ("though"); a
    # faster one that also needs 2 GiB less is "and" (was "though it needs ... less" either way).
    assert text.endswith("(-1.00 s), though it needs 2.0 GiB more memory per GPU.")
    lean = _estimate(ParallelPlan(ulysses=8), attention_s=6.0, ulysses_s=2.0, activations_gib=36.0)  # 44 GiB
    assert why_this_plan([RUNNER_UP, lean], A800).endswith("(-1.00 s), and needs 2.0 GiB less memory per GPU.")


def test_each_quantity_keeps_one_unit_through_the_paragraph():
    # A runner-up 0.25 s slower than a 10 s step and 48 MiB heavier: said in the step's seconds
    # and the HBM's GiB (was "250.0 ms" and "48.0 MiB" beside "10.00 s" and "80.0 GiB").
    close = _estimate(ParallelPlan(ulysses=4, ring=2), attention_s=6.0, ulysses_s=2.25,
                      activations_gib=40.0 + 48 / 1024)
    text = why_this_plan([BEST, close], A800)
    assert "is 0.25 s (2.5%) slower per step, mostly from Ulysses all-to-all (+0.25 s)" in text
    assert "and needs 0.047 GiB more memory per GPU" in text
    assert " ms" not in text and "MiB" not in text
    # The step's range and the validation runs' ratios: seconds and percentages, no "x" ratio.
    assert "Its step may be" in text and " s (in 80% of" in text and "x the predicted" not in text


def test_a_model_mfu_past_100_percent_names_the_causal_half_not_a_window():
    # A dense causal model at long context (Llama-3-8B at 208K tokens on 16 A800s: attention 81% of
    # the step at 57% of peak) has a full-square model MFU near 1.8 x its executed share: the full square is
    # twice the causal half. The paragraph says so without calling the attention windowed.
    past = BEST.model_copy(update={"mfu": 1.016, "hardware_mfu": 0.568})
    text = " ".join(why_this_plan([past], A800).split())
    assert "56.8% of peak in executed FLOPs" in text
    assert "the model MFU (full square) passes 100%: it counts the full attention square, of which a causal " \
           "mask runs half" in text
    assert "windowed" not in text and "101.6%" not in text
    within = " ".join(why_this_plan([BEST], A800).split())
    assert "model MFU (full square) 50.0%" in within and "passes 100%" not in within
