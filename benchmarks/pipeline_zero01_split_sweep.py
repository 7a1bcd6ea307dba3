"""The analytic step against the simulated one on ZeRO-0/1 pipelines with even and uneven splits:
each stage syncs its own parameters once a step (Megatron's per-rank DDP buckets; one bucket on
every stage but the first), so the step ends on the stage whose finish plus its own DP tail is
latest (sim.pipeline._step_tail), not necessarily the first's.

Run: .venv/bin/python benchmarks/pipeline_zero01_split_sweep.py
Llama-3-8B on 64 GPUs (8 nodes) of L40S and H100, tp 2, pp 2/4, vpp 1/2, ZeRO-0/1, 512 and 2048
tokens, 4 micro-batches, even and uneven first/last splits. Prints max/mean |analytic/sim - 1|.
"""

from __future__ import annotations

import itertools

from sim_agreement import print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

MODEL = load_model("Llama-3-8B")
SPLITS = {2: (None, (12, 20), (20, 12)), 4: (None, (4, 12), (12, 4))}  # first/last stage layers


def sweep():
    for hw, pp, vpp, zero, seq in itertools.product(("L40S", "H100"), (2, 4), (1, 2), (0, 1), (512, 2048)):
        hardware = load_hardware(hw)
        for split in SPLITS[pp]:
            dp = 64 // (pp * 2)
            layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
            try:
                plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=2, zero=zero, **layers)
            except ValueError:
                continue
            diff = step_diff_percent(MODEL, hardware, Workload(seq_len=seq, global_batch=4 * dp), plan)
            if diff is not None:
                yield dict(hw=hw, pp=pp, vpp=vpp, zero=zero, seq=seq, split=split, diff=diff)


def main() -> None:
    print_summary(list(sweep()), ("hw", "zero", "split"),
                  lambda r: (r["hw"], r["zero"], "even" if r["split"] is None else "uneven"), worst=6)


if __name__ == "__main__":
    main()
