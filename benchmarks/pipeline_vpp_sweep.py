"""The analytic step against the simulated one on interleaved pipelines of vpp 3 and 4.

Run: .venv/bin/python benchmarks/pipeline_vpp_sweep.py [-v]
On 64 H100 and 64 L40S (8 nodes), tp 1: Llama-3-8B (32 layers) at vpp 4 and Qwen2.5-14B (48
layers) at vpp 3 and 4, pp 2/4/8, the even split where the chunks divide it and uneven first/last
stage layers; ZeRO-0 to 3, 512 and 2048 tokens, m = pp, 2 pp and 4 pp micro-batches (one, two
and four groups: Megatron's interleaved schedule runs groups of pp micro-batches and refuses a
last group of fewer than pp, megatron/core/pipeline_parallel/schedules.py lines 1160-1179 at
d98e8a6; plan rule "vpp"). 1,200 plans, about two minutes. Prints max/mean |analytic/sim - 1|
per hardware, vpp and pp, and the worst plans.
"""

from __future__ import annotations

import itertools
import sys

from sim_agreement import collect, print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

GPUS, TP = 64, 1
# (model, vpp, pp) -> first/last stage layers (each a multiple of vpp, the middle ones even over
# pp - 2 stages and a multiple of vpp too); None: the even split.
SPLITS = {
    ("Llama-3-8B", 4, 2): (None, (12, 20), (20, 12)),
    ("Llama-3-8B", 4, 4): (None, (4, 12), (12, 4)),
    ("Llama-3-8B", 4, 8): (None,),
    ("Qwen2.5-14B", 3, 2): (None, (18, 30), (30, 18)),
    ("Qwen2.5-14B", 3, 4): (None, (9, 15), (15, 9)),
    ("Qwen2.5-14B", 3, 8): (None, (3, 9), (9, 3)),
    ("Qwen2.5-14B", 4, 2): (None, (20, 28), (28, 20)),
    ("Qwen2.5-14B", 4, 4): (None, (8, 16), (16, 8)),
    ("Qwen2.5-14B", 4, 8): ((8, 16), (16, 8), (12, 12)),
}


def sweep(hardware=("H100", "L40S"), seqs=(512, 2048), zeros=(0, 1, 2, 3), groups=(1, 2, 4)):
    for hw, ((name, vpp, pp), splits) in itertools.product(hardware, SPLITS.items()):
        model, dp, profile = load_model(name), GPUS // (pp * TP), load_hardware(hw)
        for split, zero, seq, g in itertools.product(splits, zeros, seqs, groups):
            layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
            plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=TP, zero=zero, **layers)
            diff = step_diff_percent(model, profile, Workload(seq_len=seq, global_batch=g * pp * dp), plan)
            if diff is not None:
                yield dict(hw=hw, model=name, vpp=vpp, pp=pp, split=split, zero=zero, seq=seq, m=g * pp, diff=diff)


def main() -> None:
    rows = collect(sweep(), "-v" in sys.argv)
    print_summary(rows, ("hw", "vpp", "pp"), lambda r: (r["hw"], r["vpp"], r["pp"]), worst=10)


if __name__ == "__main__":
    main()
