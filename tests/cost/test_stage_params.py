"""Each stage's own parameters (cost.stage_params): its MoE layers those Megatron places on it."""

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.buckets import stage_layouts
from sp_planner.cost.params import stage_params_per_rank
from sp_planner.cost.stage_params import (
    dp_lightest_middle_stage,
    dp_ridden_middle_stage,
    dp_ridden_middle_stages,
    stage_moe_counts,
    stage_moe_flags,
    stage_params,
)
from sp_planner.pipeline import stage_layers
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates

DSV3, MAVERICK = load_model("DeepSeek-V3"), load_model("Llama-4-Maverick-17B-128E")
DSV3_PLAN = ParallelPlan(tp=2, pp=16, dp=8, ep=16, first_stage_layers=4, last_stage_layers=1)
MAVERICK_PLAN = ParallelPlan(tp=1, pp=8, vpp=2, dp=16, ep=16)


def _own(model, plan):
    stages = stage_layers(model.num_layers, plan.pp, plan.first_stage_layers or 0, plan.last_stage_layers or 0)
    c = Candidates.of_plan(plan)
    return stages, stage_params(model, plan.tp, plan.pp, plan.ep, plan.etp, stages,
                                stage_moe_counts(model, 4096, c, stages))


def test_deepseek_v3s_first_stage_holds_one_moe_layers_experts():
    stages, own = _own(DSV3, DSV3_PLAN)
    assert [int(v) for v in stages] == [4, 4, 1]
    # Layers 0-2 dense, 3 MoE: 1 layer of 256 routed experts (11,274,289,152) over ep 16, not
    # 4 x 58/61 of them.
    assert float(own.experts[0][0]) == 11_274_289_152 / 16
    # Its other parameters at tp 2: 4 layers' MLA (187,107,328, of which the down projections and
    # latent norms, 7168 x (1536 + 576) + 1536 + 512 = 15,140,864, whole and the rest / 2) and norms
    # (14,336), 3 dense MLPs (3 x 7168 x 18432 / 2), the MoE layer's shared expert
    # (3 x 7168 x 2048 / 2) and router (7168 x 256), the embedding (129,280 x 7168 / 2).
    dense = (4 * ((187_107_328 - 15_140_864) / 2 + 15_140_864 + 14_336) + 3 * 3 * 7168 * 18432 / 2
             + 3 * 7168 * 2048 / 2 + 7168 * 256 + 129_280 * 7168 / 2)
    assert float(own.params[0][0] - own.experts[0][0]) == pytest.approx(dense, rel=1e-12)
    assert float(np.ravel(own.root[0])[0]) == pytest.approx(129_280 * 7168 / 2, rel=1e-12)
    # The middle stage: 4 MoE layers' experts.
    assert float(own.experts[1][0]) == 4 * 11_274_289_152 / 16


def test_a_model_of_one_kind_keeps_the_average_to_the_bit():
    model = load_model("Qwen3-30B-A3B")
    plan = ParallelPlan(tp=2, pp=4, dp=4, ep=4)
    stages, own = _own(model, plan)
    first, last = stage_params_per_rank(model, plan.tp, plan.pp, stages, plan.ep, plan.etp)
    assert float(np.ravel(own.params[0])[0]) == float(first) and float(np.ravel(own.params[2])[0]) == float(last)


def test_maverick_interleaved_stage_1_holds_4_moe_layers():
    # pp 8, vpp 2: stage 1 holds layers 3-5 and 27-29, MoE every 2nd layer (1, 3, 5, ...): 4 of 6
    # (a contiguous count gives 3).
    stages, _ = _own(MAVERICK, MAVERICK_PLAN)
    moe = stage_moe_counts(MAVERICK, 4096, Candidates.of_plan(MAVERICK_PLAN), stages)
    assert [float(v[0]) for v in moe] == [2, 4, 4]  # the last stage: layers 21-23 and 45-47
    assert stage_moe_flags(MAVERICK, 8, 2, 0, 0, 1) == (True, False, True) * 2


