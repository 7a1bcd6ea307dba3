"""cost.layer_walk: ZeRO-3's pass walked layer by layer is cost.layerwise's closed forms on
identical layers (both passes, with and without prefetch), and the simulator's streams
(sim.streams, ordered as sim.layer_program orders the calls) on layers that differ."""

import numpy as np
import pytest

from sp_planner.cost.layer_walk import walked_exposed_s
from sp_planner.cost.layerwise import layerwise_exposed_s


def _some(rng, rows, low, high):
    """Uniform draws, a fifth of them 0 (kept parameters, a pass without that edge)."""
    return np.where(rng.random(rows) < 0.2, 0.0, rng.uniform(low, high, rows))


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("layers", range(1, 7))
def test_the_walk_over_identical_layers_is_the_closed_form(layers, prefetch):
    rng = np.random.default_rng(layers + 10 * prefetch)
    rows = 4000
    g, r, lead, behind = (_some(rng, rows, 0, high) for high in (2, 2, 0.5, 0.5))
    opening, before, after = (_some(rng, rows, 0, high) for high in (2, 1, 1))
    w = rng.uniform(0.1, 2, rows) + lead + behind  # the TP collectives are part of the window
    each = np.ones((layers, 1))
    # Forward: the root's gather before, no reduce-scatter; the lead before every layer's GEMM.
    walked = walked_exposed_s(each * g, 0.0, each * w, each * lead, before_s=before, prefetch=prefetch)
    closed = layerwise_exposed_s(g, 0.0, w, layers, before_s=before, prefetch=prefetch, ahead_s=lead)
    np.testing.assert_allclose(walked, closed, rtol=1e-9, atol=1e-12)
    # Backward: the loss's work before the first layer, the root's reduce-scatter after the last.
    walked = walked_exposed_s(each * g, each * r, each * w, each * lead, after_s=after, opening_s=opening,
                              behind_s=each * behind, prefetch=prefetch)
    closed = layerwise_exposed_s(g, r, w, layers, after_s=after, prefetch=prefetch, ahead_s=opening + lead,
                                 behind_s=behind, lead_s=lead)
    np.testing.assert_allclose(walked, closed, rtol=1e-9, atol=1e-12)
    # The embedding's backward before the root's reduce-scatter hides the last one's alone in the
    # closed form; there it is what the walk gives where the stream is not behind before the last.
    tail = rng.uniform(0, 0.5, rows)
    kept = (2 * r + g <= w) & (g <= w)
    walked = walked_exposed_s(each * g, each * r, each * w, each * lead, after_s=after, opening_s=opening,
                              behind_s=each * behind, tail_s=tail, prefetch=prefetch)
    closed = layerwise_exposed_s(g, r, w, layers, after_s=after, prefetch=prefetch, ahead_s=opening + lead,
                                 behind_s=behind, lead_s=lead, tail_s=tail)
    np.testing.assert_allclose(walked[kept], closed[kept], rtol=1e-9, atol=1e-12)


def _timeline_s(g, r, lead, gemms, trail, *, opening, before, after, tail, with_dp=True):
    """One pass on the simulator's streams (sim.streams.Program) in sim.layer_program's order,
    each layer its own calls and compute: the root's and every gather first in forward (no
    reduce-scatter), G0 G1 and then each layer's reduce-scatter after its gradients and the
    gather two layers on behind it in backward; the root's reduce-scatter after the tail."""
    from sp_planner.sim.streams import Program

    p = Program()
    scale = 1.0 if with_dp else 0.0
    n = len(g)
    forward = not any(r)
    ready = p.add("compute", "gemm", "opening", opening)
    root = p.add("dp_comm", "dp_comm", "root gather", scale * before)
    landed = {0: p.add("dp_comm", "dp_comm", "G0", scale * g[0])}
    for i in range(1, n if forward else min(n, 2)):
        landed[i] = p.add("dp_comm", "dp_comm", f"G{i}", scale * g[i])
    del root
    for i in range(n):
        lead_op = p.add("comm", "tp_comm", "lead", lead[i], (ready,))
        grads = p.add("compute", "gemm", "gemms", gemms[i], (lead_op, landed[i]))
        if not forward:
            p.add("dp_comm", "dp_comm", f"RS{i}", scale * r[i], (grads,))
            if i + 2 < n:
                landed[i + 2] = p.add("dp_comm", "dp_comm", f"G{i + 2}", scale * g[i + 2])
        ready = p.add("comm", "tp_comm", "trail", trail[i], (grads,))
    end = p.add("compute", "gemm", "tail", tail, (ready,))
    p.add("dp_comm", "dp_comm", "root reduce", scale * after, (end,))
    return p.end_s


def test_the_walk_over_layers_that_differ_is_the_simulators_streams():
    rng = np.random.default_rng(3)
    for _ in range(400):
        n = int(rng.integers(1, 8))
        backward = bool(rng.integers(2))
        g = rng.uniform(0, 2, n) * rng.choice([0.1, 1.0, 2.0], n)  # dense and MoE layers in turn, or not
        r = rng.uniform(0, 2, n) if backward else np.zeros(n)
        lead, gemms, trail = rng.uniform(0, 0.5, n), rng.uniform(0.1, 2, n), rng.uniform(0, 0.5, n)
        edges = dict(opening=float(rng.uniform(0, 1)), before=0.0 if backward else float(rng.uniform(0, 1)),
                     after=float(rng.uniform(0, 1)) if backward else 0.0, tail=float(rng.uniform(0, 0.5)))
        timeline = _timeline_s(g, r, lead, gemms, trail, **edges) - _timeline_s(g, r, lead, gemms, trail, **edges,
                                                                               with_dp=False)
        walked = walked_exposed_s(g[:, None], r[:, None], (lead + gemms + trail)[:, None], lead[:, None],
                                  before_s=edges["before"], after_s=edges["after"], opening_s=edges["opening"],
                                  behind_s=trail[:, None], tail_s=edges["tail"])
        assert walked[0] == pytest.approx(timeline, abs=1e-9), (n, backward)


def test_alternating_layers_expose_more_than_their_average():
    # Backward over 1 s layers reducing 0.2 s each and gathering 0.1 s and 1.7 s in turn: the
    # average layer (0.9 s gathers) exposes 1.7 s, its stream 0.1 s a layer behind; each 1.7 s
    # gather, queued behind the reduce-scatter before it, holds its layer back: 3.7 s.
    g = np.array([0.1, 1.7] * 4)[:, None]
    assert layerwise_exposed_s(0.9, 0.2, 1.0, 8) == pytest.approx(1.7)
    assert walked_exposed_s(g, 0.2, np.ones((8, 1)), 0.0)[0] == pytest.approx(3.7)
