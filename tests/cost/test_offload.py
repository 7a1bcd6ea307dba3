"""Activation CPU offloading (cost.offload): the closed forms against Transformer Engine's schedule
played out step by step, and what the plan's memory and step time make of it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.activations import saved_activation_bytes_per_layer
from sp_planner.cost.memory import memory_columns
from sp_planner.cost.offload import offload_exposed_s, stage_offload_exposed_s
from sp_planner.cost.expert_padding import NO_PADDING
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.cost.step import time_columns
from sp_planner.plan import ParallelPlan, violations
from sp_planner.candidates import Candidates
from sp_planner.specs.workload import Workload


def _scheduled_s(layers: int, offload: int, f: float, b: float, c: float) -> float:
    """One micro-batch as the TE page describes it, event by event: the first `offload` layers'
    activations go to the host on one copy queue (a layer's copy starts when its forward ends),
    at most layers - offload sets on the GPU, reloads queued as backward frees slots and needed
    before their layer's backward."""
    kept = layers - offload
    done = [0.0] * (offload + 1)  # done[i]: layer i's copy to the host finished (1-based)
    end = 0.0
    for j in range(1, layers + 1):
        start = end
        if 1 <= j - kept <= offload:  # this layer needs the slot that copy j - kept frees
            start = max(start, done[j - kept])
        end = start + f
        if j <= offload:
            done[j] = max(end, done[j - 1]) + c
    forward = end
    back = [0.0] * (layers + 1)  # back[t]: the t-th layer in backward order finished
    reloaded = [0.0] * (offload + 1)
    for t in range(1, layers + 1):
        r = t - kept  # the r-th reload brings this layer back
        start = back[t - 1]
        if r >= 1:
            # Reload r waits for a free slot (backward position r done) and the queue.
            reloaded[r] = max(back[r], reloaded[r - 1]) + c
            start = max(start, reloaded[r])
        back[t] = start + b
    return forward + back[layers]


@pytest.mark.parametrize(("layers", "offload", "f", "b", "c"), [
    (80, 40, 0.014, 0.028, 0.018),  # Llama-3-70B-like: the kept 40 layers hide every copy
    (4, 2, 1.0, 2.0, 3.0),  # the queue binds: 2 x 3 - 2 x 1 forward, 2 x 3 - 2 x 2 backward
    (3, 2, 1.0, 1.0, 5.0),  # one kept set: nothing overlaps, 2 x 5 each way
    (10, 3, 1.0, 2.5, 0.5),  # copies shorter than the layers
    (12, 10, 1.0, 2.0, 1.5),  # many offloaded, two kept
])
def test_exposed_time_is_the_schedule_beyond_the_layers(layers, offload, f, b, c):
    exposed = float(offload_exposed_s(copy_s=c, fwd_layer_s=f, bwd_layer_s=b, layers=layers, offload=offload))
    assert exposed == pytest.approx(_scheduled_s(layers, offload, f, b, c) - layers * (f + b))


def test_hand_derived_cases():
    assert float(offload_exposed_s(copy_s=3.0, fwd_layer_s=1.0, bwd_layer_s=2.0, layers=4, offload=2)) == 6.0
    assert float(offload_exposed_s(copy_s=5.0, fwd_layer_s=1.0, bwd_layer_s=1.0, layers=3, offload=2)) == 20.0
    assert float(offload_exposed_s(copy_s=9.0, fwd_layer_s=1.0, bwd_layer_s=1.0, layers=3, offload=0)) == 0.0


def test_schedule_grid_agrees_with_the_closed_form():
    for layers, offload, f, b, c in itertools.product((2, 5, 9), (1, 3, 7), (1.0, 2.0), (1.5, 3.0), (0.5, 2.5, 6.0)):
        if offload >= layers:
            continue
        exposed = float(offload_exposed_s(copy_s=c, fwd_layer_s=f, bwd_layer_s=b, layers=layers, offload=offload))
        assert exposed == pytest.approx(_scheduled_s(layers, offload, f, b, c) - layers * (f + b))


LLAMA70 = load_model("llama3-70b")
WORKLOAD = Workload(seq_len=8192, global_batch=256)


def _columns(hardware: str, offload: int):
    plan = ParallelPlan(dp=64, zero=3, micro_batch=2, cpu_offload_layers=offload)
    c = Candidates.of_plan(plan)
    hw = load_hardware(hardware)
    return (c, hw, memory_columns(LLAMA70, hw, WORKLOAD, c, domain_gpus=72),
            time_columns(LLAMA70, hw, WORKLOAD, c, gpus_per_node=72))


def test_offloading_half_the_layers_keeps_half_the_activations():
    # Megatron-Bridge's Llama-3-70B GB200 recipe (40 of 80 layers offloaded); no recompute, so the
    # activations are the layers' saved bytes only.
    _, _, full, _ = _columns("gb200-nvl72", 0)
    _, _, half, _ = _columns("gb200-nvl72", 40)
    assert half.activations_bytes[0] == pytest.approx(full.activations_bytes[0] * 40 / 80)
    assert full.peak_bytes[0] - half.peak_bytes[0] == pytest.approx(full.activations_bytes[0] / 2)


def test_copies_over_nvlink_c2c_hide_behind_forty_layers():
    _, _, _, plain = _columns("gb200-nvl72", 0)
    _, _, _, offloaded = _columns("gb200-nvl72", 40)
    assert offloaded.time.offload_s[0] == 0.0
    assert offloaded.step_time_s[0] == pytest.approx(plain.step_time_s[0])


def test_offloading_all_but_one_layer_serializes_the_copies():
    c, hw, _, step = _columns("h100-sxm", 79)
    saved = saved_activation_bytes_per_layer(LLAMA70, hw, WORKLOAD, c)[0][0]
    micro_batches = 256 / (64 * 2)
    # One kept set: each of the 79 layers waits for its copy out and its copy back at 52.77 GB/s.
    assert step.time.offload_s[0] == pytest.approx(micro_batches * 2 * 79 * saved / 52.77e9)


def test_stage_offload_exposed_by_hand():
    # The pacing stage's 80 layers, 79 offloaded: one kept set, so each copy waits whole, out and
    # back (52.77 GB/s on H100's host link), whatever the layers' times; none offloaded: 0.0, the
    # saved bytes not sized (a profile without a host link passes).
    def exposed(hardware, offload):
        c = Candidates.of_plan(ParallelPlan(dp=64, zero=3, micro_batch=2, cpu_offload_layers=offload))
        return c, stage_offload_exposed_s(LLAMA70, load_hardware(hardware), WORKLOAD, c, fwd_layer_s=1e-3,
                                          bwd_layer_s=2e-3, layers=80, sequence_parallel=True,
                                          tp_gathers=TE_TP_GATHERS, expert_row_padding=NO_PADDING)

    c, got = exposed("h100-sxm", 79)
    saved = saved_activation_bytes_per_layer(LLAMA70, load_hardware("h100-sxm"), WORKLOAD, c)[0][0]
    assert got[0] == pytest.approx(2 * 79 * saved / 52.77e9)
    assert exposed("b300", 0)[1] == 0.0


def test_a_profile_without_a_host_link_cannot_time_offloading():
    with pytest.raises(ValueError, match="host_link_bytes_per_s"):
        _columns("b300", 40)


def test_megatron_rejects_offloading_with_pipelines_recompute_or_every_layer():
    with pytest.raises(ValueError, match="pp 1 and recompute none"):
        ParallelPlan(dp=32, pp=2, cpu_offload_layers=4)
    with pytest.raises(ValueError, match="pp 1 and recompute none"):
        ParallelPlan(dp=64, recompute="selective", cpu_offload_layers=4)
    (broken,) = violations(ParallelPlan(dp=64, cpu_offload_layers=80), LLAMA70, WORKLOAD)
    assert broken.rule == "offload" and "below num_layers 80" in broken.message
    assert violations(ParallelPlan(dp=64, cpu_offload_layers=79), LLAMA70, WORKLOAD) == []


def test_no_offloading_changes_nothing():
    c = Candidates.of_plan(ParallelPlan(dp=64, zero=1, micro_batch=1))
    assert np.all(c.cpu_offload_layers == 0)
    step = time_columns(LLAMA70, load_hardware("b200"), WORKLOAD, c, gpus_per_node=8)
    assert step.time.offload_s[0] == 0.0