@pytest.mark.parametrize("zero", [1, 3])
@pytest.mark.parametrize(("model", "plan"), [(DSV3, DSV3_PLAN), (MAVERICK, MAVERICK_PLAN)])
def test_each_stages_calls_carry_its_own_parameters(model, plan, zero):
    # The buckets (FSDP units) the analytic model counts and the simulator times hold the stage's
    # own dense and expert parameters (within 1e-9).
    stages, own = _own(model, plan)
    for at, stage in enumerate((0, 1, plan.pp - 1)):
        moe = stage_moe_flags(model, plan.pp, plan.vpp, plan.first_stage_layers or 0, plan.last_stage_layers or 0,
                              stage)
        dense, expert = stage_layouts(model, tp=plan.tp, ep=plan.ep, etp=plan.etp, layers=len(moe),
                                      single_stage=False, dp=plan.dp, zero=zero, first_stage=stage == 0,
                                      vpp=plan.vpp, last_stage=stage == plan.pp - 1, moe=moe)
        total = [sum(layout.head) + sum(map(sum, layout.layers)) + sum(layout.tail) for layout in (dense, expert)]
        experts = float(np.ravel(own.experts[at])[0])
        assert total == pytest.approx([float(np.ravel(own.params[at])[0]) - experts, experts], rel=1e-9)


def test_the_middle_stage_whose_calls_stand_for_the_middle_ones_holds_the_most_moe_layers():
    # DeepSeek-V3 (3 dense layers first) over pp 16 x vpp 2 at 3 / 2: stage 1's chunk 0 is virtual
    # stage 1, layers 1-2 (dense), every later middle stage 4 MoE layers; rank 2 the first of them.
    from sp_planner.cost.stage_params import dp_middle_stage
    model = load_model("DeepSeek-V3")
    assert [sum(stage_moe_flags(model, 16, 2, 3, 2, s)) for s in (1, 2, 14)] == [2, 4, 4]
    assert dp_middle_stage(model, 16, 2, 3, 2) == (2, 4)
    # Without interleaving stage 1 holds 4 MoE layers like the others: it stands for them.
    assert dp_middle_stage(model, 16, 1, 4, 1) == (1, 4)
    # Layers alike: stage 1 by rule.
    assert dp_middle_stage(load_model("Llama-3-8B"), 8, 2, 4, 4) == (1, -1)


def test_the_lightest_middle_stage_and_the_middle_stages_mean_share_towards_it():
    # Maverick (MoE on odd layers), 3 layers a chunk: stages 1, 3, 5 hold layers 3-5, 27-29, ... (4
    # MoE layers at pp 8 x vpp 2), stages 2, 4, 6 layers 6-8, 30-32 (2): the mean 3 halfway. pp 4 x
    # vpp 4: 8 and 4. 6 layers a chunk (pp 4 x vpp 2): every middle stage alike. DeepSeek-V3 over pp 8
    # x vpp 3 at 7 / 6: stage 1 holds 2 dense layers (6 MoE), the other five 8: (8 - 46/6) / 2 = 1/6.
    assert dp_lightest_middle_stage(MAVERICK, 8, 2, 0, 0) == (2, 2, 0.5)
    assert dp_lightest_middle_stage(MAVERICK, 4, 4, 0, 0) == (2, 4, 0.5)
    assert dp_lightest_middle_stage(MAVERICK, 4, 2, 0, 0) == (1, -1, 0.0)
    rank, moe, share = dp_lightest_middle_stage(DSV3, 8, 3, 7, 6)
    assert (rank, moe) == (1, 6) and share == pytest.approx(1 / 6)
    assert dp_lightest_middle_stage(load_model("Llama-3-8B"), 8, 2, 0, 0) == (1, -1, 0.0)


def test_the_ridden_middle_stage_is_the_highest_of_the_heaviest():
    # Maverick, 3 layers a chunk: pp 4 x vpp 4 stage 1 holds 8 MoE layers, stage 2 4: rank 1; pp 8
    # x vpp 2 stages 1, 3, 5 hold 4, stages 2, 4, 6 hold 2: rank 5 (the last middle one, 6, is light).
    # DeepSeek-V3 over pp 8 x vpp 3 at 7 / 6: stages 2-6 hold 8, stage 1 6: the last middle one.
    assert dp_ridden_middle_stage(MAVERICK, 4, 4, 0, 0) == (1,)
    assert dp_ridden_middle_stage(MAVERICK, 8, 2, 0, 0) == (5,)
    assert dp_ridden_middle_stage(DSV3, 8, 3, 7, 6) == (6,)
    # Middle stages alike, or layers alike: the last middle one (pp - 2).
    assert dp_ridden_middle_stage(MAVERICK, 4, 2, 0, 0) == (2,)
    assert dp_ridden_middle_stage(load_model("Llama-3-8B"), 8, 2, 0, 0) == (6,)
    assert dp_ridden_middle_stages(MAVERICK, ParallelPlan(dp=32, pp=4, vpp=4, ep=8)).tolist() == [1]
    assert dp_ridden_middle_stages(load_model("Llama-3-8B"), ParallelPlan(dp=8, pp=8, vpp=2)).tolist() == [6]
