"""The analytic step against the simulated one on ZeRO-0/1 pipelines whose middle stages do not
divide by vpp (a --pipeline-model-parallel-layout: vpp - 1 full chunks and a short end chunk,
pipeline_chunks.chunk_shape), and on mixed-kind pipelines whose middle stage with the most MoE
layers is not stage 1 (cost.stage_params.dp_middle_stage).

Run: .venv/bin/python benchmarks/pipeline_middle_chunks_sweep.py [--quick]
Llama-3-8B on 64 GPUs (8 nodes) of L40S and H100, pp 4, middle-heavy splits 2/2, 3/3, 4/2 at vpp
4 and 2/2 at vpp 3 (middle stages of 13 or 14 layers: 4 / 4 / 4 / 1, 4 / 4 / 4 / 2, 5 / 5 / 4) and
12/8 at vpp 4 (2 / 2 / 2 / 0: the first stage waits for the middle stages' full chunks in its
drain, cost.pipeline_lags.first_stage_phases_s), ZeRO-0/1, 512 and 2048 tokens, tp 1/4, 4 and 8
micro-batches (160 plans, about 20 s); and
DeepSeek-V3 on 128 x 8 H100s (tp 2, ring 2, ep 8, 4K tokens, 1,024 sequences) at pp 16 x vpp 2
3 / 2, pp 8 x vpp 4 and vpp 3 at 7 / 6, ZeRO-0/1 (6 plans); Llama-4-Maverick 8K on 16 x 8 H100s
(ep 8, 128 sequences) at pp 8 x vpp 2 and pp 4 x vpp 4, tp 1/2, ZeRO-2/3, before the MFU ceiling
(8 plans: stage 1's chunks hold two MoE layers where stage 2's hold one, cost.pipeline_dp.
_relay_blocks; --quick leaves these 14 out). Prints max/mean
|analytic/sim - 1| per group and the worst plans. docs/cost-model.md Stop 56 has the findings.
"""

from __future__ import annotations

import itertools
import sys

from sim_agreement import print_summary, step_diff_percent

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

LLAMA_SPLITS = ((4, (2, 2)), (4, (3, 3)), (4, (4, 2)), (3, (2, 2)), (4, (12, 8)))  # (vpp, first/last layers)
DSV3_LAYOUTS = ((16, 2, (3, 2)), (8, 4, (7, 6)), (8, 3, (7, 6)))  # (pp, vpp, first/last stage layers)
MAVERICK_INTERLEAVED = ((8, 2), (4, 4))  # (pp, vpp): 3 layers a chunk, middle stages of 2 and 1 MoE layers a chunk


def sweep(quick: bool):
    model = load_model("Llama-3-8B")
    for hw, zero, (vpp, split), seq, tp, m in itertools.product(("L40S", "H100"), (0, 1), LLAMA_SPLITS, (512, 2048),
                                                                 (1, 4), (4, 8)):
        dp = 64 // (4 * tp)
        plan = ParallelPlan(dp=dp, pp=4, vpp=vpp, tp=tp, zero=zero, first_stage_layers=split[0],
                            last_stage_layers=split[1])
        diff = step_diff_percent(model, load_hardware(hw), Workload(seq_len=seq, global_batch=m * dp), plan)
        if diff is not None:
            yield dict(model="L3-8B", hw=hw, zero=zero, layout="%d:%d/%d" % (vpp, *split), seq=seq, tp=tp, m=m,
                       diff=diff)
    if quick:
        return
    model, hardware = load_model("DeepSeek-V3"), load_hardware("H100")
    for (pp, vpp, split), zero in itertools.product(DSV3_LAYOUTS, (0, 1)):
        plan = ParallelPlan(tp=2, pp=pp, vpp=vpp, dp=256 // pp, ring=2, ep=8, zero=zero, first_stage_layers=split[0],
                            last_stage_layers=split[1])
        diff = step_diff_percent(model, hardware, Workload(seq_len=4096, global_batch=1024), plan, nodes=128)
        if diff is not None:
            yield dict(model="DSV3", hw="H100", zero=zero, layout="%d:%d/%d" % (vpp, *split), pp=pp, diff=diff)
    model = load_model("Llama-4-Maverick-17B-128E")
    for (pp, vpp), tp, zero in itertools.product(MAVERICK_INTERLEAVED, (1, 2), (2, 3)):
        plan = ParallelPlan(dp=128 // (pp * tp), pp=pp, vpp=vpp, tp=tp, ep=8, zero=zero)
        diff = step_diff_percent(model, hardware, Workload(seq_len=8192, global_batch=128), plan, nodes=16,
                                 before_ceiling=True)
        if diff is not None:
            yield dict(model="Mav", hw="H100", zero=zero, layout="%d:even" % vpp, pp=pp, tp=tp, diff=diff)


def main() -> None:
    print_summary(list(sweep("--quick" in sys.argv)), ("model", "zero", "layout"),
                  lambda r: (r["model"], r["zero"], r["layout"]), worst=6)


if __name__ == "__main__":
    main()
