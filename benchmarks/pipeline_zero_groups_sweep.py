"""The analytic step against the simulated one over ZeRO 0-3 on plain and interleaved pipelines
whose micro-batches fill one group, overflow it by one, or run in groups of N (cost.pipeline_path,
cost.pipeline_sends.path_sends_s; docs/cost-model.md, Overlap).

Run: .venv/bin/python benchmarks/pipeline_zero_groups_sweep.py
Llama-3-8B at 4096 tokens on 64 H100 (8 nodes), tp 2: pp 2 and 4, vpp 1/2/4, m in {pp, pp + 1,
2 pp + 1, 9}, ZeRO 0-3 (84 plans, about a minute). Prints max and mean |analytic / simulated - 1|
per ZeRO stage and vpp, and the worst plans.
"""

from __future__ import annotations

import itertools

from sim_agreement import print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

MODEL, H100 = load_model("Llama-3-8B"), load_hardware("H100")
GPUS, TP = 64, 2


def sweep():
    for pp, zero, vpp in itertools.product((2, 4), (0, 1, 2, 3), (1, 2, 4)):
        dp = GPUS // (pp * TP)
        plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=TP, zero=zero)
        for m in sorted({pp, pp + 1, 2 * pp + 1, 9}):
            diff = step_diff_percent(MODEL, H100, Workload(seq_len=4096, global_batch=m * dp), plan)
            if diff is not None:
                yield dict(pp=pp, zero=zero, vpp=vpp, m=m, diff=diff)


def main() -> None:
    print_summary(list(sweep()), ("zero", "vpp"), lambda r: (r["zero"], r["vpp"]), worst=6)


if __name__ == "__main__":
    main()
