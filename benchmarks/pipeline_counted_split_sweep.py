"""The analytic step against the simulated one on interleaved pipelines of Megatron's counted split
(--account-for-embedding/loss-in-pipeline-split: the embedding and the loss each in a layer's
place, so the first stage's chunk 0 and the last stage's last chunk hold a layer fewer;
pipeline_chunks.chunk_layer_counts), the split the search takes where the even one is invalid.

Run: .venv/bin/python benchmarks/pipeline_counted_split_sweep.py [-v]
On H100 and L40S, tp 1, dp 8, one node of 8 a stage: Qwen2.5-14B (48 + 2 = 50 over pp 5, vpp 2
and 5), Qwen2.5-7B (28 + 2 = 30 over pp 3, vpp 2 and 5; over pp 5, vpp 2 and 3; over pp 15, vpp
2: the end stages' end chunks hold no decoder layer) and Llama-2-13B (40 + 2 = 42 over pp 3, vpp 2
and 7); ZeRO-0 to 3, 512 and 2048 tokens, pp and 2 pp micro-batches. 288 plans, about a
minute. Prints max/mean |analytic/sim - 1| per hardware, ZeRO stage and model, and the worst plans.
"""

from __future__ import annotations

import itertools
import sys

from sim_agreement import collect, print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

DP, TP = 8, 1
# (model, pp) -> the virtual stages per rank that divide its (num_layers + 2) / pp.
SHAPES = {("Qwen2.5-14B", 5): (2, 5), ("Qwen2.5-7B", 3): (2, 5), ("Qwen2.5-7B", 5): (2, 3),
          ("Qwen2.5-7B", 15): (2,), ("Llama-2-13B", 3): (2, 7)}


def sweep(hardware=("H100", "L40S"), seqs=(512, 2048), zeros=(0, 1, 2, 3), groups=(1, 2)):
    for hw, ((name, pp), vpps) in itertools.product(hardware, SHAPES.items()):
        model, profile = load_model(name), load_hardware(hw)
        per_stage = (model.num_layers + 2) // pp
        for vpp, zero, seq, g in itertools.product(vpps, zeros, seqs, groups):
            plan = ParallelPlan(dp=DP, pp=pp, vpp=vpp, tp=TP, zero=zero, first_stage_layers=per_stage - 1,
                                last_stage_layers=per_stage - 1)
            diff = step_diff_percent(model, profile, Workload(seq_len=seq, global_batch=g * pp * DP), plan,
                                     nodes=pp)  # one node of 8 GPUs a stage: dp 8
            if diff is not None:
                yield dict(hw=hw, model=name, pp=pp, vpp=vpp, zero=zero, seq=seq, m=g * pp, diff=diff)


def main() -> None:
    rows = collect(sweep(), "-v" in sys.argv)
    print_summary(rows, ("hw", "zero", "model"), lambda r: (r["hw"], r["zero"], r["model"]), worst=8)


if __name__ == "__main__":
    main()
