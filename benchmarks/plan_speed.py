"""How fast the whole-space search runs: candidates and microseconds per candidate, 8 .. 4096 GPUs,
then a large Mixture-of-Experts question (sp-plan --model qwen3-235b-a22b --hardware h100 --nodes 128
--seq-len 32k: the expert axes multiply the candidates).

Run: .venv/bin/python benchmarks/plan_speed.py   (target: 4096 GPUs in under 1 s in-process)
"""

from __future__ import annotations

import time

from sp_planner.catalog import load_hardware, load_model
from sp_planner.search import search
from sp_planner.specs import Workload
from sp_planner.specs.batch import default_global_batch

CLUSTERS = [(1, 8), (2, 8), (8, 8), (32, 8), (128, 8), (512, 8)]
MOE_MODEL, MOE_NODES, MOE_SEQ_LEN = "Qwen3-235B-A22B", 128, 32768


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
    moe = load_model(MOE_MODEL)
    world = MOE_NODES * 8
    workload = Workload(seq_len=MOE_SEQ_LEN, global_batch=default_global_batch(MOE_SEQ_LEN, world), causal=True)
    start = time.perf_counter()
    result = search(moe, hardware, workload, num_nodes=MOE_NODES, gpus_per_node=8, top_k=3)
    elapsed = time.perf_counter() - start
    n = result.candidates_evaluated
    print(f"{MOE_MODEL} on {world} GPUs: {n} candidates, {elapsed:.3f} s, {1e6 * elapsed / n:.2f} us/candidate")


if __name__ == "__main__":
    main()
