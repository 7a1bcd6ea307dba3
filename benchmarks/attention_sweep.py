"""Attention kernels through PyTorch SDPA's backends by shape: the microbenchmark the cost model's
attention curves rest on (cost.attention_kernels, cost.kernel_benchmarks), for a GPU session.

    python benchmarks/attention_sweep.py --json rows.json [--quick]

Per backend (SDPA's flash and cuDNN backends on CUDA; its flash kernel on CPU) and shape: forward
and backward seconds (median of --repeats after a warm-up; CUDA events on GPU), TFLOPS in the
FlashAttention convention (forward 4 b h s^2 d, half of it causal, backward 2.5 x the forward),
and the SM clock before and after the shape (torch.cuda.clock_rate, through NVML), so a clock that
drops under long kernels shows. Three sets of shapes, head_dim 128, bf16:
  lengths  batch 1, 16 heads, 4K-128K tokens, causal and full: a ring block as a rank runs it;
  cudnn-fe batch 1, 64 query and 8 KV heads, 2K-32K: NVIDIA cudnn-frontend's H200 Llama-3.1-70B
           benchmark (cost.kernel_benchmarks.CUDNN_H200_*), to check the published figures here;
  waves    8K tokens, causal, batch x heads of 8 to 64: how few CTAs a call has (the curves are
           read at B x S = 16K; a B 1 ring block with few heads has fewer).
A backend this torch or GPU refuses is recorded with its error and skipped, not fatal. On CPU
(CI) the same code runs at toy sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sp_planner.cost.kernels import CAUSAL_WORK_FRACTION, FLASH_BWD_FLOPS_FACTOR, flash_flops

HEAD_DIM = 128
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def shapes(quick: bool, cuda: bool) -> list[dict]:
    """(set, batch, heads, kv_heads, tokens, causal) of every measurement."""
    if not cuda:  # toy sizes: the script's own logic in CI
        return [dict(set="lengths", batch=1, heads=2, kv_heads=2, tokens=t, causal=c)
                for t in (128, 256) for c in (False, True)] + [
                dict(set="cudnn-fe", batch=1, heads=4, kv_heads=2, tokens=128, causal=True)]
    lengths = (4096, 16384) if quick else (4096, 16384, 65536, 131072)
    rows = [dict(set="lengths", batch=1, heads=16, kv_heads=16, tokens=t, causal=c)
            for t in lengths for c in (False, True)]
    rows += [dict(set="cudnn-fe", batch=1, heads=64, kv_heads=8, tokens=t, causal=c)
             for t in ((2048, 8192) if quick else (2048, 4096, 8192, 16384, 32768)) for c in (False, True)]
    rows += [dict(set="waves", batch=b, heads=h, kv_heads=h, tokens=8192, causal=True)
             for b, h in ((1, 8), (1, 16), (2, 16), (1, 32), (1, 64))]
    return rows


def forward_flops(batch: int, heads: int, tokens: int, causal: bool) -> float:
    """The cost model's count (cost.kernels.flash_flops, FlashAttention-2 paper's): QK^T and PV,
    2 s^2 d each per head; a causal call does CAUSAL_WORK_FRACTION of it."""
    return flash_flops(batch, heads, HEAD_DIM, tokens, tokens) * (CAUSAL_WORK_FRACTION if causal else 1.0)


def _clock_mhz(cuda: bool) -> float | None:
    if not cuda:
        return None
    try:
        return float(torch.cuda.clock_rate())
    except Exception:  # noqa: BLE001 - NVML absent or refused: the clock is optional
        return None


class _Timer:
    """Seconds of one call: CUDA events on GPU (read after a synchronize), perf_counter on CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def _timed(backend: str, q, k, v, dout, *, causal: bool, gqa: bool, timer, repeats: int):
    """Median forward and backward seconds of SDPA on `backend` (the first call a warm-up)."""
    fwd, bwd = [], []
    with sdpa_kernel(BACKENDS[backend]):
        for i in range(repeats + 1):
            out: list[torch.Tensor] = []
            t_fwd = timer(lambda: out.append(F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                            enable_gqa=gqa)))
            t_bwd = timer(lambda: out[0].backward(dout))
            q.grad = k.grad = v.grad = None
            if i:
                fwd.append(t_fwd)
                bwd.append(t_bwd)
    return statistics.median(fwd), statistics.median(bwd)


