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


@pytest.mark.parametrize("plan", [
    ParallelPlan(tp=2, dp=8, ep=4, zero=3, dp_replicate=2),
    ParallelPlan(tp=2, ulysses=2, ring=2, dp=4, pp=2, ep=2, etp=2, zero=3, dp_replicate=2),
    ParallelPlan(dp=12, ring=2, ep=2, zero=1, dp_replicate=3),
], ids=["tp2-dp8-ep4-r2", "usp-pp2-etp2-r2", "ring2-dp12-r3"])
def test_hsdp_groups_equal_megatron_partial_data_parallel_groups(plan):
    # parallel_state.py (Megatron-LM d98e8a6, initialize_model_parallel) cuts each dp-cp group of
    # the dense RankGenerator into num_distributed_optimizer_instances = dp_replicate contiguous
    # slices (the intra-partial groups: dp_shard_cp), the ranks at one position across slices the
    # inter-partial ones (dp_replicate); the expert generator's dp groups likewise through
    # create_hierarchical_groups([edp / R, R]) (lines 378-434, 1447-1497): edp_shard, edp_replicate.
    ours, r = rank_groups(plan), plan.dp_replicate
    dense = RankGenerator(tp=plan.tp, ep=1, dp=plan.dp, pp=plan.pp, cp=plan.cp, order=ORDER)
    expert = RankGenerator(tp=plan.etp, ep=plan.ep, dp=plan.edp, pp=plan.pp, cp=1, order=ORDER)
    for (shard, replicate), groups in [(("dp_shard_cp", "dp_replicate"), dense.get_ranks("dp-cp")),
                                       (("edp_shard", "edp_replicate"), expert.get_ranks("dp"))]:
        size = len(groups[0]) // r
        assert _sorted(ours[shard]) == _sorted(g[i * size:(i + 1) * size] for g in groups for i in range(r))
        assert _sorted(ours[replicate]) == _sorted(g[j::size] for g in groups for j in range(size))
