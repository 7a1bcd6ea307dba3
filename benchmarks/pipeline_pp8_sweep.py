"""The analytic step against the simulated one on pp 8 pipelines with even and uneven splits.

Run: .venv/bin/python benchmarks/pipeline_pp8_sweep.py
Llama-3-8B on 64 H100 (8 nodes), pp 8, tp 1 (dp 8), vpp 1/2, ZeRO-0 to 3, 512 and 2048 tokens,
2, 4 and 8 micro-batches; the even split (4 layers a stage) and 6/4/2 and 2/4/6 (first/middle/
last stage layers). Prints max/mean |analytic/sim - 1| per vpp, ZeRO stage and split.
"""

from __future__ import annotations

import itertools
import sys

from sim_agreement import collect, print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

MODEL, H100 = load_model("Llama-3-8B"), load_hardware("H100")
PP, TP, DP = 8, 1, 8
SPLITS = (None, (6, 2), (2, 6))  # first/last stage layers; None: 4 each


def sweep(seqs=(512, 2048), splits=SPLITS):
    for seq, vpp, zero, split, m in itertools.product(seqs, (1, 2), (0, 1, 2, 3), splits, (2, 4, 8)):
        layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
        plan = ParallelPlan(dp=DP, pp=PP, vpp=vpp, tp=TP, zero=zero, **layers)
        diff = step_diff_percent(MODEL, H100, Workload(seq_len=seq, global_batch=m * DP), plan)
        if diff is not None:
            yield dict(seq=seq, vpp=vpp, zero=zero, split=split, m=m, diff=diff)


def main() -> None:
    rows = collect(sweep(), "-v" in sys.argv)
    print_summary(rows, ("vpp", "zero", "split"),
                  lambda r: (r["vpp"], r["zero"], "even" if r["split"] is None else "%d/%d" % r["split"]), worst=8)


if __name__ == "__main__":
    main()
