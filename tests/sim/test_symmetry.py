"""The symmetric shortcut (sim.symmetry) gives the same phases as solving every flow, and the
simulator agrees with the analytic model without contention at 16,384 GPUs too."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.layout import groups_over
from sp_planner.plan import ParallelPlan
from sp_planner.sim import flows, simulate
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.flows import run_phase
from sp_planner.sim.symmetry import cluster_period, phase_period
from sp_planner.specs.workload import Workload

from .conftest import GB, toy_hardware

# 8 nodes of 4 GPUs: pods of 2 nodes (rail-optimized, oversubscribed core), one pod, PCIe nodes,
# fat-tree with one NIC per two GPUs, and a last pod with fewer nodes (no symmetry).
CLUSTERS = {
    "pods": (dict(nodes_per_pod=2, oversubscription=2.0), None),
    "one_pod": (dict(nodes_per_pod=8), None),
    "pcie": (dict(intra_kind="pcie", intra_bw=32 * GB, nodes_per_pod=2, oversubscription=4.0), None),
    "fat_tree": (dict(topology="fat_tree", nodes_per_pod=4, oversubscription=3.0), 2),
    "partial_pod": (dict(nodes_per_pod=3, oversubscription=2.0), None),
}
PLANS = [ParallelPlan(dp=2, tp=2, ulysses=4, ring=2), ParallelPlan(dp=1, ulysses=8, ring=4),
         ParallelPlan(dp=4, pp=2, ulysses=2, ring=2), ParallelPlan(dp=32), ParallelPlan(dp=8, ulysses=4, ep=8)]
# (axis, algorithm, efficiency); an all-to-all over ring groups makes strided all-to-alls.
PHASES = [("ring", "p2p", "p2p"), ("ring", "ring", "all_gather"), ("ulysses", "all_to_all", "all_to_all"),
          ("dp", "ring", "reduce_scatter"), ("pp", "chain", "p2p"), ("ring", "all_to_all", "all_to_all"),
          ("ep", "all_to_all", "all_to_all"), ("edp", "ring", "reduce_scatter")]


def _every_flow(monkeypatch, args):
    """run_phase solving all flows (no symmetry found)."""
    with monkeypatch.context() as m:
        m.setattr(flows, "phase_period",
                  lambda cluster, groups, rotations: (cluster.world_size, np.arange(groups.shape[0])))
        return run_phase(*args)


@pytest.mark.parametrize("name", CLUSTERS)
def test_one_period_gives_the_phase_of_every_flow(name, monkeypatch):
    fabric, nics = CLUSTERS[name]
    cluster = build_cluster(toy_hardware(gpus_per_node=4, latency_s=1e-6, **fabric), 8, nics_per_node=nics)
    shortcuts = 0
    for plan in PLANS:
        for axis, algorithm, eff in PHASES:
            groups = groups_over(plan, (axis,))
            if groups.shape[1] == 1:
                continue
            args = (cluster, axis, groups, 3 * GB, algorithm, eff)
            fast = run_phase(*args)
            slow = _every_flow(monkeypatch, args)
            case = (plan, axis, algorithm)
            assert fast.duration_s == pytest.approx(slow.duration_s, rel=1e-12), case
            assert fast.achieved_bytes_per_s == pytest.approx(slow.achieved_bytes_per_s, rel=1e-12), case
            assert (fast.bottleneck, fast.num_flows, fast.num_groups, fast.crosses_nodes) == (
                slow.bottleneck, slow.num_flows, slow.num_groups, slow.crosses_nodes), case
            shortcuts += phase_period(cluster, groups, rotations=algorithm != "chain")[0] < cluster.world_size
    # The shortcut was taken (so the comparison means something), except where no shift is a symmetry.
    assert (shortcuts > 0) == (name != "partial_pod")


def test_periods():
    pods = build_cluster(toy_hardware(gpus_per_node=4, nodes_per_pod=2), 8)
    assert cluster_period(pods) == 8  # one pod of 2 nodes x 4 GPUs
    assert cluster_period(build_cluster(toy_hardware(gpus_per_node=4, nodes_per_pod=8), 8)) == 4
    assert cluster_period(build_cluster(toy_hardware(gpus_per_node=4, nodes_per_pod=3), 8)) == 32
    plan = ParallelPlan(dp=2, tp=2, ulysses=4, ring=2)  # ring groups: stride 8, span 16 ranks
    period, selected = phase_period(pods, groups_over(plan, ("ring",)), rotations=True)
    assert period == 16 and selected.tolist() == list(range(8))
    # A pipeline chain shifted past the end of the world wraps into a different chain.
    chain = groups_over(ParallelPlan(dp=16, pp=2), ("pp",))
    assert phase_period(pods, chain, rotations=False)[0] == 32
    assert phase_period(pods, chain, rotations=True)[0] == 8


def test_without_contention_the_simulator_matches_the_analytic_model_at_16k_gpus():
    # 2,048 nodes of H100 in pods of 32: tp inside a node; dp x cp rings and pipeline chains one rank
    # per node, each on its own NIC and rail; leaf uplinks as fast as the NICs below them.
    plan = ParallelPlan(tp=8, pp=8, dp=16, ulysses=4, ring=4)
    workload = Workload(seq_len=131072, global_batch=1024)
    result = simulate(load_model("Llama-3-70B"), load_hardware("H100-SXM"), workload, plan,
                      num_nodes=2048, gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.01)
    assert {p.bottleneck for p in result.phases} <= {"nvlink", "nic", "none"}


def test_at_131072_gpus_the_simulator_agrees_with_the_analytic_model():
    # The benchmark's plan: its dp x cp group is all 131,072 ranks, so every ZeRO-3 call pays
    # about 0.5 s of ring latency (NCCL's model: 114,688 NVLink hops and 16,383 network hops); both
    # models issue the same calls (cost.buckets), so they agree with the latencies in.
    plan = ParallelPlan(dp=128, ulysses=64, ring=16, zero=3)
    workload = Workload(seq_len=1 << 20, global_batch=16384)
    result = simulate(load_model("Llama-3.1-405B"), load_hardware("H100-SXM"), workload, plan, num_nodes=16384,
                      gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.01)
