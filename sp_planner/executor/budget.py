"""What one sp-run rank needs before anything is launched: peak memory and the reference's time.

Torch-free (the CLI checks a run before torchrun starts). Every rank holds the global fp32 inputs
and computes the full fp32 reference (sp_planner.executor.reference) so that it can check its own
shard; it also runs the kernel once on the full tensors in the run dtype for the tolerance
(case.run_case: every dtype since the RMS bounds, fp32 included). Those phases run one after
another, so a rank's peak is what stays alive throughout (inputs, reference results) plus the
largest phase. The executor phase is the step as sp-run runs it (executor.step_memory's replay,
which equals the measured peak above the step's inputs) with what run_case keeps alive beside it.
"""

from __future__ import annotations

from sp_planner.cost.attention import attention_layer_memory_bytes
from sp_planner.executor.config import RunConfig
from sp_planner.executor.step_memory import collective_held_bytes, single_run_peak_bytes, step_peak_bytes
from sp_planner.specs.base import FrozenModel

FP32_BYTES = 4
MIB = 2**20
# The chunked reference keeps two score-sized fp32 matrices of a chunk alive (E = exp(S - m) and
# dS); the chunk's rows are chosen so both fit this many bytes.
REFERENCE_WORKSPACE_BYTES = 512 * MIB
REFERENCE_LIVE_SCORE_MATRICES = 2
# The math kernel (kernels.MathKernel) materializes whole score matrices of its call in fp32: in
# its backward the scores, their masked copy, P = exp(S - lse), dP and dS.
MATH_KERNEL_LIVE_SCORE_MATRICES = 5
# Matmuls of the reference per (query, key) pair per head, each 2*d flops: S, O, dV, dP, dK, dQ.
REFERENCE_MATMULS = 6
# Per-rank runtime outside the tensors: a CPU rank's Python + torch + gloo resident memory
# (about 0.4 GB measured with ps on an idle sp-run rank), a CUDA rank's context and NCCL buffers.
RUNTIME_OVERHEAD_BYTES = {"cpu": 512 * MIB, "cuda": 1024 * MIB}
# Reference throughput of one rank, in its matmul flops per second (elementwise passes included).
# CPU: one core of the 2-core Xeon (AVX-512) this was written on ran the 16K-token causal
# reference with 32 heads of 128 (6.6e12 matmul flops) in 105 s, 63e9 per second; torchrun gives
# each of several local ranks one thread. CUDA: A100 fp32 without tensor cores (NVIDIA A100
# datasheet, 19.5 TFLOP/s; torch does not use TF32 for fp32 matmuls by default).
CPU_CORE_REFERENCE_FLOPS_PER_S = 63e9
CUDA_REFERENCE_FLOPS_PER_S = 19.5e12
LONG_REFERENCE_S = 60.0


def reference_score_matrices(softcap: bool) -> int:
    """Score-sized fp32 matrices the reference keeps alive per chunk: E and dS, and with a logit
    softcap tanh(S / c) for the backward (reference.chunked_attention)."""
    return REFERENCE_LIVE_SCORE_MATRICES + (1 if softcap else 0)


