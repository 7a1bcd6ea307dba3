"""One ring step's passes against a hand derivation on the toy specs (cost.ring_steps)."""

import numpy as np
import pytest

from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.ring_impl import TE_1_9_RING, TE_RING, YUNCHANG_RING
from sp_planner.cost.ring_steps import ring_step_compute

# 1 sequence, 4 query heads and 2 KV heads of 16 on a rank, 1024 tokens a ring rank.
SHAPE = dict(batch=np.array([1.0]), heads=4, kv_heads=2, head_dim=16, block=np.array([1024.0]), elem_bytes=2)


def test_full_mask_runs_full_blocks_without_copies(hardware):
    # Toy profile: 100 TFLOPS, forward efficiency 0.5 flat, backward 0.4, at every length.
    # A full 1024 x 1024 block: 4 x 1 x 4 heads x 16 x 1024^2 FLOPs forward, 2.5x that backward.
    steps = ring_step_compute(hardware, causal=False, zigzag=np.array([False]), ring_impl=YUNCHANG_RING, **SHAPE)
    fwd = 4 * 4 * 16 * 1024 ** 2 / 50e12
    assert steps.first_fwd_s[0] == pytest.approx(fwd) and steps.later_fwd_s[0] == pytest.approx(fwd)
    assert steps.first_bwd_s[0] == pytest.approx(2.5 * fwd * 0.5 / 0.4)
    assert steps.copy_fwd_s[0] == 0 and steps.copy_bwd_s[0] == 0
    # Q is 1024 x 4 x 16 = 65,536 elements, K 32,768: yunchang's merge moves 38 bytes an element,
    # its ends 12, and a backward step accumulates 10 bytes for each element of dQ, dK and dV.
    assert steps.q_elems[0] == 65536 and steps.kv_elems[0] == 32768
    assert steps.merge_s[0] == pytest.approx(float(memory_pass_time_s(hardware, 38 * 65536)))
    assert steps.ends_s[0] == pytest.approx(float(memory_pass_time_s(hardware, 12 * 65536)))
    assert steps.accum_s[0] == pytest.approx(float(memory_pass_time_s(hardware, 10 * (65536 + 2 * 32768))))


def test_zigzag_later_steps_are_half_blocks_with_their_copies(hardware):
    full = ring_step_compute(hardware, causal=True, zigzag=np.array([False]), ring_impl=TE_1_9_RING, **SHAPE)
    zig = ring_step_compute(hardware, causal=True, zigzag=np.array([True]), ring_impl=TE_1_9_RING, **SHAPE)
    # The contiguous layout's slowest rank runs full later blocks, zigzag half ones (S/R x S/2R).
    assert zig.later_fwd_s[0] == pytest.approx(full.later_fwd_s[0] / 2)
    assert zig.later_bwd_s[0] == pytest.approx(full.later_bwd_s[0] / 2)
    # The causal diagonal is the same either way; Transformer Engine's ring up to v1.9 copies
    # halves (read + write bf16: the larger of K and V's halves, 2 x 32,768 elements, and Q's,
    # 65,536 / 2, forward; of K and V's and Q, O and dO's, 3 x 65,536 / 2, backward), from v1.10
    # it takes views and copies none.
    assert zig.first_fwd_s[0] == full.first_fwd_s[0]
    assert zig.copy_fwd_s[0] == pytest.approx(float(memory_pass_time_s(hardware, 2 * 2 * 32768)))
    assert zig.copy_bwd_s[0] == pytest.approx(float(memory_pass_time_s(hardware, 2 * 2 * 3 * 65536 / 2)))
    assert full.copy_fwd_s[0] == 0
    views = ring_step_compute(hardware, causal=True, zigzag=np.array([True]), ring_impl=TE_RING, **SHAPE)
    assert views.copy_fwd_s[0] == 0 and views.copy_bwd_s[0] == 0
    assert zig.merge_s[0] == pytest.approx(float(memory_pass_time_s(hardware, 6 * 65536)))
