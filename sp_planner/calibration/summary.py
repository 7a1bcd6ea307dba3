"""Rich tables comparing what sp-calibrate measured with what a built-in profile predicts.

The built-in side is the cost model's own prediction for the same call (sp_planner.cost.kernels
and the busbw = line rate x efficiency convention of sp_planner.cost.links), so a ratio below 1
means the planner would have been optimistic on this machine.
"""

from __future__ import annotations

from rich.console import Console

from sp_planner.calibration.fit import attention_flops
from sp_planner.cost.collective_sizes import latency_steps
from sp_planner.cost.kernels import flash_time_s
from sp_planner.present.fit import FitColumn, FitTable, fitted_tables
from sp_planner.specs.calibration import CalibrationData
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.units import format_seconds, format_tokens


def _num(value: float) -> str:
    """Three significant digits without exponents: 0.0351, 369, 3,350."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _tflops(rate: float) -> str:
    return f"{_num(rate / 1e12)} TFLOP/s"


def _gbps(rate: float) -> str:
    return f"{_num(rate / 1e9)} GB/s"


def _ratio(measured: float, predicted: float | None) -> str:
    return "" if not predicted else f"{measured / predicted:.3g}"


def compute_rows(data: CalibrationData, base: HardwareProfile | None) -> list[tuple[str, float, float | None]]:
    """(figure, measured FLOP/s or bytes/s, the base profile's prediction or None)."""
    rows: list[tuple[str, float, float | None]] = []
    if data.gemm:
        rate = sum(2.0 * g.m * g.n * g.k for g in data.gemm) / sum(g.time_s for g in data.gemm)
        rows.append((f"GEMM, layer shapes ({data.environment.dtype})", rate,
                     base.peak_bf16_flops * base.efficiency.gemm if base else None))
    for curve in sorted(data.attention, key=lambda c: (c.direction != "fwd", c.causal)):
        mask = "causal" if curve.causal else "full"
        for p in curve.points:
            predicted = None
            if base is not None:
                time_s = float(flash_time_s(base, batch=p.batch, heads=curve.heads, head_dim=curve.head_dim,
                                            q_tokens=p.tokens, kv_tokens=p.tokens, causal_diagonal=curve.causal,
                                            backward=curve.direction == "bwd"))
                predicted = attention_flops(batch=p.batch, heads=curve.heads, tokens=p.tokens,
                                            head_dim=curve.head_dim, causal=curve.causal,
                                            backward=curve.direction == "bwd") / time_s
            rows.append((f"attention {curve.direction} {mask} @ {format_tokens(p.tokens)}", p.flops_per_s, predicted))
    if data.copy_bytes_per_s is not None:
        rows.append(("memory copy (read + write)", data.copy_bytes_per_s,
                     base.hbm_bandwidth_bytes_per_s if base else None))
    return rows


def print_summary(data: CalibrationData, base: HardwareProfile | None, console: Console) -> None:
    env = data.environment
    console.print(f"[bold]Measured[/bold] {env.world_size} x {env.device_name} ({env.backend}, torch "
                  f"{env.torch_version}{', NCCL ' + env.nccl_version if env.nccl_version else ''})")
    if base is None:
        console.print(f"No built-in profile matches {env.device_name!r}; pass --base NAME to compare.")
    comm = collective_table(data, base)
    for spec in (compute_table(data, base), *((comm,) if comm is not None else ())):
        for table in fitted_tables(spec, console):  # figures whole, names wrapped at their spaces
            console.print(table)
    if comm is None:
        console.print("No collectives measured (one rank).")


def compute_table(data: CalibrationData, base: HardwareProfile | None) -> FitTable:
    """GEMM, attention and copy rates, beside `base`'s prediction and their ratio when given."""
    ref = f"{base.name} predicts" if base else None
    rows = []
    for figure, measured, predicted in compute_rows(data, base):
        fmt = _gbps if figure.startswith("memory") else _tflops
        against: tuple[str, ...] = ()
        if ref:
            assert predicted is not None, "compute_rows predicts every figure from a base profile"
            against = (fmt(predicted), _ratio(measured, predicted))
        rows.append((figure, fmt(measured), *against))
    columns = (FitColumn("figure", prose=True), FitColumn("measured", "right"),
               *((FitColumn(ref, "right"), FitColumn("measured / predicted", "right")) if ref else ()))
    return FitTable("Compute", columns, tuple(rows))


def collective_table(data: CalibrationData, base: HardwareProfile | None) -> FitTable | None:
    """Each collective's busbw and latency fit, beside `base`'s when given (None: none measured)."""
    if not data.collectives:
        return None
    rows = []
    for fit in data.collectives:
        cells = [fit.collective, fit.link, str(fit.group_size), _gbps(fit.busbw_bytes_per_s)]
        if base is not None:
            link = base.intra_node if fit.link == "intra" else base.inter_node
            effs = base.efficiency.intra_node if fit.link == "intra" else base.efficiency.inter_node
            predicted = link.bandwidth_bytes_per_s * getattr(effs, fit.collective)
            cells += [_gbps(predicted), _ratio(fit.busbw_bytes_per_s, predicted)]
        cells.append(format_seconds(fit.alpha_s))
        if base is not None:
            cells.append(format_seconds(link.latency_s * latency_steps(fit.collective, fit.group_size)))
        rows.append(tuple(cells))
    names = ["collective", "link", "ranks", "busbw", *(("predicted", "ratio") if base else ()), "alpha",
             *(("predicted alpha",) if base else ())]
    return FitTable("Collectives (nccl-tests busbw at large messages, alpha = fitted latency)",
                    tuple(FitColumn(n, "left" if n in ("collective", "link") else "right") for n in names),
                    tuple(rows))
