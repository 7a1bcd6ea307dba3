"""best_expressible: the best fitting plan a framework can express, in search rank order."""

from __future__ import annotations

from sp_planner.catalog import load_hardware, load_model
from sp_planner.estimate import PlanEstimate, plan_of_row
from sp_planner.flags import FlagRequest, render_flags
from sp_planner.plan import ParallelPlan
from sp_planner.present.expressible import best_expressible
from sp_planner.search import search
from sp_planner.specs.workload import Workload

MODEL, HARDWARE = load_model("llama3-8b"), load_hardware("a800")
WORKLOAD = Workload(seq_len=128 * 1024, global_batch=16)


def _supported(framework: str, est: PlanEstimate) -> bool:
    request = FlagRequest(model=MODEL, workload=WORKLOAD, plan=est.plan, num_nodes=2, gpus_per_node=8)
    return render_flags(framework, request).supported


def test_frame_rows_are_in_rank_order():
    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=2, gpus_per_node=8, top_k=10)
    assert [PlanEstimate.from_row(result.frame.iloc[i]) for i in range(10)] == list(result.ranked)


def test_first_supported_fitting_plan_for_each_framework():
    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=2, gpus_per_node=8)
    for framework in ("megatron", "deepspeed", "torchtitan"):
        found = best_expressible(result, framework, model=MODEL, workload=WORKLOAD, num_nodes=2, gpus_per_node=8)
        assert found is not None, framework
        rank, est, flags = found
        assert flags.supported and est.fits
        assert est == PlanEstimate.from_row(result.frame.iloc[rank - 1])
        for better in range(rank - 1):
            earlier = PlanEstimate.from_row(result.frame.iloc[better])
            assert not _supported(framework, earlier), (framework, better)


def test_megatron_gets_zero_2_and_3_plans_only_through_fsdp():
    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=2, gpus_per_node=8)
    _, est, flags = best_expressible(result, "megatron", model=MODEL, workload=WORKLOAD, num_nodes=2,
                                     gpus_per_node=8)
    # ZeRO-2 leads (ZeRO-3 only adds gathers to it, cost.overlap): Megatron-FSDP optim_grads.
    assert est.plan.zero == 2
    assert "--use-megatron-fsdp" in flags.text and "--use-distributed-optimizer" not in flags.text
    assert "--data-parallel-sharding-strategy optim_grads" in flags.text
    for reshard in (True, False):
        zero3 = next(e for e in (PlanEstimate.from_row(row) for _, row in result.frame.iterrows())
                     if e.plan.zero == 3 and e.plan.reshard_after_forward == reshard and e.fits)
        request = FlagRequest(model=MODEL, workload=WORKLOAD, plan=zero3.plan, num_nodes=2, gpus_per_node=8)
        text = render_flags("megatron", request).text
        fsdp = "--use-megatron-fsdp" if reshard else "--use-torch-fsdp2"
        assert fsdp in text and "--use-distributed-optimizer" not in text


def test_a_rows_plan_columns_give_its_estimates_plan():
    # _expressible renders flags from the plan columns alone, the whole estimate only where supported.
    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=2, gpus_per_node=8)
    head = result.head(200)
    names = list(ParallelPlan.model_fields)
    for (_, row), *values in zip(head.iterrows(), *(head[name] for name in names)):
        plan = plan_of_row(dict(zip(names, values)))
        assert plan == PlanEstimate.from_row(row).plan
        assert plan.model_dump() == PlanEstimate.from_row(row).plan.model_dump()


def test_expressible_plans_report_each_plan_found():
    # sp-plan's bar: at --top 1000 the flags of over a thousand plans are rendered here (over a second).
    from sp_planner.present.expressible import expressible_plans

    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=2, gpus_per_node=8, top_k=10)
    heard: list[tuple[int, int, str]] = []
    plans = expressible_plans(result, "deepspeed", model=MODEL, workload=WORKLOAD, num_nodes=2, gpus_per_node=8,
                              top_k=5, progress=lambda done, total, what: heard.append((done, total, what)))
    assert len(plans) == 5
    assert heard == [(n, 5, "finding the best 5 plans deepspeed can express") for n in range(1, 6)]


