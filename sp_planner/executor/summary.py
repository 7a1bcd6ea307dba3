"""Rich summary of a RunResult (torch-free)."""

from __future__ import annotations

from rich.console import Console

from sp_planner.executor.config import RunConfig
from sp_planner.executor.result import RunResult
from sp_planner.present.fit import FitColumn, FitTable, fitted_tables
from sp_planner.units import format_bytes, format_seconds, format_tokens


def _bytes_cell(value: int) -> str:
    return f"{value:,} ({format_bytes(value)})"


def _attention_shape(cfg: RunConfig) -> str:
    """head_dim, and what the run applies beyond plain attention: 'head_dim 192 (q/k) / 128 (v),
    softmax scale 0.1352 (1/sqrt(192) = 0.07217), logit softcap 50, sliding window 4K'."""
    parts = [f"head_dim {cfg.head_dim}" if cfg.v_dim == cfg.head_dim else
             f"head_dim {cfg.head_dim} (q/k) / {cfg.v_dim} (v)"]
    if cfg.softmax_scale is not None:
        parts.append(f"softmax scale {cfg.softmax_scale:.4g} (1/sqrt({cfg.head_dim}) = {cfg.head_dim ** -0.5:.4g})")
    if cfg.softcap is not None:
        parts.append(f"logit softcap {cfg.softcap:g}")
    if cfg.window is not None:
        parts.append(f"{cfg.window_kind} window {format_tokens(cfg.window)}")
    return ", ".join(parts)


ERRORS_TITLE = "error vs fp32 reference (per tensor, the rank nearest its bound)"
COMM_TITLE = "bytes one rank sends per forward+backward step"
PERF_TITLE = "time and memory (slowest / largest rank)"


def summary_tables(result: RunResult) -> tuple[FitTable, FitTable, FitTable]:
    """The errors, the bytes sent and the time and memory, each a FitTable: laid out for the
    console (present.fit), figures whole and the title above a table narrower than it."""
    rms, rms_bound = result.rms_err, result.rms_tolerance
    names = ("tensor", "max abs", "bound") + (("RMS", "bound") if rms is not None and rms_bound is not None else ())
    errors = []
    for name in ("out", "dq", "dk", "dv"):
        cells = [f"{getattr(result.max_abs_err, name):.3g}", f"{getattr(result.tolerance, name):.3g}"]
        if rms is not None and rms_bound is not None:
            cells += [f"{getattr(rms, name):.3g}", f"{getattr(rms_bound, name):.3g}"]
        errors.append((name, *cells))
    measured, predicted = result.comm_bytes_measured, result.comm_bytes_predicted
    sent = [(name, _bytes_cell(got), _bytes_cell(want), "yes" if got == want else "NO")
            for name, got, want in (("all-to-all", measured.all_to_all, predicted.all_to_all),
                                    ("p2p", measured.p2p, predicted.p2p),
                                    ("all-gather", measured.all_gather, predicted.all_gather),
                                    ("reduce-scatter", measured.reduce_scatter, predicted.reduce_scatter),
                                    ("total", measured.total, predicted.total))]
    total_s = result.time_s.fwd + result.time_s.bwd
    # The prediction is of the forward and backward together (cost.attention.attention_layer_time_s).
    perf = (("forward", format_seconds(result.time_s.fwd), "-"),
            ("backward", format_seconds(result.time_s.bwd), "-"),
            ("fwd+bwd", format_seconds(total_s),
             format_seconds(result.predicted_time_s) if result.predicted_time_s is not None else "-"),
            ("peak memory", format_bytes(result.peak_memory_bytes),
             format_bytes(result.predicted_memory_bytes) if result.predicted_memory_bytes is not None else "-"))
    return (FitTable(ERRORS_TITLE, tuple(FitColumn(n, "right") for n in names), tuple(errors)),
            FitTable(COMM_TITLE, tuple(FitColumn(n, "right") for n in ("collective", "measured", "predicted", "match")),
                     tuple(sent), row_styles=tuple(None if row[-1] == "yes" else "red" for row in sent)),
            FitTable(PERF_TITLE, tuple(FitColumn(n, "right") for n in ("quantity", "measured", "predicted")),
                     perf))


def print_summary(result: RunResult, console: Console) -> None:
    cfg = result.config
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"sp-run {verdict}: ulysses {cfg.ulysses} x ring {cfg.ring} ({cfg.world_size} "
        f"{'rank' if cfg.world_size == 1 else 'ranks'}, {cfg.device}), {'causal' if cfg.causal else 'full'}"
        f"{f' {cfg.ring_layout} {cfg.cp_comm}' if cfg.ring > 1 else ''}, {cfg.dtype}, b {cfg.batch}, "
        f"seq {format_tokens(cfg.seq_len)}, heads {cfg.heads_per_tp_rank}/kv {cfg.kv_heads_per_tp_rank} "
        f"per TP rank (tp {cfg.tp}), {_attention_shape(cfg)}"
    )
    console.print(f"kernel: {result.kernel}" + (f" [yellow]({result.kernel_note})[/yellow]"
                                                  if result.kernel_note else ""))
    for spec in summary_tables(result):
        for table in fitted_tables(spec, console):
            console.print(table)
    console.print(f"memory: {result.memory_method}")
    if result.prediction_note:
        console.print(f"prediction: {result.prediction_note}")
    for failure in result.failures:
        console.print(f"[red]{failure}[/red]")
