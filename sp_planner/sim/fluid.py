"""Flows that finish early hand their share of a link to the others (progressive filling in time).

max-min fair rates (sim.flows.max_min_rates) hold only while the same flows run. When one flow
of a phase finishes first (a ring's network hop carries 1/r of what its node-local hops do), the
links it crossed are freed and the remaining flows take them up: the fluid model of max-min
sharing recomputes the rates at each completion (Bertsekas & Gallager, Data Networks, 2nd ed.,
section 6.5.2, applied between the events at which the set of flows changes). Timing every flow at
its first rate would keep a flow at a shared link's half after its neighbour left, and make a
phase slower as the neighbour got slower still (it would finish later, holding its half longer
but freeing more bytes to no one).
"""

from __future__ import annotations

import numpy as np


def completion_times(routes: np.ndarray, capacity: np.ndarray, sizes: np.ndarray, speed: np.ndarray,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seconds until each flow finishes, the edge that froze it in the first allocation).

    routes / capacity / weights as sim.flows.max_min_rates; `sizes` the bytes of each flow;
    `speed` what a flow achieves of its max-min rate (the measured collective efficiency). Each
    round gives the flows still running their max-min rates, runs them until the next one
    finishes, and takes the finished ones out; flows of equal size and rate finish together, so a
    phase takes as many rounds as its distinct finishing times (one for a uniform collective).
    """
    from sp_planner.sim.flows import max_min_rates

    num_flows = routes.shape[0]
    finish = np.zeros(num_flows)
    remaining = np.asarray(sizes, dtype=float).copy()
    running = np.ones(num_flows, dtype=bool)
    first_frozen_by = np.full(num_flows, -1, dtype=np.int64)
    now = 0.0
    first = True
    while running.any():
        idx = np.flatnonzero(running)
        rates, frozen_by = max_min_rates(routes[idx], capacity, None if weights is None else weights[idx])
        if first:
            first_frozen_by[idx] = frozen_by
            first = False
        progress = rates * speed[idx]  # bytes/s
        left = remaining[idx] / progress
        step = left.min()
        now += step
        done = left <= step * (1 + 1e-9)
        finish[idx[done]] = now
        remaining[idx] -= progress * step
        running[idx[done]] = False
    return finish, first_frozen_by
