from __future__ import annotations

from sp_planner.plan import ParallelPlan
from sp_planner.present.labels import (breaks_hard_rule, peak_name, pinned_vpp_group, plan_name, pp_cell,
                                       pp_group_legend, reason_key)


def test_plan_label_names_every_choice_and_only_a_non_default_ring_layout():
    plan = ParallelPlan(dp=2, pp=1, tp=2, ulysses=4, ring=2, zero=1, recompute="selective", micro_batch=1)
    assert plan_name(plan, compact=True) == "tp2 u4 r2 dp2 pp1 | z1 sel-rc mb1"
    contiguous = plan.model_copy(update={"ring_layout": "contiguous", "recompute": "none", "zero": 3})
    assert plan_name(contiguous, compact=True) == "tp2 u4 r2 dp2 pp1 | z3 no-rc mb1 contig"
    # Without a ring the layout means nothing and is not shown.
    no_ring = contiguous.model_copy(update={"ring": 1, "dp": 4})
    assert plan_name(no_ring, compact=True) == "tp2 u4 r1 dp4 pp1 | z3 no-rc mb1"


def test_reason_key_is_the_rule_before_the_colon():
    assert reason_key("heads: num_heads 32 is not divisible by tp*ulysses = 1*64") == "heads"
    assert reason_key("oom: needs 90.1 GiB per GPU, 80.0 GiB available") == "oom"
    assert reason_key("") == "" and reason_key(None) == "" and reason_key(float("nan")) == ""


def test_a_hard_rule_is_any_reason_but_memory():
    assert breaks_hard_rule("heads: num_heads 32 is not divisible by tp*ulysses = 3*1")
    assert not breaks_hard_rule("oom: 90.1 GiB > 79.2 GiB")
    assert not breaks_hard_rule(None) and not breaks_hard_rule("")


def test_prose_plan_name_has_the_same_choices_in_the_same_order():
    plan = ParallelPlan(dp=2, pp=3, tp=2, ulysses=4, ring=2, zero=1, recompute="selective", micro_batch=2,
                        ring_layout="contiguous")
    assert plan_name(plan) == ("tp 2 x ulysses 4 x ring 2 x dp 2 x pp 3, ZeRO-1, selective recompute, "
                               "micro batch 2, contiguous ring")
    assert plan_name(plan.model_copy(update={"ring_layout": "zigzag", "recompute": "none"})) == (
        "tp 2 x ulysses 4 x ring 2 x dp 2 x pp 3, ZeRO-1, no recompute, micro batch 2")


def test_plan_names_all_gather_cp_hsdp_and_kept_parameters_only_when_chosen():
    plan = ParallelPlan(dp=4, tp=2, ring=2, zero=3, cp_comm="allgather", dp_replicate=2,
                        reshard_after_forward=False)
    assert plan_name(plan, compact=True) == "tp2 u1 r2 dp4 pp1 | z3 no-rc mb1 ag rep2 keep"
    assert plan_name(plan) == ("tp 2 x ulysses 1 x ring 2 x dp 4 x pp 1, ZeRO-3, no recompute, micro batch 1, "
                               "all-gather CP, HSDP 2 replicas, no reshard after forward")
    # all-gather without a ring moves nothing: not named
    assert plan_name(plan.model_copy(update={"ring": 1, "dp": 8}), compact=True) == (
        "tp2 u1 r1 dp8 pp1 | z3 no-rc mb1 rep2 keep")


def test_fp8_plans_name_the_bf16_peak_their_share_is_of():
    # hardware_mfu divides executed FLOPs by the BF16 peak; FP8 GEMMs run at up to twice it.
    assert peak_name(ParallelPlan(dp=8)) == "peak"
    assert peak_name(ParallelPlan(dp=8, precision="fp8")) == "the BF16 peak"
    assert peak_name(ParallelPlan(dp=8, precision="mxfp8")) == "the BF16 peak"


def test_the_pp_cell_shows_a_pinned_micro_batch_group_only():
    # sp-plan --vpp-group 6 on pp 4 x vpp 2 (tests/cli/test_plan_vpp_group.py): a search row holds the
    # group pinned; unpinned it holds none (the group priced, 4, goes to JSON and CSV, not the table).
    interleaved = ParallelPlan(dp=2, pp=4, tp=1, vpp=2)
    pinned = interleaved.model_copy(update={"vpp_group": 6})
    assert [pp_cell(p) for p in (ParallelPlan(dp=8, pp=1, tp=1), interleaved, pinned)] == ["1", "4v2", "4v2g6"]
    assert (pinned_vpp_group(interleaved), pinned_vpp_group(pinned)) == (None, 6)
    assert pp_group_legend([interleaved]) is None
    # Told by the first shown plan that pins one, as the ring and ZeRO legends are.
    eight = ParallelPlan(dp=1, pp=8, tp=1, vpp=4, vpp_group=12)
    assert pp_group_legend([interleaved, eight, pinned]) == "pp 8v4g12: micro-batch groups of 12 (--vpp-group)"


def test_the_plan_name_tells_a_pinned_micro_batch_group_only():
    # The why-this-plan text and the report's headline name the plan by plan_name: a pinned group
    # after the virtual stages, as the pp cell shows it; unpinned names stay as they were.
    interleaved = ParallelPlan(dp=2, pp=4, tp=1, ring=2, vpp=2)
    pinned = interleaved.model_copy(update={"vpp_group": 6})
    assert plan_name(interleaved).endswith("micro batch 1, 2 virtual stages per rank")
    assert plan_name(pinned).endswith("micro batch 1, 2 virtual stages per rank in micro-batch groups of 6")
    assert plan_name(interleaved, compact=True) == "tp1 u1 r2 dp2 pp4 | z1 no-rc mb1 v2"
    assert plan_name(pinned, compact=True) == "tp1 u1 r2 dp2 pp4 | z1 no-rc mb1 v2g6"