# framework_flags: plan 1's flags with the framework's own FP8 recipe, else the best plan's it can
# express, each plan asked with that recipe by the one rule (flags.own_recipe.framework_plan).
H100 = load_hardware("h100-sxm")
AUTO_WORKLOAD = Workload(seq_len=32 * 1024, global_batch=16)
OWN_RECIPE_NOTE = ("torchtitan runs tensorwise FP8 scaling, its own, where the plans were ranked with delayed "
                   "scaling; sp-plan --framework torchtitan times them so.")


def _two_plan_result(first: str, second: str):
    """A search result of two fitting plans of --precision auto (FP8 with Megatron's delayed
    scaling, as --framework all ranks it): plan 1 in `first` precision with Ulysses (which
    torchtitan has not), plan 2 in `second` with ring attention alone."""
    import pandas as pd

    from sp_planner.estimate import SearchResult
    from sp_planner.space import Pins

    frame = search(MODEL, H100, AUTO_WORKLOAD, num_nodes=1, gpus_per_node=8, pins=Pins(precision=None)).frame
    fitting = frame[frame["fits"].astype(bool)]
    one = fitting[(fitting["precision"] == first) & (fitting["ulysses"] > 1)].head(1)
    two = fitting[(fitting["precision"] == second) & (fitting["ulysses"] == 1) & (fitting["ring"] > 1)].head(1)
    rows = pd.concat([one, two]).reset_index(drop=True)
    ranked = tuple(PlanEstimate.from_row(row) for _, row in rows.iterrows())
    return SearchResult(frame=rows, candidates_evaluated=2, ranked=ranked, prune_counts={}), ranked


def _titan_request(plan, *, given: bool):
    from sp_planner.flags import FlagChoices

    choices = FlagChoices(framework_version="0.2.2", fp8_recipe_given=given)
    return choices.request(plan, model=MODEL, workload=AUTO_WORKLOAD, num_nodes=1, gpus_per_node=8)


def test_a_fallback_fp8_plan_is_asked_with_the_frameworks_own_recipe_under_a_bf16_plan_1():
    # Plan 1 is bf16, so it has no recipe of its own to swap; plan 2's delayed scaling, which torchao
    # float8 lacks, is asked as tensorwise all the same (sp-plan --framework torchtitan ranks it so).
    from sp_planner.present.expressible import framework_flags

    result, (bf16, fp8) = _two_plan_result("bf16", "fp8")
    found = framework_flags("torchtitan", _titan_request(bf16.plan, given=False), result)
    assert (found.rank, found.estimate) == (2, fp8) and found.estimate.plan.fp8_recipe == "delayed"
    assert found.refusal is not None and found.refusal.startswith("ulysses ")
    assert 'recipe_name = "tensorwise"' in found.flags.text and found.flags.notes[-1] == OWN_RECIPE_NOTE
    # A recipe the user gave is the plans' own: torchtitan refuses delayed, and no plan is left.
    given = framework_flags("torchtitan", _titan_request(bf16.plan, given=True), result)
    assert (given.flags, given.rank, given.estimate, given.refusal) == (None, None, None, found.refusal)


def test_a_bf16_fallback_under_an_fp8_plan_1_gets_no_recipe_note():
    from sp_planner.present.expressible import framework_flags

    result, (fp8, bf16) = _two_plan_result("fp8", "bf16")
    found = framework_flags("torchtitan", _titan_request(fp8.plan, given=False), result)
    assert (found.rank, found.estimate) == (2, bf16)
    assert "float8" not in found.flags.text and OWN_RECIPE_NOTE not in found.flags.notes


def test_flags_that_express_plan_1_are_its_own_recipe_flags():
    from sp_planner.flags.own_recipe import own_recipe_flags
    from sp_planner.present.expressible import framework_flags

    result, (bf16, fp8) = _two_plan_result("bf16", "fp8")
    request = _titan_request(fp8.plan, given=False)
    found = framework_flags("torchtitan", request, result)
    assert found.model_dump() == {"flags": own_recipe_flags("torchtitan", request).model_dump(),
                                  "refusal": None, "rank": None, "estimate": None}
    assert found.flags.notes[-1] == OWN_RECIPE_NOTE
