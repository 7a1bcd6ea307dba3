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
