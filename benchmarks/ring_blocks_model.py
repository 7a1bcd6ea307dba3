"""The cost model against measured ring blocks: `benchmarks/attention_blocks.py --json` rows
(one GPU, forward, no communication) beside what cost.kernels predicts for the same calls.

    python benchmarks/ring_blocks_model.py [ROWS.json] [--hardware h200] [--kernel sdpa]

Default rows: the H200 run of `make gpu-check` (docs/gpu-check/2026-12-04-h200/). Predicted:
T_full, one flash call on the whole sequence; T_rank, the slowest rank's R calls (zigzag: the
causal local block and R-1 half blocks; contiguous causal: the last rank, a causal block and R-1
full ones; full mask: R full blocks) plus the fp32 merges of yunchang's arithmetic, which the
executor's merge repeats (cost.ring_impl.YUNCHANG_RING: 38 bytes an element a merge, 12 at the
ends). The executor's layout copies around each call are not in the model: they are sp-run's,
not a framework's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.cost.ring_impl import YUNCHANG_RING
from sp_planner.cost.ring_steps import ring_step_compute
from sp_planner.specs.hardware import HardwareProfile

ELEM_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ROWS = Path(__file__).resolve().parent.parent / "docs" / "gpu-check" / "2026-12-04-h200" / "run4-ring_blocks_rows.json"


def predicted_s(hardware: HardwareProfile, row: dict) -> tuple[float, float]:
    """(T_full, T_slowest rank) in seconds for one benchmark row."""
    seq, ring, heads, head_dim = row["seq_len"], row["ring"], row["heads"], row["head_dim"]
    causal = row["causal"]

    def passes(block: float):
        # The cost model's passes of one ring step (cost.ring_steps), MHA, one row of the batch.
        return ring_step_compute(hardware, batch=1, heads=heads, kv_heads=heads, head_dim=head_dim, block=block,
                                 causal=causal, zigzag=row["layout"] == "zigzag", elem_bytes=ELEM_BYTES[row["dtype"]],
                                 ring_impl=YUNCHANG_RING)

    step = passes(seq // ring)
    # The slowest rank: its first block, R-1 later blocks each merged, the ends; no half copies
    # (the executor's layout copies are sp-run's, module docstring).
    rank_s = step.first_fwd_s + (ring - 1) * (step.later_fwd_s + step.merge_s) + step.ends_s
    return float(passes(seq).first_fwd_s), float(rank_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", nargs="?", type=Path, default=ROWS)
    parser.add_argument("--hardware", default="h200")
    parser.add_argument("--kernel", default="sdpa", help="the kernel the rows ran (cost.attention_kernels)")
    args = parser.parse_args()
    hardware = with_attention_kernel(load_hardware(args.hardware), args.kernel)
    print(f"{args.rows.name}: measured / predicted ({hardware.name}, {args.kernel})")
    print(f"{'mask':6} {'layout':10} {'seq':>7} {'T_full ms':>16} {'T_rank ms':>16} {'efficiency':>11}")
    for row in json.loads(args.rows.read_text()):
        full_s, rank_s = predicted_s(hardware, row)
        measured_rank_s = max(row["rank_s"])
        eff = full_s / (row["ring"] * rank_s)
        print(f"{'causal' if row['causal'] else 'full':6} {row['layout']:10} {row['seq_len']:>7} "
              f"{row['full_s'] * 1e3:7.2f} / {full_s * 1e3:6.2f} {measured_rank_s * 1e3:7.2f} / {rank_s * 1e3:6.2f} "
              f"{row['efficiency']:5.2f} / {eff:4.2f}")


if __name__ == "__main__":
    main()
