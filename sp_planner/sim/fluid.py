"""Flows sharing the cluster's links: max-min fair rates, and their hand-over as flows finish.

max_min_rates: progressive filling (Bertsekas & Gallager, Data Networks, 2nd ed., section 6.5.2).
Those rates hold only while the same flows run. When one flow of a phase finishes first (a ring's
network hop carries 1/r of what its node-local hops do), the links it crossed are freed and the
remaining flows take them up: completion_times recomputes the rates at each completion (the same
progressive filling, applied between the events at which the set of flows changes). Timing every flow at
its first rate would keep a flow at a shared link's half after its neighbour left, and make a
phase slower as the neighbour got slower still (it would finish later, holding its half longer
but freeing more bytes to no one).
"""

from __future__ import annotations

import numpy as np


def max_min_rates(routes: np.ndarray, capacity: np.ndarray, weights: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Max-min fair rate of each flow and the edge that froze it.

    routes: (num_flows, hops) edge ids, padded with -1; capacity: (num_edges,) bytes/s.
    weights: (num_flows, hops), how many flows of equal rate each entry of `routes` stands for
    on its edge (sp_planner.sim.symmetry's quotient network); 1 when omitted.
    """
    num_flows = routes.shape[0]
    rates = np.zeros(num_flows)
    frozen_by = np.full(num_flows, -1, dtype=np.int64)
    if num_flows == 0:
        return rates, frozen_by
    valid = routes >= 0
    flow_of = np.repeat(np.arange(num_flows), valid.sum(axis=1))
    # Only the edges some flow crosses, renumbered 0..used-1: the counts below stay small.
    edge_ids, edge_of = np.unique(routes[valid], return_inverse=True)  # flattened (flow, edge) incidence
    load = None if weights is None else weights[valid]
    num_edges = edge_ids.size
    remaining = capacity[edge_ids].astype(float)
    active = np.ones(num_flows, dtype=bool)
    level = 0.0
    while active.any():
        live = active[flow_of]
        count = np.bincount(edge_of[live], weights=None if load is None else load[live], minlength=num_edges)
        used = count > 0
        share = np.full(num_edges, np.inf)
        share[used] = remaining[used] / count[used]
        increment = share.min()
        level += increment
        remaining[used] -= increment * count[used]
        saturated = used & (share <= increment * (1 + 1e-9))
        hit = live & saturated[edge_of]
        newly_mask = np.zeros(num_flows, dtype=bool)  # a mask, not np.unique: same sorted flows, no hashing
        newly_mask[flow_of[hit]] = True
        newly = np.flatnonzero(newly_mask)
        rates[newly] = level
        # Remember one saturated edge per flow (the first on its route).
        first = np.full(num_flows, -1, dtype=np.int64)
        first[flow_of[hit][::-1]] = edge_ids[edge_of[hit][::-1]]
        frozen_by[newly] = first[newly]
        active[newly] = False
    return rates, frozen_by


def completion_times(routes: np.ndarray, capacity: np.ndarray, sizes: np.ndarray, speed: np.ndarray,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seconds until each flow finishes, the edge that froze it in the first allocation).

    routes / capacity / weights as max_min_rates; `sizes` the bytes of each flow;
    `speed` what a flow achieves of its max-min rate (the measured collective efficiency). Each
    round gives the flows still running their max-min rates, runs them until the next one
    finishes, and takes the finished ones out; flows of equal size and rate finish together, so a
    phase takes as many rounds as its distinct finishing times (one for a uniform collective).
    """
    num_flows = routes.shape[0]
    finish = np.zeros(num_flows)
    remaining = np.asarray(sizes, dtype=float).copy()
    running = np.ones(num_flows, dtype=bool)
    first_frozen_by = np.full(num_flows, -1, dtype=np.int64)
    now = 0.0
    while running.any():
        idx = np.flatnonzero(running)
        rates, frozen_by = max_min_rates(routes[idx], capacity, None if weights is None else weights[idx])
        if idx.size == num_flows:  # the first allocation (every later round has lost a flow)
            first_frozen_by = frozen_by
        progress = rates * speed[idx]  # bytes/s
        left = remaining[idx] / progress
        step = left.min()
        now += step
        done = left <= step * (1 + 1e-9)
        finish[idx[done]] = now
        remaining[idx] -= progress * step
        running[idx[done]] = False
    return finish, first_frozen_by
