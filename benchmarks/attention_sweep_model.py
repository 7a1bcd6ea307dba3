"""The cost model beside an attention sweep: `benchmarks/attention_sweep.py --json` rows (gpu-check
step 5) against what cost.kernels predicts for the same calls with the backend's curves.

    python benchmarks/attention_sweep_model.py ROWS.json [--hardware h200]

Backend to curves: SDPA's flash backend -> "sdpa", its cuDNN backend -> "cudnn"
(cost.attention_kernels). Per row: measured / predicted TFLOPS forward and backward in the
FlashAttention convention (forward 4 b h s^2 d, half of it causal, backward 2.5 x), and the
measured-over-predicted time ratio of the pair (above 1: the model is optimistic). A row whose
backend was refused (its `error`) is listed as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.cost.kernels import CAUSAL_WORK_FRACTION, FLASH_BWD_FLOPS_FACTOR, flash_flops, flash_time_s
from sp_planner.specs.hardware import HardwareProfile

KERNEL_OF_BACKEND = {"flash": "sdpa", "cudnn": "cudnn"}


def predicted_s(hardware: HardwareProfile, row: dict) -> tuple[float, float]:
    """(forward, backward) seconds of the row's call on the profile's curves."""
    shape = dict(batch=row["batch"], heads=row["heads"], head_dim=row["head_dim"], q_tokens=row["tokens"],
                 kv_tokens=row["tokens"], causal_diagonal=row["causal"])
    return (float(flash_time_s(hardware, **shape, backward=False)),
            float(flash_time_s(hardware, **shape, backward=True)))


def tflops(row: dict, seconds: float, *, backward: bool) -> float:
    flops = flash_flops(row["batch"], row["heads"], row["head_dim"], row["tokens"], row["tokens"])
    flops *= (CAUSAL_WORK_FRACTION if row["causal"] else 1.0) * (FLASH_BWD_FLOPS_FACTOR if backward else 1.0)
    return flops / seconds / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", type=Path)
    parser.add_argument("--hardware", default="h200")
    args = parser.parse_args()
    base = load_hardware(args.hardware)
    profiles = {backend: with_attention_kernel(base, kernel) for backend, kernel in KERNEL_OF_BACKEND.items()}
    print(f"{args.rows.name} on {base.name}: TFLOPS measured / predicted; time ratio measured/predicted")
    print(f"{'backend':7} {'set':8} {'b':>2} {'h':>3} {'tokens':>7} {'mask':6} {'forward':>13} {'backward':>13} "
          f"{'ratio':>5}")
    for row in json.loads(args.rows.read_text()):
        head = (f"{row['backend']:7} {row['set']:8} {row['batch']:>2} {row['heads']:>3} {row['tokens']:>7} "
                f"{'causal' if row['causal'] else 'full':6}")
        if "error" in row:
            print(f"{head} refused: {row['error'][:28]}")
            continue
        fwd_s, bwd_s = predicted_s(profiles[row["backend"]], row)
        ratio = (row["fwd_s"] + row["bwd_s"]) / (fwd_s + bwd_s)
        print(f"{head} {row['fwd_tflops']:6.0f}/{tflops(row, fwd_s, backward=False):<6.0f} "
              f"{row['bwd_tflops']:6.0f}/{tflops(row, bwd_s, backward=True):<6.0f} {ratio:5.2f}")


if __name__ == "__main__":
    main()
