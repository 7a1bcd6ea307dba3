"""How long the simulator takes for one plan, from 8 to 4096 GPUs (target: under 2 s at 4096).

Run: .venv/bin/python benchmarks/sim_speed.py
Prints, per cluster size: wall seconds of simulate() (best of 3), flows in the largest phase,
timeline events, and the simulated vs analytic step time.
"""

from __future__ import annotations

import time

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.sim import simulate
from sp_planner.specs.workload import Workload

CASES = [
    # (model, hardware, nodes, seq_len, global_batch, plan)
    ("llama3-8b", "h100-sxm", 1, 131072, 8, ParallelPlan(dp=1, ulysses=8)),
    ("llama3-8b", "h100-sxm", 16, 131072, 64, ParallelPlan(dp=8, ulysses=8, ring=2)),
    ("llama3-70b", "h100-sxm", 128, 131072, 256, ParallelPlan(dp=8, pp=4, tp=8, ulysses=1, ring=4)),
    ("llama3-70b", "h100-sxm", 512, 131072, 256, ParallelPlan(dp=16, pp=4, tp=8, ulysses=1, ring=8)),
    ("llama3-70b", "h100-sxm", 512, 262144, 64, ParallelPlan(dp=8, pp=8, tp=8, ulysses=8, ring=1)),
    # Interleaved pipeline, expert parallelism, ZeRO-3 over all 4,096 ranks.
    ("llama3-70b", "h100-sxm", 512, 131072, 256, ParallelPlan(dp=16, pp=4, vpp=4, tp=8, ring=8)),
    ("qwen3-235b-a22b", "h100-sxm", 512, 32768, 1024, ParallelPlan(dp=32, pp=2, tp=4, ulysses=4, ring=4, ep=16)),
    ("llama3-70b", "h100-sxm", 512, 131072, 512, ParallelPlan(dp=64, ulysses=8, ring=8, zero=3)),
]


def main() -> None:
    print(f"{'GPUs':>5} {'model':>11} {'plan':>34} {'sim s':>7} {'flows':>7} {'events':>7} "
          f"{'step sim':>9} {'analytic':>9}")
    for model_name, hw_name, nodes, seq_len, batch, plan in CASES:
        model, hw = load_model(model_name), load_hardware(hw_name)
        workload = Workload(seq_len=seq_len, global_batch=batch)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = simulate(model, hw, workload, plan, num_nodes=nodes, gpus_per_node=hw.gpus_per_node)
            best = min(best, time.perf_counter() - start)
        desc = f"dp{plan.dp} pp{plan.pp} tp{plan.tp} u{plan.ulysses} r{plan.ring} m{result.num_micro_batches}"
        desc += f" v{plan.vpp}" * (plan.vpp > 1) + f" ep{plan.ep}" * (plan.ep > 1) + f" z{plan.zero}" * (plan.zero != 1)
        flows = max(p.num_flows for p in result.phases)
        events = len(result.events) + len(result.detail_events)
        print(f"{plan.world_size:>5} {model_name:>11} {desc:>34} {best:>7.3f} {flows:>7} {events:>7} "
              f"{result.step_time_s:>8.2f}s {result.analytic_step_time_s:>8.2f}s")


if __name__ == "__main__":
    main()
