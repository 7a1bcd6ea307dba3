"""The analytic step against the simulated one on ZeRO-0/1 pipelines with even and uneven splits:
each stage syncs its own parameters once a step (Megatron's per-rank DDP buckets; one bucket on
every stage but the first), so the step ends on the stage whose finish plus its own DP tail is
latest (sim.pipeline._step_tail), not necessarily the first's; every stage steps its own optimizer,
and the step ends on the largest update (cost.grad_buffer.slowest_stage_step_bytes).

Run: .venv/bin/python benchmarks/pipeline_zero01_split_sweep.py
Llama-3-8B on 64 GPUs (8 nodes) of L40S and H100, tp 2, pp 2/4, vpp 1/2, ZeRO-0/1, 512 and 2048
tokens, 4 micro-batches, even and uneven first/last splits; and a middle-heavy split, Llama-3-70B
at pp 8 with 4 layers on the first and last stage (12 on each middle one, whose update is the
largest), 8 micro-batches (the simulator refuses its vpp 2). Prints max/mean |analytic/sim - 1|.
"""

from __future__ import annotations

import itertools

from sim_agreement import print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

# First/last stage layers by (model, pp); None: the even split.
SPLITS = {("Llama-3-8B", 2): (None, (12, 20), (20, 12)), ("Llama-3-8B", 4): (None, (4, 12), (12, 4)),
          ("Llama-3-70B", 8): ((4, 4),)}


def sweep():
    for hw, (name, pp), vpp, zero, seq in itertools.product(("L40S", "H100"), SPLITS, (1, 2), (0, 1), (512, 2048)):
        hardware, model = load_hardware(hw), load_model(name)
        for split in SPLITS[(name, pp)]:
            dp = 64 // (pp * 2)
            layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
            try:
                plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=2, zero=zero, **layers)
            except ValueError:
                continue
            diff = step_diff_percent(model, hardware, Workload(seq_len=seq, global_batch=max(4, pp) * dp), plan)
            if diff is not None:
                yield dict(hw=hw, pp=pp, vpp=vpp, zero=zero, seq=seq, split=split, diff=diff)


def _kind(split) -> str:
    return "even" if split is None else "middle" if split == (4, 4) else "uneven"


def main() -> None:
    print_summary(list(sweep()), ("hw", "zero", "split"),
                  lambda r: (r["hw"], r["zero"], _kind(r["split"])), worst=6)


if __name__ == "__main__":
    main()
