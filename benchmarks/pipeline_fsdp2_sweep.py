"""The analytic step against the simulated one on torchtitan's FSDP2 pipelines, whose stages sync
their gradients once a step (torch.distributed.pipelining; cost.fsdp.stage_synced).

Run: .venv/bin/python benchmarks/pipeline_fsdp2_sweep.py [-v]
Llama-3-8B on 64 L40S and 64 H100 (8 nodes), torchtitan's runtime: pp 4 (tp 1/4) and pp 8 (tp 1),
ZeRO-3 keeping the parameters after forward (torchtitan's default under PP, and its ZeRO-1/2) or
resharding them, vpp 1/2/4, the even split and 12/4 and 4/12 first/last stage layers at pp 4,
512 and 2048 tokens, 4 and 8 micro-batches a pipeline group. Prints max/mean |analytic/sim - 1|
per hardware, reshard and vpp, and the worst plans.
"""

from __future__ import annotations

import itertools
import sys

from sim_agreement import collect, print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import framework_runtime
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

MODEL, TITAN = load_model("Llama-3-8B"), framework_runtime("torchtitan")
SPLITS = (None, (12, 4), (4, 12))  # first/last stage layers at pp 4; None: even


def sweep():
    for hw, (pp, tp), reshard, vpp, split, seq, m in itertools.product(
            ("L40S", "H100"), ((4, 1), (4, 4), (8, 1)), (False, True), (1, 2, 4), SPLITS, (512, 2048), (4, 8)):
        if split is not None and pp != 4:
            continue
        dp = 64 // (pp * tp)
        layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
        try:
            plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=tp, zero=3, reshard_after_forward=reshard, **layers)
        except ValueError:
            continue
        micro_batches = m * pp if vpp > 1 else m  # whole groups of pp under the interleaved schedule
        diff = step_diff_percent(MODEL, load_hardware(hw), Workload(seq_len=seq, global_batch=micro_batches * dp),
                                 plan, runtime=TITAN)
        if diff is not None:
            yield dict(hw=hw, pp=pp, tp=tp, reshard=reshard, vpp=vpp, split=split, seq=seq, m=micro_batches, diff=diff)


def main() -> None:
    rows = collect(sweep(), "-v" in sys.argv)
    print_summary(rows, ("hw", "resh", "vpp"), lambda r: (r["hw"], int(r["reshard"]), r["vpp"]), worst=8)


if __name__ == "__main__":
    main()
