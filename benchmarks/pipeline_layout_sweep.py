"""The analytic step against the simulated one on pipeline layouts that Megatron runs only as
--pipeline-model-parallel-layout (pipeline.SPLIT_LAYOUT): pp 2 with virtual stages, middle stages
not divisible by vpp, end stages shorter than vpp - 1 of the middle stages' chunks (their full
chunks then their own ceil or floor, pipeline_chunks.chunk_shape).

Run: .venv/bin/python benchmarks/pipeline_layout_sweep.py [-v]
On 64 H100 (8 nodes), tp 1: Llama-3-8B (32 layers) and Qwen2.5-14B (48 layers); ZeRO-0 to 3,
2048 tokens, m = pp and 2 pp micro-batches. Prints max/mean |analytic/sim - 1| per model, vpp and
pp, and the worst plans.
"""

from __future__ import annotations

import itertools
import sys

from sim_agreement import collect, print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

GPUS, TP = 64, 1
# (model, vpp, pp) -> first/last stage layers, each a split the --decoder-first/last flags refuse.
SPLITS = {
    ("Llama-3-8B", 2, 2): ((16, 16), (18, 14), (15, 17)),  # pp 2: both, neither end divisible
    ("Llama-3-8B", 4, 2): ((12, 20), (14, 18)),
    ("Llama-3-8B", 2, 4): ((7, 7), (9, 5), (5, 9)),  # middle stages of 9 over 2 chunks
    ("Llama-3-8B", 4, 4): ((3, 13), (10, 6)),  # 3 < 3 chunks of 4: own ceil/floor; middle 8
    ("Llama-3-8B", 4, 8): ((2, 6), (5, 3)),  # middle stages of 4 / 4; ends below a chunk each
    ("Qwen2.5-14B", 3, 4): ((11, 11), (7, 13)),  # middle 13 / 14 over 3 chunks
    ("Qwen2.5-14B", 2, 8): ((5, 7), (3, 3)),  # middle 6 / 7
    ("Qwen2.5-14B", 4, 2): ((22, 26), (25, 23)),
}


def sweep(zeros=(0, 1, 2, 3), seq=2048, groups=(1, 2), hardware="H100"):
    profile = load_hardware(hardware)
    for (name, vpp, pp), splits in SPLITS.items():
        model, dp = load_model(name), GPUS // (pp * TP)
        for (first, last), zero, g in itertools.product(splits, zeros, groups):
            plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=TP, zero=zero, first_stage_layers=first,
                                last_stage_layers=last)
            diff = step_diff_percent(model, profile, Workload(seq_len=seq, global_batch=g * pp * dp), plan)
            if diff is not None:
                yield dict(model=name, vpp=vpp, pp=pp, split=(first, last), zero=zero, m=g * pp, diff=diff)


def main() -> None:
    rows = collect(sweep(), "-v" in sys.argv)
    print_summary(rows, ("model", "vpp", "pp"), lambda r: (r["model"][:8], r["vpp"], r["pp"]), worst=10)


if __name__ == "__main__":
    main()
