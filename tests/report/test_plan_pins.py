"""report.plan_pins: what of a plan file's plan sp-report's search pins, so that its table holds the plan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile
from sp_planner.report.plan_pins import plan_choices, recorded_pins
from sp_planner.search import search
from sp_planner.search_columns import search_axes
from sp_planner.space import DEGREES, expand_candidates, with_expert_degrees
from sp_planner.specs import Workload

LLAMA = dict(model=load_model("llama3-8b"), hardware=load_hardware("a800"), num_nodes=2, gpus_per_node=8,
             workload=Workload(seq_len=128 * 1024, global_batch=16))


def _plan_file(**plan) -> PlanFile:
    return PlanFile(**LLAMA, plan=ParallelPlan(**plan))


def _reached(plan_file: PlanFile, pins) -> bool:
    """Whether the search's candidates of the plan's degrees under `pins` hold the plan itself."""
    plan, axes = plan_file.plan, search_axes(plan_file.model, plan_file.hardware)
    degrees = np.array([[getattr(plan, axis) for axis in DEGREES]], dtype=np.int64)
    c = expand_candidates(plan_file.workload, with_expert_degrees(degrees, axes.num_experts, pins), pins,
                          plan_file.gpus_per_node, axes=axes)
    return any(c.plan(i) == plan for i in range(len(c)))


def test_bf16_adam_moments_are_searched_with_the_zero_1_they_need():
    # As sp-plan pins them: the report must not rank bf16-moment plans at ZeRO 0, 2 or 3.
    assert plan_choices(ParallelPlan(adam_moments_bf16=True)).zero == 1
    assert plan_choices(ParallelPlan(zero=2)).zero is None


def test_a_plan_the_search_reaches_pins_nothing_more():
    # tp 1 x ulysses 8 x ring 2, and pp 16 x vpp 2 (2 layers a stage, 1 a chunk): searched as they are.
    for plan in (dict(ulysses=8, ring=2), dict(pp=16, vpp=2), dict(ring=16, cp_comm="allgather")):
        plan_file = _plan_file(**plan)
        assert recorded_pins(plan_file) == (plan_choices(plan_file.plan), {})


@pytest.mark.parametrize(("plan", "pinned"), [
    # Llama-3-8B's 32 layers over pp 4 split evenly (8 each); 10 / 6 is sp-plan's pinned split,
    # with or without the vpp 4 the search tries by itself (the split pins pp: check_split_pins).
    (dict(pp=4, ulysses=4, first_stage_layers=10, last_stage_layers=6),
     {"pp": 4, "first_stage_layers": 10, "last_stage_layers": 6}),
    (dict(pp=4, ulysses=4, vpp=4, first_stage_layers=10, last_stage_layers=6),
     {"pp": 4, "first_stage_layers": 10, "last_stage_layers": 6}),
    # The search runs causal rings zigzag, and all-gathers K/V on a pure ring only (space_variants).
    (dict(ulysses=8, ring=2, ring_layout="contiguous"), {"ring_layout": "contiguous"}),
    (dict(ulysses=2, ring=8, cp_comm="allgather"), {"cp_comm": "allgather"}),
    # Its HSDP replicates across the 2 nodes (dp 16 / 8 GPUs a node), and reshards after forward
    # there: dp_replicate 2 is searched, but not with reshard off, and dp_replicate 4 not at all.
    (dict(dp=16, zero=3, dp_replicate=2, reshard_after_forward=False), {"reshard_after_forward": False}),
    (dict(dp=16, zero=3, dp_replicate=4), {"dp_replicate": 4}),
    # Micro-batches 1, 2, 4, 8 (space_choices.MICRO_BATCH_CHOICES): 16 is a pin's.
    (dict(ulysses=16, micro_batch=16), {"micro_batch": 16}),
])
def test_what_the_search_would_not_reach_is_pinned_to_the_plans(plan, pinned):
    plan_file = _plan_file(**plan)
    assert not _reached(plan_file, plan_choices(plan_file.plan))
    pins, found = recorded_pins(plan_file)
    assert found == pinned
    assert pins == plan_choices(plan_file.plan).model_copy(update=pinned)
    assert _reached(plan_file, pins)


def test_a_split_the_search_derives_is_not_pinned():
    # DeepSeek-V3 over pp 16 as Megatron-Bridge's 4 / 1: the search's own split with one MTP depth
    # (pipeline.default_split), a pin without it (3 / 2 then).
    plan = ParallelPlan(dp=16, pp=16, ep=8, recompute="mla_up_proj", first_stage_layers=4, last_stage_layers=1)
    model = load_model("deepseek-v3")
    question = dict(hardware=load_hardware("b200"), workload=Workload(seq_len=4096, global_batch=4096),
                    num_nodes=32, gpus_per_node=8, plan=plan)
    with_mtp = PlanFile(model=model.model_copy(update={"mtp_layers": 1}), **question)
    assert recorded_pins(with_mtp)[1] == {}
    assert recorded_pins(PlanFile(model=model, **question))[1] == {"pp": 16, "first_stage_layers": 4,
                                                                     "last_stage_layers": 1}


def test_the_pinned_search_ranks_the_plan_among_plans_of_its_split():
    plan_file = _plan_file(pp=4, ulysses=4, first_stage_layers=10, last_stage_layers=6)
    pins, _ = recorded_pins(plan_file)
    frame = search(plan_file.model, plan_file.hardware, plan_file.workload, num_nodes=2, gpus_per_node=8,
                   pins=pins).frame
    assert set(zip(frame.pp, frame.first_stage_layers, frame.last_stage_layers)) == {(4, 10, 6)}
    mask = pd.Series(True, index=frame.index)
    for name, value in plan_file.plan.model_dump().items():
        if name != "vpp_group":  # empty in the frame: a candidate's is the group priced
            mask &= frame[name] == value
    assert mask.sum() == 1


def test_a_pinned_micro_batch_group_is_searched_pinned_with_its_vpp():
    # tp 2 x pp 4 x vpp 2 x dp 2 at 16 sequences: m 8, which Megatron runs in groups of 4 (the one
    # priced, which plan files record: no pin) or 8 (sp-plan --vpp-group 8: pinned, with vpp 2).
    plan = dict(dp=2, pp=4, vpp=2, tp=2)
    assert recorded_pins(_plan_file(**plan, vpp_group=4))[1] == {}
    pins, pinned = recorded_pins(_plan_file(**plan, vpp_group=8))
    assert pinned == {"vpp": 2, "vpp_group": 8} and (pins.vpp, pins.vpp_group) == (2, 8)
    assert _reached(_plan_file(**plan, vpp_group=8), pins)
