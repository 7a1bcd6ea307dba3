"""The analytic step against the simulated one on interleaved ZeRO-2/3 pipelines near the point
where the first stage starts to pace (cost.pipeline_path; docs/cost-model.md, Overlap).

Run: .venv/bin/python benchmarks/pipeline_zero_sweep.py
Llama-3-8B on 64 L40S (8 nodes), pp 4: 256-2048 tokens, tp 1/2/4, ZeRO-2/3, vpp 2/4, even and
uneven first/last splits, 4 and 8 micro-batches (336 plans, about a minute). Prints max and mean
|analytic / simulated - 1| per ZeRO stage and split, and the worst plans.
"""

from __future__ import annotations

import itertools

from sim_agreement import print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

MODEL, L40S = load_model("Llama-3-8B"), load_hardware("L40S")
PP, GPUS = 4, 64
SPLITS = (None, (12, 8), (12, 4), (4, 12))  # first/last stage layers; None: 8 each


def sweep():
    for seq, tp, zero, vpp, split, m in itertools.product((256, 512, 1024, 2048), (1, 2, 4), (2, 3), (2, 4),
                                                          SPLITS, (4, 8)):
        dp = GPUS // (PP * tp)
        layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
        try:
            plan = ParallelPlan(dp=dp, pp=PP, vpp=vpp, tp=tp, zero=zero, **layers)
        except ValueError:
            continue
        # None: a split the chunks do not divide (vpp 4 with 6-layer middle stages).
        diff = step_diff_percent(MODEL, L40S, Workload(seq_len=seq, global_batch=m * dp), plan)
        if diff is not None:
            yield dict(seq=seq, tp=tp, zero=zero, vpp=vpp, split=split, m=m, diff=diff)


def main() -> None:
    print_summary(list(sweep()), ("zero", "split"),
                  lambda r: (r["zero"], "even" if r["split"] is None else "%d/%d" % r["split"]), worst=5)


if __name__ == "__main__":
    main()
