"""Alpha-beta fits of collectives and rates of kernels, from raw measurements (torch-free).

Collectives use the Hockney model time = alpha + S / beta with the nccl-tests conventions
(NVIDIA/nccl-tests doc/PERFORMANCE.md): beta is the algorithm bandwidth algbw = S / t at large
messages and busbw = algbw x factor, the factor being 2(n-1)/n for all-reduce, (n-1)/n for
all-gather, reduce-scatter and all-to-all, and 1 for send/recv.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import numpy as np

from sp_planner.calibration.measurements import CollectiveSample, Measurements
from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.cost.kernels import FLASH_BWD_FLOPS_FACTOR, flash_flops
from sp_planner.errors import UserInputError
from sp_planner.specs.calibration import (
    AttentionCurve,
    AttentionRate,
    CalibrationData,
    CollectiveFit,
    GemmRate,
    TimedPoint,
)


# How much faster than measured the fit may time the largest message (timer noise) before its
# bandwidth is taken from that message instead.
LARGEST_MESSAGE_SLACK = 0.05


def fit_alpha_beta(sizes_bytes, times_s, *, what: str = "the measurements") -> tuple[float, float]:
    """Least squares on time = alpha + size / beta, in relative error (each row divided by its time).

    Relative error lets the small messages set alpha and the large ones beta (in absolute error
    the largest sizes would swamp the latency). A negative intercept means the latency is below
    the timer's resolution: alpha is then 0 and beta refit through the origin (the constrained
    least-squares optimum). Returns (alpha_s, beta_bytes_per_s).
    """
    x = np.asarray(sizes_bytes, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    if x.shape != t.shape or len(np.unique(x)) < 2:
        raise UserInputError(f"{what}: an alpha-beta fit needs at least two distinct message sizes")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t)) and np.all(x > 0) and np.all(t > 0)):
        raise UserInputError(f"{what}: sizes and times must be positive and finite")
    rows = np.stack([1.0 / t, x / t], axis=1)  # (alpha + x*g) / t = 1 for every point
    (alpha, inv_beta), *_ = np.linalg.lstsq(rows, np.ones_like(t), rcond=None)
    if alpha < 0:
        alpha, inv_beta = 0.0, float(np.sum(x / t) / np.sum((x / t) ** 2))
    if not inv_beta > 0:
        raise UserInputError(
            f"{what}: times do not grow with message size ({', '.join(f'{s:.0f} B {v:.3g} s' for s, v in zip(x, t))}),"
            " so no bandwidth can be fitted; measure larger messages or more iterations")
    beta = 1.0 / inv_beta
    # The largest message sets the bandwidth a plan's gradients and activations move at (megabytes
    # to gigabytes): the fit may not time it more than LARGEST_MESSAGE_SLACK faster than it was
    # measured, else its bandwidth is that message's. A noisy small message (slower than a larger
    # one) drags a relative-error fit's slope: on a 2-core CPU the fitted all-gather took 16 MiB
    # in 7.97 ms where 13.55 ms was measured (busbw 1.45x the best point).
    big = int(np.argmax(x))
    if alpha + x[big] / beta < (1 - LARGEST_MESSAGE_SLACK) * t[big] and t[big] > alpha:
        beta = float(x[big] / (t[big] - alpha))
    return float(alpha), float(beta)


def fit_collectives(samples: tuple[CollectiveSample, ...]) -> tuple[CollectiveFit, ...]:
    """One fit per (collective, link, group size); a size's time is its slowest member rank's,
    since a collective is finished only when every member is."""
    by_key: dict[tuple, dict[int, float]] = defaultdict(dict)
    for s in samples:
        sizes = by_key[(s.collective, s.link, s.group_size)]
        sizes[s.size_bytes] = max(sizes.get(s.size_bytes, 0.0), s.time_s)
    fits = []
    for (collective, link, group_size), by_size in sorted(by_key.items()):
        points = tuple(TimedPoint(size_bytes=x, time_s=t) for x, t in sorted(by_size.items()))
        alpha, beta = fit_alpha_beta([p.size_bytes for p in points], [p.time_s for p in points],
                                     what=f"{collective} on {group_size} ranks ({link}-node)")
        fits.append(CollectiveFit(collective=collective, link=link, group_size=group_size, alpha_s=alpha,
                                  beta_bytes_per_s=beta, busbw_bytes_per_s=beta * bus_factor(collective, group_size),
                                  points=points))
    return tuple(fits)


def attention_flops(*, batch: int, heads: int, tokens: int, head_dim: int, causal: bool, backward: bool) -> float:
    """FlashAttention-2 convention (Dao 2023, section 4.1): a causal mask halves the useful FLOPs."""
    flops = float(flash_flops(batch, heads, head_dim, tokens, tokens))
    return flops * (0.5 if causal else 1.0) * (FLASH_BWD_FLOPS_FACTOR if backward else 1.0)


def _median_by(items, key) -> dict:
    """key(item) -> median time over ranks (compute is a per-device figure; the median keeps one
    disturbed rank from moving it)."""
    times: dict = defaultdict(list)
    for item in items:
        times[key(item)].append(item.time_s)
    return {k: statistics.median(v) for k, v in times.items()}


def gemm_rates(measurements: Measurements) -> tuple[GemmRate, ...]:
    medians = _median_by(measurements.gemm, lambda g: (g.name, g.m, g.n, g.k))
    return tuple(GemmRate(name=name, m=m, n=n, k=k, time_s=t, flops_per_s=2.0 * m * n * k / t)
                 for (name, m, n, k), t in medians.items())


def attention_curves(measurements: Measurements) -> tuple[AttentionCurve, ...]:
    medians = _median_by(measurements.attention,
                         lambda a: (a.direction, a.causal, a.heads, a.head_dim, a.tokens, a.batch))
    curves: dict[tuple, list[AttentionRate]] = defaultdict(list)
    for (direction, causal, heads, head_dim, tokens, batch), t in sorted(medians.items()):
        flops = attention_flops(batch=batch, heads=heads, tokens=tokens, head_dim=head_dim, causal=causal,
                                backward=direction == "bwd")
        curves[(direction, causal, heads, head_dim)].append(
            AttentionRate(tokens=tokens, batch=batch, time_s=t, flops_per_s=flops / t))
    return tuple(AttentionCurve(direction=d, causal=c, heads=h, head_dim=hd, points=tuple(points))
                 for (d, c, h, hd), points in curves.items())


def copy_bandwidth(measurements: Measurements) -> float | None:
    """Best read+write rate over the copy sizes (the largest sizes are past the caches)."""
    medians = _median_by(measurements.memory_copy, lambda c: c.size_bytes)
    rates = [2.0 * size / t for size, t in medians.items()]
    return max(rates) if rates else None


def calibration_data(measurements: Measurements) -> CalibrationData:
    return CalibrationData(
        environment=measurements.environment, collectives=fit_collectives(measurements.collectives),
        gemm=gemm_rates(measurements), attention=attention_curves(measurements),
        copy_bytes_per_s=copy_bandwidth(measurements),
    )
