"""The rank groups equal Megatron-Core's own: `RankGenerator` from the pip megatron-core package,
built as parallel_state.initialize_model_parallel builds it (order 'tp-cp-ep-dp-pp'), once for
the dense grid (tp, cp, dp, pp) and once for the expert grid (etp, ep, edp, pp)."""

import pytest

from megatron.core.parallel_state import RankGenerator
from sp_planner.layout import rank_groups
from sp_planner.plan import ParallelPlan

ORDER = "tp-cp-ep-dp-pp"  # megatron/core/parallel_state.py initialize_model_parallel default

PLANS = [
    ParallelPlan(tp=2, dp=4, pp=2, ep=4, etp=1),  # the reference's worked example (world 16)
    ParallelPlan(tp=2, ulysses=2, ring=2, dp=3, pp=2, ep=4, etp=2),  # world 48, EP folds over cp and dp
    ParallelPlan(tp=4, ulysses=2, dp=9, ep=8, etp=1),  # 72 GPUs: one GB200 NVL72 domain
    ParallelPlan(tp=1, ulysses=8, dp=9, ep=4, etp=2),
    ParallelPlan(tp=2, ring=3, dp=2, pp=3),  # dense
]


def _sorted(groups):
    return sorted(sorted(g) for g in groups)


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"tp{p.tp}u{p.ulysses}r{p.ring}dp{p.dp}pp{p.pp}ep{p.ep}etp{p.etp}"
                         )
def test_groups_equal_megatron_rank_generator(plan):
    ours = rank_groups(plan)
    dense = RankGenerator(tp=plan.tp, ep=1, dp=plan.dp, pp=plan.pp, cp=plan.cp, order=ORDER)
    expert = RankGenerator(tp=plan.etp, ep=plan.ep, dp=plan.edp, pp=plan.pp, cp=1, order=ORDER)
    for ours_name, generator, token in [("tp", dense, "tp"), ("cp", dense, "cp"), ("dp", dense, "dp"),
                                        ("pp", dense, "pp"), ("ep", expert, "ep"), ("etp", expert, "tp"),
                                        ("edp", expert, "dp"), ("pp", expert, "pp")]:
        assert _sorted(ours[ours_name]) == _sorted(generator.get_ranks(token)), (ours_name, token)
    # Sizes as Megatron derives them: EDP = world // (ETP*EP*PP).
    assert len(ours["edp"][0]) == plan.world_size // (plan.etp * plan.ep * plan.pp)
