"""executor.step_memory: the replay of one sp-run step's allocations, against a hand count, the
H200 measurements recorded in docs/gpu-check, and the CPU tracker (executor.memory). The spawned
runs of test_distributed and test_distributed_mods check every rank's measured peak against it."""

import json
from pathlib import Path

import pytest
import torch

from sp_planner.executor import step_memory
from sp_planner.executor.blocks import block_for_step
from sp_planner.executor.config import RunConfig
from sp_planner.executor.memory import TensorBytesTracker
from sp_planner.executor.meta_tensors import new
from sp_planner.executor.predict import predict
from sp_planner.executor.kernels import select_kernel
from sp_planner.executor.reference import global_inputs, single_device_run
from sp_planner.executor.step_memory import (
    collective_held_bytes,
    ring_rank_peak_bytes,
    single_run_peak_bytes,
    step_peak_bytes,
)
from sp_planner.executor.step_ops import INT64

GPU_CHECK = Path(__file__).resolve().parents[2] / "docs" / "gpu-check" / "2026-12-04-h200"


def test_ring_of_two_by_hand():
    # ring 2, full attention, fp32 on CPU, b 1, S 8 (4 tokens a rank), 2 heads = 2 KV heads, d 4:
    # Q, K, V, O shards 1 x 4 x 2 x 4 fp32 = 128 B each, LSE 1 x 2 x 4 fp32 = 32 B. The peak is the
    # backward's second kernel call (executor.ring.ring_backward):
    saved = 128 + 32  # ctx's out and lse (q, k, v are the step's inputs)
    buffers = 4 * 128 + 4 * 128 + 128  # K/V receive buffers, fp32 dK/dV accumulators (2 pairs), fp32 dQ
    previous = 3 * 128  # step 0's dq_b, dk_b, dv_b, alive until step 1's call returns
    # kernels._bhsd copies of dO, Q, K, V ((b, s, h, d) -> (b, h, s, d); out is already in that
    # memory order), the LSE's contiguous copy (the CPU kernel returns it (b, s, h) in memory) and
    # the op's dq, dk, dv
    call = 4 * 128 + 32 + 3 * 128
    cfg = RunConfig(ulysses=1, ring=2, seq_len=8, num_heads=2, num_kv_heads=2, head_dim=4, dtype="float32",
                    causal=False, iters=0)
    assert saved + buffers + previous + call == 2624
    assert [ring_rank_peak_bytes(cfg, r) for r in (0, 1)] == [2624, 2624]
    assert collective_held_bytes(cfg) == 0  # ring P2P buffers are alive anyway


def _recorded_runs():
    for path in sorted(GPU_CHECK.glob("sp_run_*.json")):
        data = json.loads(path.read_text())
        for run in data if isinstance(data, list) else [data]:
            yield path.name, run


@pytest.mark.parametrize(("name", "run"), list(_recorded_runs()))
def test_replay_equals_the_h200_measurements(name, run):
    # CUDA peaks (max_memory_allocated above the step's start) of sp-run's flash kernel on one
    # H200, 2026-12-04: the replay with PyTorch's two backward copies and FlashAttention-2's
    # workspace gives every rank's to the byte.
    cfg = RunConfig.model_validate(run["config"])
    assert cfg.device == "cuda" and run["kernel"].startswith("cuda-flash")
    for rank in run["ranks"]:
        ring_rank = rank["groups"]["ring"].index(rank["rank"])
        assert rank["peak_memory_bytes"] == ring_rank_peak_bytes(cfg, ring_rank), name


def test_recorded_runs_were_found():
    assert len(list(_recorded_runs())) == 8


def test_tracker_counts_what_the_step_creates_not_its_inputs():
    before = torch.ones(1000)  # 4000 B made before tracking
    with TensorBytesTracker() as tracker:
        view = before.detach().view(10, 100)  # aliases of an input: nothing new
        assert tracker.peak_bytes == 0
        made = view + 1  # a new storage
        del made
        kept = before * 2
    assert (tracker.peak_bytes, tracker.live_bytes) == (4000, 4000)
    del kept


