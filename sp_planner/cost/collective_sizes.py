"""How a collective's message size slows it inside one NVLink domain (vectorized).

cost.links times a ring collective alpha-beta: the bytes at the profile's busbw fraction, measured
by nccl-tests at gigabyte messages, plus NCCL's per-step ring latency. Measured curves fall below
that between about 1 MiB and a few hundred MiB, where NCCL runs fewer channels and switches
protocols: 8 x A100 all_reduce takes 1327.6 us at 128 MiB against the alpha-beta 1047 us of its
own 16 GiB busbw. Tensor-parallel all-gathers and reduce-scatters (16-128 MiB on most layers),
gradient buckets and FSDP's per-layer calls sit in that range.

A call of `tensor` bytes (the all-reduce's and the all-to-all's input, the all-gather's output, the
reduce-scatter's input) over n ranks runs at `size_factor` x its alpha-beta time, the factor being
the measured time over the alpha-beta time of the same curve's own plateau (busbw at its largest
message) and the latencies cost.links charges the call (NCCL's 3.4 us per ring step on NVLink,
Simple protocol; one for an all-to-all's concurrent sends): so the curve's shape is
taken, and the profile's plateau kept. The measured time is read linearly in log-log between points; at least
1 (noise above the alpha-beta line is not a speed-up), 1 from the largest point up, and the
smallest point's factor below it (1 MiB on the XLA curves: the latency term is NCCL's own there),
where cost.nccl_protocols may find NCCL's LL or LL128 faster (inside the measured range the
measurement stands, whatever protocol NCCL ran: Sized.measured);
a measured time above that of a larger message is held to it (a smaller message cannot take longer).
A group size between the measured ones takes the nearest in log2.

Curves (sp_planner/data/collective_sizes.json, written by scripts/extract_collective_sizes.py, each
family's entry naming its source): Hopper (measured on H100; H200 and H800 take it, the H800's
8-lane NVLink an assumption), B200, GB200 and GB300 from OpenXLA's collective table
(groups of 2, 4 and 8 on one HGX node; 4-64 GPUs of an NVL72 rack, every group busy at once); B300
(HGX) takes B200's, an assumption; all four have all-to-all curves (Ulysses, MoE dispatch). Ampere
(A100, A800) from nccl-tests all_reduce on 8 x A100 SXM, which its all-gathers and reduce-scatters
take as well (an assumption: no A100 table of those); its all-to-alls are not sized (none found).
Not modelled (factor 1): groups that leave the node (no InfiniBand curve by size was found; the
only multi-node one, AWS EFA, is a different fabric), point-to-point (ring K/V steps, pipeline
sends), Ampere's all-to-all, profiles of no listed family (L20, L40S, Ascend, MI300X, user
profiles) and profiles sp-calibrate measured (their alpha-beta fit spans the sizes they timed).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import NamedTuple

import numpy as np

from sp_planner.cost.families import PROFILE_FAMILY, profile_key
from sp_planner.specs.hardware import HardwareProfile

# NCCL's ring latency per step on NVLink, Simple protocol (src/graph/tuning.cc hwLatencies; every
# NVLink profile's intra_node.latency_s): the alpha of each curve's own alpha-beta line.
NVLINK_RING_STEP_S = 3.4e-6
SIZED_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
# Families whose curves stand for another family's GPUs (module docstring).
BORROWED_FAMILY = {"blackwell-ultra": "blackwell"}


def ring_rounds(collective: str) -> int:
    """Rounds of n-1 ring steps: two for an all-reduce (reduce-scatter, then all-gather), else one
    (an all-to-all sends (n-1)/n of its tensor once)."""
    return 2 if collective == "all_reduce" else 1


def bus_factor(collective: str, group_size: int) -> float:
    """nccl-tests busbw / algbw for a group of `group_size` ranks (doc/PERFORMANCE.md): the share of
    the tensor each rank sends, 2(n-1)/n for an all-reduce, (n-1)/n for an all-gather, a
    reduce-scatter and an all-to-all, 1 for send/recv."""
    n = group_size
    if collective == "all_reduce":
        return 2 * (n - 1) / n
    if collective in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    if collective == "p2p":
        return 1.0
    raise ValueError(f"unknown collective {collective!r}")


def all_reduce_shares(group_sizes) -> np.ndarray:
    """bus_factor("all_reduce", n) for each group size in `group_sizes` (candidate columns), called
    once per distinct size (a search's columns hold a few sizes over 10^5 rows)."""
    n = np.asarray(group_sizes, dtype=np.int64)
    shares = np.zeros(int(n.max(initial=0)) + 1)
    for size in np.flatnonzero(np.bincount(n.ravel())):  # the sizes present
        shares[size] = bus_factor("all_reduce", int(size))
    return shares[n]


def latency_steps(collective: str, group_size: int) -> int:
    """Link hops in sequence, as cost.links charges latency: a ring all-gather or reduce-scatter
    takes n-1 steps, an all-reduce 2(n-1), an all-to-all and a p2p step one."""
    if collective in ("all_reduce", "all_gather", "reduce_scatter"):
        return ring_rounds(collective) * (group_size - 1)
    return 1


@cache
def _curves() -> dict:
    text = (resources.files("sp_planner") / "data" / "collective_sizes.json").read_text(encoding="utf-8")
    return json.loads(text)["families"]


class _Curve(NamedTuple):
    """One measured curve: log tensor bytes, log seconds (held non-increasing towards small
    messages), and its own alpha-beta line (busbw share, plateau busbw, latency)."""

    log_bytes: np.ndarray
    log_time: np.ndarray
    busbw_share: float
    plateau_bytes_per_s: float
    latency_s: float

    def alpha_beta_s(self, tensor):
        return self.busbw_share * tensor / self.plateau_bytes_per_s + self.latency_s


@cache
def _curve(family: str, collective: str, group_size: int) -> _Curve:
    points = np.asarray(_curves()[family]["curves"][collective][str(group_size)], dtype=np.float64)
    points = points[points[:, 0] >= 2**20] if family != "ampere" else points
    tensor, rate = points[:, 0], points[:, 1]
    # A smaller message never takes longer than a larger one: a time above a larger size's is the
    # table's noise (XLA's H100 all-to-all: 55 us at 1 MiB, 25 us at 2 MiB), held to that time.
    measured_s = np.minimum.accumulate((tensor / rate)[::-1])[::-1]
    share = bus_factor(collective, group_size)
    return _Curve(np.log(tensor), np.log(measured_s), share, share * rate[-1],  # busbw at the largest message
                  latency_steps(collective, group_size) * NVLINK_RING_STEP_S)


def _curve_factor(curve: _Curve, tensor: np.ndarray) -> np.ndarray:
    """The measured time (log-log between points) over the curve's own alpha-beta time, at least
    1; the smallest point's factor below it, 1 from the largest up."""
    log_tensor = np.log(np.maximum(tensor, 1.0))
    low, high = curve.log_bytes[0], curve.log_bytes[-1]
    inside = np.exp(np.interp(log_tensor, curve.log_bytes, curve.log_time)) / curve.alpha_beta_s(tensor)
    first = np.exp(curve.log_time[0]) / curve.alpha_beta_s(np.exp(low))
    factor = np.where(log_tensor < low, first, np.where(log_tensor >= high, 1.0, inside))
    return np.maximum(factor, 1.0)


def _family(hardware: HardwareProfile) -> str | None:
    if hardware.calibration is not None:
        return None  # sp-calibrate's alpha-beta fit is the measured machine's own, over its sizes
    family = PROFILE_FAMILY.get(profile_key(hardware))
    if family is None:
        return None
    family = BORROWED_FAMILY.get(family, family)
    return family if family in _curves() else None


def ring_tensor_bytes(collective: str, sent_bytes, group_size):
    """The tensor of a ring call in which each rank sends `sent_bytes` (sent = rounds x (n-1)/n of it)."""
    n = np.asarray(group_size, dtype=np.float64)
    return np.asarray(sent_bytes, dtype=np.float64) * n / (ring_rounds(collective) * np.maximum(n - 1, 1))


class Sized(NamedTuple):
    """size_factor's factor, and where the call's size lies in its curve's measured range (at or
    above the smallest measured point: the measurement times it, whatever protocol NCCL ran)."""

    factor: np.ndarray
    measured: np.ndarray


def size_factor(hardware: HardwareProfile, collective: str, tensor_bytes, group_size, where=None):
    """Factor (>= 1) on the alpha-beta time of a ring `collective` of `tensor_bytes` over
    `group_size` ranks inside one NVLink domain; 1 where no curve applies (module docstring) and
    outside `where` (a mask of the rows that are inside a node; all when None)."""
    return sized(hardware, collective, tensor_bytes, group_size, where).factor


def sized(hardware: HardwareProfile, collective: str, tensor_bytes, group_size, where=None) -> Sized:
    """size_factor, with the rows whose size a curve measured (Sized.measured; False where no curve
    applies)."""
    tensor, group = np.broadcast_arrays(np.asarray(tensor_bytes, dtype=np.float64),
                                        np.asarray(group_size, dtype=np.float64))
    out = np.ones(tensor.shape)
    measured_rows = np.zeros(tensor.shape, dtype=bool)
    family = _family(hardware)
    if family is None or collective not in _curves()[family]["curves"]:
        return Sized(out, measured_rows)
    rows = group > 1 if where is None else (group > 1) & where
    if not rows.any():
        return Sized(out, measured_rows)
    measured = np.array(sorted(int(g) for g in _curves()[family]["curves"][collective]))
    # The nearest measured group size in log2: the midpoints between them split the axis.
    nearest = np.searchsorted((np.log2(measured[1:]) + np.log2(measured[:-1])) / 2, np.log2(group[rows]))
    values = np.empty(int(rows.sum()))
    inside = np.zeros(int(rows.sum()), dtype=bool)
    for i, g in enumerate(measured):
        at = nearest == i
        if at.any():
            curve = _curve(family, collective, int(g))
            values[at] = _curve_factor(curve, tensor[rows][at])
            inside[at] = np.log(np.maximum(tensor[rows][at], 1.0)) >= curve.log_bytes[0]
    out[rows] = values
    measured_rows[rows] = inside
    return Sized(out, measured_rows)
