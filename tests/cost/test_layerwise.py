"""cost.layerwise: ZeRO-3's layer-by-layer gathers and reduce-scatters against a hand derivation
and against the simulator's streams (sim.streams) running the same calls."""

import numpy as np
import pytest

from sp_planner.cost.layerwise import layerwise_exposed_s


def test_layerwise_gather_first_layer_never_hidden_and_slow_layers_expose_the_rest():
    # 4 layers gathering 0.25 s each: behind 0.1 s layers each of layers 2-4 exposes 0.15 s;
    # behind 1 s layers only the first gather shows, after the root unit's (0.5 s).
    assert layerwise_exposed_s(0.25, 0.0, 0.1, 4) == pytest.approx(0.25 + 3 * 0.15)
    assert layerwise_exposed_s(0.25, 0.0, 1.0, 4, before_s=0.5) == pytest.approx(0.5 + 0.25)
    # Backward: gather + reduce-scatter share the stream; the last reduce-scatter is exposed,
    # then the root unit's.
    assert layerwise_exposed_s(0.25, 0.5, 1.0, 4) == pytest.approx(0.25 + 0.5)
    # Saturated (g + r = 0.75 beside 0.5 s layers), one layer ahead: the stream runs G0 G1 RS0 G2
    # RS1 G3 RS2 RS3, the first layer's window hides G1 alone, the last's RS2 alone, so only the
    # 2 layers between expose 0.25 s each (3 had counted a window too few).
    assert layerwise_exposed_s(0.25, 0.5, 0.5, 4, after_s=0.1) == pytest.approx(0.25 + 2 * 0.25 + 0.5 + 0.1)
    # Without prefetch every gather waits in line.
    assert layerwise_exposed_s(0.25, 0.5, 1.0, 4, prefetch=False) == pytest.approx(4 * 0.25 + 0.5)


def test_work_at_the_layers_ends_hides_the_first_gather_and_last_reduce_scatter():
    # Root gather 0.1 + first gather 0.25 beside 0.2 s of TP all-gather: 0.15 exposed; the last
    # reduce-scatter 0.5 beside a 0.3 s TP reduce-scatter: 0.2; the root's 0.1 after it, whole.
    assert layerwise_exposed_s(0.25, 0.5, 1.0, 4, before_s=0.1, ahead_s=0.2, behind_s=0.3, after_s=0.1) == (
        pytest.approx(0.15 + 0.2 + 0.1))


def _prefetched_pass_s(g, r, lead, gemms, trail, layers, loss=0.0, root=0.0, with_dp=True):
    """One backward pass on the simulator's streams (sim.streams.Program), ordered as
    sim.layer_program.stage_backward orders ZeRO-3's calls: G0 and G1 first, then each layer's
    reduce-scatter after its gradients and the gather two layers on behind it."""
    from sp_planner.sim.streams import Program

    p = Program()
    ready = p.add("compute", "gemm", "loss", loss)
    landed = {0: p.add("dp_comm", "dp_comm", "G0", g if with_dp else 0.0)}
    for i in range(layers):
        if i + 1 < layers:
            landed[i + 1] = p.add("dp_comm", "dp_comm", f"G{i + 1}", g if with_dp else 0.0)
        lead_op = p.add("comm", "tp_comm", "lead", lead, (ready,))
        grads = p.add("compute", "gemm", "gemms", gemms, (lead_op, landed[i]))
        p.add("dp_comm", "dp_comm", f"RS{i}", r if with_dp else 0.0, (grads,))
        ready = p.add("comm", "tp_comm", "trail", trail, (grads,))
    p.add("dp_comm", "dp_comm", "root", root if with_dp else 0.0, (p.add("compute", "gemm", "end", 0.0, (ready,)),))
    return p.end_s


def test_prefetched_backward_is_the_longest_path_of_the_simulators_streams():
    # Saturated or not, with or without gathers (kept parameters), TP collectives around the
    # GEMMs, a loss ahead and a root unit after: the formula is the event timeline's exposure.
    rng = np.random.default_rng(7)
    for _ in range(2000):
        layers = int(rng.integers(1, 9))
        g = float(rng.choice([0.0, rng.uniform(0, 2)]))
        r, lead, gemms, trail = rng.uniform(0, 2), rng.uniform(0, 0.5), rng.uniform(0.1, 2), rng.uniform(0, 0.5)
        loss, root = float(rng.choice([0.0, rng.uniform(0, 2)])), float(rng.choice([0.0, rng.uniform(0, 1)]))
        args = (g, r, lead, gemms, trail, layers, loss, root)
        timeline = _prefetched_pass_s(*args) - _prefetched_pass_s(*args, with_dp=False)
        assert layerwise_exposed_s(g, r, lead + gemms + trail, layers, after_s=root, ahead_s=loss + lead,
                                   behind_s=trail, lead_s=lead) == pytest.approx(timeline, abs=1e-9), args


def test_a_chunk_without_layers_exposes_only_the_root_units_calls():
    # A counted split's end chunk of no decoder layer (pipeline_chunks.chunk_layer_counts(1, 2) = (0, 1)):
    # no layer gathers or reduce-scatters, the root unit's gather (0.1 s) and reduce (0.2 s) whole,
    # with or without prefetch; beside it a 1-layer chunk still exposes its layer's gather.
    assert layerwise_exposed_s(0.25, 0.5, 1.0, 0, before_s=0.1, after_s=0.2, ahead_s=0.05) == pytest.approx(0.3)
    assert layerwise_exposed_s(0.25, 0.5, 1.0, 0, before_s=0.1, prefetch=False) == pytest.approx(0.1)
    both = layerwise_exposed_s(0.25, 0.0, 1.0, np.array([0.0, 1.0]), before_s=0.1)
    assert both == pytest.approx([0.1, 0.35])