def test_math_kernel_has_no_memory_prediction():
    cfg = RunConfig(ulysses=1, ring=2, seq_len=64, num_heads=4, num_kv_heads=2, head_dim=16, kernel="math")
    got = predict(cfg)
    assert got.memory_bytes is None and step_peak_bytes(cfg) is None
    assert "not the math kernel" in got.note


def test_prediction_without_a_plan_has_memory():
    cfg = RunConfig(ulysses=2, ring=2, seq_len=64, num_heads=4, num_kv_heads=2, head_dim=16, causal=True,
                    ring_layout="zigzag")
    got = predict(cfg)
    assert got.time_s is None and got.memory_bytes == step_peak_bytes(cfg) > 0
    assert "no hardware profile (pass --plan) for time" in got.note


def test_held_bytes_are_the_largest_all_to_all_per_worker():
    # U 2: 2 workers x (send + recv) of the largest all-to-all, the query-sized one: b 2, 16 tokens
    # a rank, 4 heads, d 16, bf16 = 2 x 2 x 2048 B
    cfg = RunConfig(ulysses=2, ring=1, batch=2, seq_len=32, num_heads=4, num_kv_heads=2, head_dim=16,
                    dtype="bfloat16")
    assert collective_held_bytes(cfg) == 2 * 2 * (2 * 16 * 4 * 16 * 2)


def test_single_device_run_by_hand():
    # fp32 (no rounded copies), b 1, S 8, 2 heads = 2 KV heads, d 4: a global tensor 256 B, the
    # (b, s, h) LSE 64 B. The forward's (b, h, s, d) copies of Q, K, V die in it, leaving O and the
    # LSE; the backward copies dO, Q, K, V and the LSE (O is (b, h, s, d) in memory already) and
    # makes dQ, dK, dV.
    cfg = RunConfig(ulysses=1, ring=2, seq_len=8, num_heads=2, num_kv_heads=2, head_dim=4, dtype="float32")
    assert single_run_peak_bytes(cfg) == (256 + 64) + (4 * 256 + 64) + 3 * 256 == 2176
    assert single_run_peak_bytes(cfg.model_copy(update={"kernel": "math"})) is None


@pytest.mark.parametrize("shape", [
    dict(num_heads=2, num_kv_heads=2, head_dim=4, dtype="float32", causal=False),
    dict(num_heads=8, num_kv_heads=2, head_dim=64, dtype="bfloat16", causal=True),
    dict(num_heads=4, num_kv_heads=1, head_dim=24, v_head_dim=16, dtype="float16", causal=True, batch=2),
])
def test_single_device_run_replay_equals_the_tracker(shape):
    """reference.single_device_run, the tolerance's run of the CPU flash kernel on the whole
    sequence (MLA's head dims zero-padded), measured above its fp32 inputs."""
    cfg = RunConfig(ulysses=1, ring=2, seq_len=64, **shape)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    kernel, _ = select_kernel("cpu", dtype, "auto", qk_dim=cfg.head_dim, v_dim=cfg.v_dim)
    inputs = global_inputs(cfg, torch.device("cpu"))
    with TensorBytesTracker() as tracker:
        results = single_device_run(inputs, causal=cfg.causal, kernel=kernel, dtype=dtype)
    assert tracker.peak_bytes == single_run_peak_bytes(cfg)
    del results


def _every_step(ring, seq_local):
    """The ring loop as the executor runs it: every step that has a block."""
    blocks = [(step, block_for_step(step, ring.rank, ring.size, seq_local, causal=ring.causal, layout=ring.layout))
              for step in range(ring.size)]
    return [(step, block) for step, block in blocks if block is not None]


def _gathered_order_turn_by_turn(self, seq_len, ring):
    """allgather._gathered_order, every rank's turn of its loop."""
    zigzag = ring.size > 1 and ring.layout == "zigzag"
    chunk = seq_len // (2 * ring.size if zigzag else ring.size)
    parts = []
    for _ in range(ring.size):
        aranges = [self.host((chunk,), INT64) for _ in range(2 if zigzag else 1)]
        parts.append(self.host((len(aranges) * chunk,), INT64))
        del aranges
    order = self.host((seq_len,), INT64)
    del parts
    return order if self.device == "cpu" else self.new((seq_len,), INT64)


