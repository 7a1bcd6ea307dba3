"""The rank groups a simulated step's data-parallel collectives run over, slices of the one layout.

HSDP's shard and replicate groups (cost.fsdp; layout.HSDP_GROUPS, as the plan file lists them) and its expert shard
groups: each one call of layout.groups_over on the plan's axes, ranks ascending.
"""

from __future__ import annotations

import numpy as np

from sp_planner.layout import DP_SHARD_CP_AXES, groups_over
from sp_planner.plan import ParallelPlan


def shard_and_replicate_groups(plan: ParallelPlan) -> tuple[np.ndarray, np.ndarray]:
    """HSDP's groups (cost.fsdp), as the plan file lists them (layout.HSDP_GROUPS): the shard groups
    of dp_shard x cp and the replicate groups across them (the dp-cp groups and groups of one rank
    without replicas)."""
    return groups_over(plan, DP_SHARD_CP_AXES), groups_over(plan, ("dp_replicate",))


def expert_shard_groups(plan: ParallelPlan) -> np.ndarray:
    """HSDP's expert shard groups (cost.fsdp.expert_shard_size; layout.HSDP_GROUPS edp_shard): runs
    of edp / dp_replicate consecutive members of each expert-data-parallel group (Megatron's
    intra-partial expert groups, parallel_state.create_hierarchical_groups level 0). Their
    replicate groups are shard_and_replicate_groups' (the same ranks, cost.fsdp)."""
    return groups_over(plan, ("edp_shard",))
