"""One validated, measured attention step on one rank (called by the worker and the tests)."""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from sp_planner.executor.comm import ALL_GATHER, ALL_TO_ALL, P2P, REDUCE_SCATTER, CommCounter
from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernels import check_kernel, select_kernel
from sp_planner.executor.sharding import extract_local
from sp_planner.executor.memory import CPU_METHOD, CUDA_METHOD, TensorBytesTracker
from sp_planner.executor.reference import Tensors, global_inputs, reference_attention, single_device_run
from sp_planner.executor.result import AttentionCommBytes, GroupRanks, RankResult, StepTimes, TensorErrors
from sp_planner.executor.usp import SequenceGroups, usp_attention

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# fp32 runs must match the fp32 reference to about 1e-5 (issue 7); the inputs are O(1).
FP32_TOLERANCE = 1e-5


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _tolerances(cfg, dtype, inputs, reference: Tensors, shard, kernel) -> TensorErrors:
    """fp32: a fixed bound. bf16/fp16: twice the error of a same-dtype single-device run against
    the fp32 reference (flash-attention's test rule) plus one ulp at the largest reference value."""
    if dtype == torch.float32:
        return TensorErrors(out=FP32_TOLERANCE, dq=FP32_TOLERANCE, dk=FP32_TOLERANCE, dv=FP32_TOLERANCE)
    single = single_device_run(inputs, causal=cfg.causal, kernel=kernel, dtype=dtype)
    eps = torch.finfo(dtype).eps
    bounds = {}
    for name in Tensors._fields:
        ref, got = getattr(reference, name), getattr(single, name)
        ulp = eps * float(shard(ref).abs().max())
        bounds[name] = 2 * _max_abs(shard(got), shard(ref)) + ulp
    return TensorErrors(**bounds)


class _Clock:
    """CUDA events on GPU (no host sync inside the step), perf_counter on CPU."""

    def __init__(self, on_cuda: bool):
        self.on_cuda = on_cuda
        self.marks: list = []

    def mark(self) -> None:
        if self.on_cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_s(self) -> list[float]:
        if self.on_cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _step(q, k, v, dout, *, cfg, groups, kernel, counter, on_cuda: bool):
    """One forward+backward; returns (out, grads, fwd seconds, bwd seconds)."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    clock = _Clock(on_cuda)
    clock.mark()
    out = usp_attention(q, k, v, groups=groups, causal=cfg.causal, ring_layout=cfg.ring_layout,
                        kernel=kernel, counter=counter, cp_comm=cfg.cp_comm)
    clock.mark()
    out.backward(dout)
    clock.mark()
    fwd_s, bwd_s = clock.intervals_s()
    return out.detach(), (q.grad, k.grad, v.grad), fwd_s, bwd_s


def run_case(cfg: RunConfig, groups: SequenceGroups, device: torch.device) -> RankResult:
    dtype = TORCH_DTYPES[cfg.dtype]
    kernel, note = select_kernel(device.type, dtype, cfg.kernel)
    check_kernel(kernel, device.type, dtype, cfg.head_dim)
    inputs = global_inputs(cfg, device)
    reference = reference_attention(inputs, causal=cfg.causal)

    def shard(x: torch.Tensor) -> torch.Tensor:
        return extract_local(x, 1, ring=groups.ring, ulysses=groups.ulysses, ring_rank=groups.ring_rank,
                             ulysses_rank=groups.ulysses_rank, layout=cfg.ring_layout)

    tolerance = _tolerances(cfg, dtype, inputs, reference, shard, kernel)
    local = [shard(t).to(dtype) for t in inputs]
    on_cuda = device.type == "cuda"
    counter = CommCounter()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out, grads, fwd_s, bwd_s = _step(*local, cfg=cfg, groups=groups, kernel=kernel, counter=counter,
                                         on_cuda=on_cuda)
        peak, method = torch.cuda.max_memory_allocated(device) - base, CUDA_METHOD
    else:
        with TensorBytesTracker() as tracker:
            out, grads, fwd_s, bwd_s = _step(*local, cfg=cfg, groups=groups, kernel=kernel, counter=counter,
                                             on_cuda=on_cuda)
        peak, method = tracker.peak_bytes, CPU_METHOD
    errors = TensorErrors(**{name: _max_abs(got, shard(getattr(reference, name)))
                             for name, got in zip(Tensors._fields, (out, *grads))})
    sent = AttentionCommBytes(all_to_all=counter.sent_bytes[ALL_TO_ALL], p2p=counter.sent_bytes[P2P],
                              all_gather=counter.sent_bytes[ALL_GATHER],
                              reduce_scatter=counter.sent_bytes[REDUCE_SCATTER])

    fwd_times, bwd_times = [fwd_s], [bwd_s]
    if cfg.iters:
        fwd_times, bwd_times = [], []
        for _ in range(cfg.iters):
            dist.barrier()
            _, _, f, b = _step(*local, cfg=cfg, groups=groups, kernel=kernel, counter=CommCounter(),
                              on_cuda=on_cuda)
            fwd_times.append(f)
            bwd_times.append(b)
    return RankResult(
        rank=dist.get_rank(), kernel=kernel.name, kernel_note=note, max_abs_err=errors, tolerance=tolerance,
        comm_bytes_measured=sent,
        time_s=StepTimes(fwd=statistics.median(fwd_times), bwd=statistics.median(bwd_times)),
        peak_memory_bytes=int(peak), memory_method=method,
        groups=GroupRanks(ulysses=tuple(dist.get_process_group_ranks(groups.ulysses_group)),
                          ring=tuple(dist.get_process_group_ranks(groups.ring_group))),
    )
