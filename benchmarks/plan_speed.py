"""How fast the whole-space search runs: candidates and microseconds per candidate, 8 .. 4096 GPUs.

Run: .venv/bin/python benchmarks/plan_speed.py   (target: 4096 GPUs in under 1 s in-process)
"""

from __future__ import annotations

import time

from sp_planner.catalog import load_hardware, load_model
from sp_planner.search import search
from sp_planner.specs import Workload

CLUSTERS = [(1, 8), (2, 8), (8, 8), (32, 8), (128, 8), (512, 8)]


def main() -> None:
    model, hardware = load_model("Llama-3-8B"), load_hardware("H100-SXM")
    workload = Workload(seq_len=131072, global_batch=512)
    search(model, hardware, workload, num_nodes=1, gpus_per_node=8)  # warm imports and caches
    print(f"{'GPUs':>6} {'candidates':>11} {'fit':>7} {'seconds':>8} {'us/candidate':>13}")
    for nodes, per_node in CLUSTERS:
        start = time.perf_counter()
        result = search(model, hardware, workload, num_nodes=nodes, gpus_per_node=per_node)
        elapsed = time.perf_counter() - start
        n = result.candidates_evaluated
        fit = int(result.frame["fits"].sum())
        print(f"{nodes * per_node:>6} {n:>11} {fit:>7} {elapsed:>8.3f} {1e6 * elapsed / n:>13.2f}")


if __name__ == "__main__":
    main()