def _phase_peaks(cfg, ring_rank):
    """The ring level's forward and backward peaks apart (the step's is their larger, and the
    backward's mostly), and all-gather CP's order's alone: what left-out turns would change first."""
    ops = step_memory._Step(cfg.device)
    ring = step_memory._ring(cfg, ring_rank)
    b, s, h, kv, d, dv = cfg.batch, cfg.seq_len // cfg.ring, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.v_dim
    q, k, v, dout = (new(ops.ledger, shape, cfg.elem_bytes, counted=False)
                     for shape in ((b, s, h, d), (b, s, kv, d), (b, s, kv, dv), (b, s, h, dv)))
    allgather = cfg.cp_comm == "allgather"
    out, lse = (ops.allgather_forward if allgather else ops.ring_forward)(q, k, v, ring)
    forward, ops.ledger.peak_bytes = ops.ledger.peak_bytes, ops.ledger.live_bytes
    grads = (ops.allgather_backward if allgather else ops.ring_backward)(dout, q, k, v, out, lse, ring)  # noqa: F841
    alone = step_memory._Step(cfg.device)
    order = alone.gathered_order(cfg.seq_len, ring)  # noqa: F841 - its own peak, below the kernels'
    return forward, ops.ledger.peak_bytes, alone.ledger.peak_bytes


@pytest.mark.parametrize("cp_comm", ["p2p", "allgather"])
def test_the_shortened_replay_equals_every_rank_and_turn_replayed(cp_comm, monkeypatch):
    # Every rank, every ring step and every rank's turn of the all-gather order: the replay as it
    # was before it left out repeated turns and ranks, against the one sp-run's fit check runs.
    configs = [RunConfig(ulysses=u, ring=ring, seq_len=u * ring * 12, cp_comm=cp_comm, causal=causal,
                         ring_layout=layout, dtype=dtype, device=device, **heads)
               for ring in (1, 2, 3, 5, 8) for u in (1, 2) for causal in (True, False)
               for layout in ("contiguous", "zigzag") for dtype, device in (
                   ("float32", "cpu"), ("bfloat16", "cpu"), ("float16", "cuda"))
               for heads in (dict(num_heads=4, num_kv_heads=1, head_dim=8),
                             dict(num_heads=2, num_kv_heads=2, head_dim=12, v_head_dim=8, batch=2))]
    fast = [step_peak_bytes(cfg) for cfg in configs]
    fast_phases = [[_phase_peaks(cfg, r) for r in range(cfg.ring)] for cfg in configs if cfg.ulysses == 1]
    monkeypatch.setattr(step_memory, "computed_steps", _every_step)
    monkeypatch.setattr(step_memory._Step, "gathered_order", _gathered_order_turn_by_turn)
    full = [max(ring_rank_peak_bytes(cfg, r) for r in range(cfg.ring)) for cfg in configs]
    assert fast == full and len(configs) == 240
    assert fast_phases == [[_phase_peaks(cfg, r) for r in range(cfg.ring)] for cfg in configs if cfg.ulysses == 1]


@pytest.mark.parametrize(("layout", "causal", "replayed"), [("contiguous", True, 3), ("zigzag", True, 5),
                                                            ("zigzag", False, 1)])
def test_a_ring_of_256_replays_one_rank_of_each_kind(layout, causal, replayed, monkeypatch):
    # contiguous: rank 0 (its own block), 1 (one earlier block), the rest (two or more); zigzag:
    # ranks 0, 1, size-2, size-1 and those between (two or more earlier and later blocks each)
    calls = []
    step = step_memory._Step.step
    monkeypatch.setattr(step_memory._Step, "step", lambda self, cfg, ring: calls.append(ring.rank) or step(
        self, cfg, ring))
    cfg = RunConfig(ulysses=1, ring=256, seq_len=256 * 16, num_heads=2, num_kv_heads=2, head_dim=8, causal=causal,
                    ring_layout=layout, dtype="bfloat16")
    peak = step_peak_bytes(cfg)
    assert len(calls) == replayed
    assert peak == max(ring_rank_peak_bytes(cfg, r) for r in (0, 1, 2, 254, 255))
