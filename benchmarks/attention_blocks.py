"""Local attention throughput and what ring blocking costs, on one device.

Measures (forward pass, head_dim 128 by default):
  1. the local flash kernel's TFLOPS on the full sequence, causal and full;
  2. one ring rank's blockwise compute: all R steps with the real block shapes (contiguous or
     zigzag, as sp_planner.executor.ring runs them) and the fp32 LSE merges, no communication;
  3. the efficiency lost to blocking: T_full(S) / (R * T_slowest_rank), where a ring step waits for
     its slowest rank. 1.0 means blocking costs nothing; contiguous causal loses to imbalance.

CUDA if present (bf16), else CPU (fp32, small sizes). `--quick` runs a small grid; `--seq-lens`
gives whole-sequence lengths instead (each rank holds S/R), `--json` also writes the rows.
    python benchmarks/attention_blocks.py --quick
    python benchmarks/attention_blocks.py --seq-lens 32k,64k,128k,256k --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sp_planner.executor.kernels import CpuFlashKernel, CudaFlashKernel
from sp_planner.executor.merge import merge_partial
from sp_planner.executor.ring import block_for_step
from sp_planner.units import parse_tokens


def _timer(device: torch.device, fn, repeats: int) -> float:
    """Best-of-`repeats` seconds of fn() after one warm-up call (the minimum resists noise from
    other processes on a shared machine)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def attention_flops(batch: int, seq_len: int, heads: int, head_dim: int, causal: bool) -> float:
    """Forward FLOPs: QK^T and PV, 2*s*s*d each per head (FlashAttention-2 paper's count);
    causal does half."""
    flops = 4 * batch * heads * seq_len * seq_len * head_dim
    return flops / 2 if causal else flops


def rank_blockwise(kernel, q, k, v, *, rank: int, ring: int, causal: bool, layout: str, scale: float):
    """One ring rank's R steps on its local q with each step's K/V block (data reused: the
    shapes, masks and merges are what cost time, not the values)."""
    out = lse = None
    for step in range(ring):
        block = block_for_step(step, rank, ring, q.shape[1], causal=causal, layout=layout)
        if block is None:
            continue
        out_b, lse_b = kernel.forward(q[:, block.q_rows], k[:, block.kv_rows], v[:, block.kv_rows],
                                      causal=block.causal, scale=scale)
        if out is None:
            out, lse = out_b.float(), lse_b
        else:
            out[:, block.q_rows], lse[:, :, block.q_rows] = merge_partial(
                out[:, block.q_rows], lse[:, :, block.q_rows], out_b, lse_b)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid (CPU-friendly)")
    parser.add_argument("--ring", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1 default: OpenMP barriers stall when cores are shared)")
    parser.add_argument("--seq-lens", default=None, help="whole-sequence lengths, e.g. 32k,64k (multiples of ring)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    kernel = CudaFlashKernel() if cuda else CpuFlashKernel()
    heads = args.heads or (2 if args.quick else (32 if cuda else 4))
    repeats = args.repeats or (5 if args.quick else 10)
    if cuda:
        block_lens = [512, 1024, 2048] if args.quick else [256, 512, 1024, 2048, 4096, 8192]
    else:
        block_lens = [64, 128, 256] if args.quick else [64, 128, 256, 512, 1024]
    ring, d, batch = args.ring, args.head_dim, 1
    if args.seq_lens:
        seqs = [parse_tokens(t) for t in args.seq_lens.split(",")]
        if any(seq % ring for seq in seqs):
            parser.error(f"every --seq-lens value must be a multiple of --ring {ring}")
        block_lens = [seq // ring for seq in seqs]
    scale = 1 / math.sqrt(d)
    console = Console()
    console.print(f"device {device} ({torch.get_num_threads()} threads), {dtype}, kernel {kernel.name}, "
                  f"batch {batch}, heads {heads}, head_dim {d}, ring {ring}, forward pass")

    table = Table(title="local flash TFLOPS and ring blocking efficiency")
    # T_full: one kernel call over the whole sequence; T_rank: the slowest rank's R blocked steps;
    # eff = T_full / (R * T_rank).
    for col in ("mask", "layout", "block", "seq", "TFLOPS", "T_full ms", "T_rank ms", "eff"):
        table.add_column(col, justify="right")
    rows = []
    gen = torch.Generator().manual_seed(0)
    for causal in (False, True):
        for block_len in block_lens:
            seq = ring * block_len
            q, k, v = (torch.randn(batch, seq, heads, d, generator=gen).to(device, dtype) for _ in range(3))
            t_full = _timer(device, lambda: kernel.forward(q, k, v, causal=causal, scale=scale), repeats)
            tflops = attention_flops(batch, seq, heads, d, causal) / t_full / 1e12
            local = [t[:, :block_len] for t in (q, k, v)]
            for layout in (("contiguous", "zigzag") if causal else ("contiguous",)):
                per_rank = [_timer(device, lambda r=r: rank_blockwise(kernel, *local, rank=r, ring=ring,
                                                                      causal=causal, layout=layout, scale=scale),
                                   repeats) for r in range(ring)]
                slowest = max(per_rank)
                rows.append(dict(causal=causal, layout=layout, block_len=block_len, seq_len=seq, ring=ring,
                                 heads=heads, head_dim=d, dtype=str(dtype).removeprefix("torch."), device=str(device),
                                 kernel=kernel.name, full_tflops=tflops, full_s=t_full, rank_s=per_rank,
                                 efficiency=t_full / (ring * slowest)))
                table.add_row("causal" if causal else "full", layout, str(block_len), str(seq), f"{tflops:.3f}",
                              f"{t_full * 1e3:.2f}", f"{slowest * 1e3:.2f}", f"{t_full / (ring * slowest):.2f}")
    console.print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