def reference_chunk_rows(*, batch: int, heads: int, seq_len: int,
                         budget_bytes: int = REFERENCE_WORKSPACE_BYTES, softcap: bool = False) -> int:
    """Query rows per chunk whose live score matrices, (batch, heads, rows, seq_len) fp32 each, fit
    budget_bytes (at least one row, at most the sequence: small shapes run in one chunk)."""
    row_bytes = reference_score_matrices(softcap) * batch * heads * seq_len * FP32_BYTES
    return max(1, min(seq_len, budget_bytes // row_bytes))


def reference_score_pairs(seq_len: int, rows: int, *, causal: bool) -> int:
    """(query, key) pairs the chunked reference computes per head: causal chunks stop at their
    last row, so the masked part of the diagonal blocks is computed too."""
    if not causal:
        return seq_len * seq_len
    return sum(min(rows, seq_len - start) * min(start + rows, seq_len) for start in range(0, seq_len, rows))


class RunMemory(FrozenModel):
    """Peak bytes of one rank, by phase."""

    inputs_bytes: int  # global Q, K, V, dO in fp32
    reference_bytes: int  # its results (O, dQ, dK, dV in fp32), alive until the end
    reference_workspace_bytes: int  # chunk scores, chunk rows, fp32 K/V and dK/dV accumulators
    tolerance_bytes: int  # the same-dtype single-device run (step_memory.single_run_peak_bytes)
    executor_bytes: int  # the sharded step and what stays alive beside it (executor_phase_bytes)
    runtime_bytes: int
    # True: the step is executor.step_memory's replay; False: a kernel it does not cover (the
    # math kernel, CUDA's memory-efficient one), counted by cost.attention's layer model instead.
    executor_replayed: bool

    @property
    def peak_bytes(self) -> int:
        return self.inputs_bytes + self.reference_bytes + self.largest_phase[1] + self.runtime_bytes

    @property
    def largest_phase(self) -> tuple[str, int]:
        """The phase that sets the peak, in words, and its bytes."""
        step = ("its sharded steps (sp-run's step replayed)" if self.executor_replayed else
                "its sharded steps (the layer model's estimate: the replay does not cover this kernel)")
        phases = [("the reference's workspace", self.reference_workspace_bytes),
                  ("the single-device run for the tolerance", self.tolerance_bytes), (step, self.executor_bytes)]
        return max(phases, key=lambda phase: phase[1])


def _tensors_elems(cfg: RunConfig) -> int:
    """Elements of Q, K at d_qk and V, dO at d_v over the whole sequence (MLA: d_qk != d_v), as
    many as of the results O, dQ, dK, dV."""
    return cfg.batch * cfg.seq_len * (cfg.heads_per_tp_rank + cfg.kv_heads_per_tp_rank) * (cfg.head_dim + cfg.v_dim)


def held_bytes(cfg: RunConfig) -> int:
    """What a rank holds through every phase, run_memory's inputs_bytes + reference_bytes +
    runtime_bytes: a floor of its peak_bytes that replays no step (the replay takes seconds at a
    ring of a thousand ranks and hours at a million), so that a run far too big is refused at once."""
    return 2 * _tensors_elems(cfg) * FP32_BYTES + RUNTIME_OVERHEAD_BYTES[cfg.device]


def run_memory(cfg: RunConfig) -> RunMemory:
    b, s, d_qk, d_v = cfg.batch, cfg.seq_len, cfg.head_dim, cfg.v_dim  # MLA: d_qk != d_v
    h, kv = cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank
    eb = cfg.elem_bytes
    q_elems = b * s * h * cfg.kernel_head_dim  # a query-sized tensor at the wider head dim
    tensors_elems = _tensors_elems(cfg)
    softcap = cfg.softcap is not None
    rows = reference_chunk_rows(batch=b, heads=h, seq_len=s, softcap=softcap)
    scores = reference_score_matrices(softcap) * b * h * rows * s * FP32_BYTES
    chunk_rows = b * rows * h * (2 * d_qk + 3 * d_v) * FP32_BYTES  # Q*scale, dQ; dO/l, O, its rounded copy
    # fp32 K, V copies and one K- or V-sized matmul result before it is added to dK or dV (the
    # dK, dV accumulators are the reference's results)
    workspace = scores + chunk_rows + b * s * kv * (d_qk + d_v + max(d_qk, d_v)) * FP32_BYTES
    tolerance = single_run_peak_bytes(cfg)  # the flash kernels' run, replayed
    if tolerance is None:  # the inputs rounded to the dtype (in fp32 .to() is no copy), the results in it
        tolerance = (tensors_elems * eb if cfg.dtype != "float32" else 0) + tensors_elems * eb
        if cfg.math_kernel:  # single_device_run uses the chunked code on rounded inputs
            tolerance += workspace
        else:  # CUDA's memory-efficient kernel: KV and grads expanded to all heads, fp32 dQ
            tolerance += 8 * q_elems * eb + q_elems * FP32_BYTES
    executor, replayed = executor_phase_bytes(cfg)
    return RunMemory(inputs_bytes=tensors_elems * FP32_BYTES, reference_bytes=tensors_elems * FP32_BYTES,
                     reference_workspace_bytes=workspace, tolerance_bytes=tolerance, executor_bytes=executor,
                     runtime_bytes=RUNTIME_OVERHEAD_BYTES[cfg.device], executor_replayed=replayed)


def executor_phase_bytes(cfg: RunConfig) -> tuple[int, bool]:
    """A rank's bytes while its sharded steps run, above the global inputs and the reference, and
    whether the step is replayed: what case.run_case holds then, in the run dtype, beside the step
    (step_memory.step_peak_bytes, which counts neither the step's inputs nor these):
    - the single-device run's O, dQ, dK, dV (`single`, kept to the end): the global tensors' size;
    - this rank's Q, K, V, dO (`local`: extract_local's index_select copy, .to(dtype)): 1/(U*R) of it;
    - while a timed step runs (iters > 0), the validated step's O, dQ, dK, dV (`out`, `grads`; a
      timed step's own go with `_`, which the loop rebinds before the next);
    - on CPU, the buffers gloo's worker threads may still hold (step_memory.collective_held_bytes;
      sp-run runs CUDA ranks on NCCL).
    What run_case does after the steps (errors against the reference: a few shard-sized fp32
    temporaries) stays below the step's own peak (the ring's K/V and fp32 dK/dV buffers alone are
    six K-sized shards). Where the replay does not cover the kernel (math kernel, CUDA's
    memory-efficient one), the step is cost.attention's layer model (its inputs counted) plus the
    math kernel's score matrices."""
    b, s = cfg.batch, cfg.seq_len
    h, kv, eb, ranks = cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank, cfg.elem_bytes, cfg.world_size
    results_bytes = _tensors_elems(cfg) * eb  # O, dQ, dK, dV
    kept = results_bytes // ranks if cfg.iters > 0 else 0
    step = step_peak_bytes(cfg)
    if step is not None:
        held = collective_held_bytes(cfg) if cfg.device == "cpu" else 0
        return results_bytes + results_bytes // ranks + step + kept + held, True
    layer = attention_layer_memory_bytes(batch=b, seq_len=s, num_heads=h, num_kv_heads=kv,
                                         head_dim=cfg.mean_head_dim, ulysses=cfg.ulysses, ring=cfg.ring,
                                         elem_bytes=eb, cp_comm=cfg.cp_comm)
    # The math kernel's scores, CUDA's memory-efficient kernel (fp32) counted as it: one call, this
    # rank's heads after the all-to-all, one ring shard each side.
    shard = s // cfg.ring
    layer += MATH_KERNEL_LIVE_SCORE_MATRICES * b * (h // cfg.ulysses) * shard * shard * FP32_BYTES
    return results_bytes + layer + kept, False


def reference_flops(cfg: RunConfig) -> float:
    rows = reference_chunk_rows(batch=cfg.batch, heads=cfg.heads_per_tp_rank, seq_len=cfg.seq_len,
                                softcap=cfg.softcap is not None)
    pairs = reference_score_pairs(cfg.seq_len, rows, causal=cfg.causal)
    # S, dK, dQ run over d_qk; O, dV, dP over d_v: REFERENCE_MATMULS over their mean (MLA: 160)
    return REFERENCE_MATMULS * 2.0 * cfg.mean_head_dim * pairs * cfg.batch * cfg.heads_per_tp_rank


def reference_time_s(cfg: RunConfig, *, local_ranks: int, cpu_cores: int) -> float:
    """About how long each rank's reference takes: CPU ranks share the cores (one thread each when
    several run, as torchrun sets), CUDA ranks have a GPU each."""
    if cfg.device == "cuda":
        return reference_flops(cfg) / CUDA_REFERENCE_FLOPS_PER_S
    threads_per_rank = cpu_cores if local_ranks == 1 else 1
    share = min(1.0, cpu_cores / local_ranks)  # more ranks than cores time-share them
    return reference_flops(cfg) / (CPU_CORE_REFERENCE_FLOPS_PER_S * threads_per_rank * share)
