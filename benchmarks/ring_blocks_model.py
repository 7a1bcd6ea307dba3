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
from sp_planner.cost.kernels import flash_time_s, memory_pass_time_s
from sp_planner.cost.ring_impl import YUNCHANG_RING
from sp_planner.specs.hardware import HardwareProfile

ROWS = Path(__file__).resolve().parent.parent / "docs" / "gpu-check" / "2026-12-04-h200" / "run4-ring_blocks_rows.json"


def predicted_s(hardware: HardwareProfile, row: dict) -> tuple[float, float]:
    """(T_full, T_slowest rank) in seconds for one benchmark row."""
    seq, ring, heads, head_dim = row["seq_len"], row["ring"], row["heads"], row["head_dim"]
    block, causal = seq // ring, row["causal"]

    def call_s(q_tokens: float, kv_tokens: float, diagonal: bool) -> float:
        return float(flash_time_s(hardware, batch=1, heads=heads, head_dim=head_dim, q_tokens=q_tokens,
                                  kv_tokens=kv_tokens, causal_diagonal=diagonal, backward=False))

    q_elems = block * heads * head_dim
    merge_s = float(memory_pass_time_s(hardware, YUNCHANG_RING.merge_bytes_per_elem * q_elems))
    ends_s = float(memory_pass_time_s(hardware, YUNCHANG_RING.merge_ends_bytes_per_elem * q_elems))
    later_kv = block / 2 if causal and row["layout"] == "zigzag" else block
    rank_s = call_s(block, block, causal) + (ring - 1) * (call_s(block, later_kv, False) + merge_s) + ends_s
    return call_s(seq, seq, causal), rank_s


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
