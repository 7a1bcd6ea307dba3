"""The analytic step against the simulated one for one plan, and the summary table the pipeline
sweeps (pipeline_zero_sweep.py, pipeline_zero01_split_sweep.py, pipeline_pp8_sweep.py,
pipeline_vpp_sweep.py, pipeline_fsdp2_sweep.py) print from their rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np

from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.search import evaluate
from sp_planner.sim import simulate

NODES, GPUS_PER_NODE = 8, 8


def step_diff_percent(model, hardware, workload, plan, runtime=MEGATRON_RUNTIME, nodes: int = NODES, *,
                      before_ceiling: bool = False) -> float | None:
    """100 x (analytic / simulated step - 1) on `nodes` nodes of 8 GPUs under the framework's
    `runtime` (cost.runtime; Megatron's by default); None where the simulator refuses the plan (a
    split the chunks do not divide). `before_ceiling`: both steps before the MFU ceiling
    (cost.mfu_ceiling), which both sides stretch to alike and which hides what differs below it."""
    try:
        sim = simulate(model, hardware, workload, plan, num_nodes=nodes, gpus_per_node=GPUS_PER_NODE,
                       detail=False, runtime=runtime)
    except ValueError:
        return None
    est = evaluate(model, hardware, workload, plan, num_nodes=nodes, gpus_per_node=GPUS_PER_NODE, runtime=runtime)
    est_s, sim_s = est.step_time_s, sim.step_time_s
    if before_ceiling:
        est_s, sim_s = est_s - est.time.mfu_ceiling_s, sim_s - sim.critical_path_by_kind_s["mfu_ceiling"]
    return 100 * (est_s / sim_s - 1)


def collect(rows: Iterable[dict], verbose: bool) -> list[dict]:
    """A sweep's rows as a list, each printed as it comes with -v (verbose)."""
    out = []
    for row in rows:
        out.append(row)
        if verbose:
            print(row, flush=True)
    return out


def print_summary(rows: list[dict], names: tuple[str, ...], group_of: Callable[[dict], tuple], worst: int) -> None:
    """Max and mean |diff| per group (`group_of` a row's key, one column per name), over all rows,
    and the `worst` rows."""
    groups = defaultdict(list)
    for r in rows:
        groups[group_of(r)].append(abs(r["diff"]))
    print(" ".join(f"{name:>6}" for name in names) + f" {'plans':>5} {'max %':>6} {'mean %':>6}")
    for key, diffs in sorted(groups.items()):
        print(" ".join(f"{part:>6}" for part in key) + f" {len(diffs):>5} {max(diffs):>6.2f} {np.mean(diffs):>6.2f}")
    every = [abs(r["diff"]) for r in rows]
    print(f"all {len(every)} plans: max {max(every):.2f}%, mean {np.mean(every):.2f}%")
    for r in sorted(rows, key=lambda r: -abs(r["diff"]))[:worst]:
        print(r)
