"""One plan's analytic and simulated steps without the MFU ceiling (sp_planner.cost.mfu_ceiling):
the figure the cost model's agreement tests compare."""

from __future__ import annotations

from typing import NamedTuple

from sp_planner.plan import ParallelPlan
from sp_planner.catalog import load_hardware, load_model
from sp_planner.estimate import PlanEstimate
from sp_planner.search import evaluate
from sp_planner.sim import SimResult, simulate
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


class Uncapped(NamedTuple):
    est: PlanEstimate
    sim: SimResult
    est_s: float  # the analytic step less its mfu_ceiling_s
    sim_s: float  # the simulated step less its mfu_ceiling on the critical path


def uncapped_steps(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
                   num_nodes: int, gpus_per_node: int = 8) -> Uncapped:
    est = evaluate(model, hardware, workload, plan, num_nodes=num_nodes, gpus_per_node=gpus_per_node)
    sim = simulate(model, hardware, workload, plan, num_nodes=num_nodes, gpus_per_node=gpus_per_node, detail=False)
    return Uncapped(est, sim, est.step_time_s - est.time.mfu_ceiling_s,
                    sim.step_time_s - sim.critical_path_by_kind_s["mfu_ceiling"])


def deepseek_v3_uncapped(pp: int, vpp: int, split: tuple[int, int], zero: int) -> Uncapped:
    """uncapped_steps of DeepSeek-V3 at 4K tokens, 1,024 sequences, on 128 x 8 H100s: tp 2, ring 2,
    ep 8, pp x vpp with `split` (first, last stage's layers), dp the rest, ZeRO `zero`."""
    plan = ParallelPlan(tp=2, pp=pp, vpp=vpp, dp=256 // pp, ring=2, ep=8, zero=zero, first_stage_layers=split[0],
                        last_stage_layers=split[1])
    return uncapped_steps(load_model("DeepSeek-V3"), load_hardware("H100"), Workload(seq_len=4096, global_batch=1024),
                          plan, num_nodes=128)