def measure(backend: str, shape: dict, *, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """One row: the shape, its backend, median forward and backward seconds and TFLOPS, clocks.
    GQA runs natively (enable_gqa); a backend that refuses it gets K and V expanded to the query
    heads (the same FLOPs, more K/V reads), and the row says so (gqa_expanded)."""
    cuda = device.type == "cuda"
    row = dict(backend=backend, **shape, head_dim=HEAD_DIM, dtype=str(dtype).removeprefix("torch."),
               clock_mhz_before=_clock_mhz(cuda), gqa_expanded=False)
    gen = torch.Generator().manual_seed(0)
    b, h, kv, s = shape["batch"], shape["heads"], shape["kv_heads"], shape["tokens"]
    q, dout = (torch.randn(b, h, s, HEAD_DIM, generator=gen).to(device, dtype) for _ in range(2))
    k, v = (torch.randn(b, kv, s, HEAD_DIM, generator=gen).to(device, dtype) for _ in range(2))
    q = q.requires_grad_()
    timer = _Timer(cuda)
    try:
        try:
            fwd_s, bwd_s = _timed(backend, q, k.requires_grad_(), v.requires_grad_(), dout,
                                  causal=shape["causal"], gqa=kv != h, timer=timer, repeats=repeats)
        except RuntimeError:
            if kv == h:
                raise
            # (b, kv, s, d) -> (b, h, s, d): each KV head repeated for its query group
            k, v = (t.detach().repeat_interleave(h // kv, dim=1).requires_grad_() for t in (k, v))
            row["gqa_expanded"] = True
            fwd_s, bwd_s = _timed(backend, q, k, v, dout, causal=shape["causal"], gqa=False, timer=timer,
                                  repeats=repeats)
    except RuntimeError as err:  # a backend this torch or GPU does not run for the shape
        return dict(row, error=(str(err).strip().splitlines() or ["?"])[0][:300])
    flops = forward_flops(b, h, s, shape["causal"])
    return dict(row, fwd_s=fwd_s, bwd_s=bwd_s, fwd_tflops=flops / fwd_s / 1e12,
                bwd_tflops=FLASH_BWD_FLOPS_FACTOR * flops / bwd_s / 1e12, clock_mhz_after=_clock_mhz(cuda))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer lengths (under a minute on an H100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    backends = list(BACKENDS) if cuda else ["flash"]
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"{name}, torch {torch.__version__}, {dtype}, head_dim {HEAD_DIM}, median of {args.repeats}")
    print(f"{'backend':7} {'set':8} {'b':>2} {'h':>3} {'kv':>3} {'tokens':>7} {'mask':6} "
          f"{'fwd TF':>7} {'bwd TF':>7} {'MHz':>9}")
    rows = []
    for shape in shapes(args.quick, cuda):
        for backend in backends:
            row = measure(backend, shape, device=device, dtype=dtype, repeats=args.repeats)
            rows.append(row)
            mask = "causal" if shape["causal"] else "full"
            head = (f"{backend:7} {shape['set']:8} {shape['batch']:>2} {shape['heads']:>3} {shape['kv_heads']:>3} "
                    f"{shape['tokens']:>7} {mask:6}")
            if "error" in row:
                print(f"{head} skipped: {row['error'][:30]}")
                continue
            clocks = "/".join("-" if c is None else f"{c:.0f}"
                              for c in (row["clock_mhz_before"], row["clock_mhz_after"]))
            print(f"{head} {row['fwd_tflops']:7.1f} {row['bwd_tflops']:7.1f} {clocks:>9}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
