"""`sp-validate --report DIR`: a predicted-vs-measured figure (PNG) and every row as CSV."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sp_planner.destination import deliver_text, new_folder_mode, resolve_link  # noqa: E402
from sp_planner.figure_mark import figure_metadata, figure_signature  # noqa: E402
from sp_planner.fileio import check_output_folder  # noqa: E402
from sp_planner.validation.score import ScoredRow, ValidationResult  # noqa: E402

FIGURE_FORMAT = "png"
FIGURE_FILE = f"predicted_vs_measured.{FIGURE_FORMAT}"
CSV_FILE = "validation.csv"
REPORT_FILES = frozenset({FIGURE_FILE, CSV_FILE})
FIGURE_TITLES = {
    "model_tflops_per_gpu": "model TFLOPS per GPU",
    "mfu_percent": "MFU (%)",
    "tokens_per_s_per_gpu": "tokens/s per GPU",
    "step_time_s": "step time (s)",
}
# Colour-blind-safe qualitative palette (Okabe & Ito 2008).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")


def check_report_folder(out_dir: Path) -> None:
    """Refuse a file, or a folder holding anything but an earlier validation report."""
    # An earlier validation.csv is known by its first columns, a scored row's first fields; the
    # figure by the tools' mark in its head (a PNG of the user's bearing its name stays).
    first = ",".join(list(ScoredRow.model_fields)[:4]) + ","
    check_output_folder(out_dir, allowed=REPORT_FILES, label="--report folder", kind="a validation report",
                        signatures={CSV_FILE: first.encode(), FIGURE_FILE: figure_signature(FIGURE_FORMAT)})


def rows_frame(result: ValidationResult) -> pd.DataFrame:
    """Scored rows, then skipped rows (predicted and errors empty, with the reason and its kind:
    not_expressible, or regression for a measurement its maintainers filed as one)."""
    scored = pd.DataFrame([r.model_dump() for r in result.rows])
    skipped = pd.DataFrame([{**r.model_dump(exclude={"reason", "kind"}), "skipped_reason": r.reason,
                             "skipped_kind": r.kind} for r in result.skipped])
    frame = pd.concat([scored, skipped], ignore_index=True)
    # Whole numbers stay whole (59508217216, not 59508217216.0) where skipped rows leave them empty.
    whole = [c for c in scored.columns if pd.api.types.is_integer_dtype(scored[c]) and c in frame.columns]
    return frame.astype({c: "Int64" for c in whole})


def draw_figure(result: ValidationResult) -> Figure:
    kinds = [k for k in FIGURE_TITLES if any(r.figure == k for r in result.rows)]
    fig = Figure(figsize=(4.2 * max(1, len(kinds)), 4.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)[0]
    sources = list(dict.fromkeys(r.source for r in result.rows))
    for ax, kind in zip(axes, kinds):
        rows = [r for r in result.rows if r.figure == kind]
        low = min(min(r.measured, r.predicted) for r in rows) * 0.8
        high = max(max(r.measured, r.predicted) for r in rows) * 1.2
        ax.plot([low, high], [low, high], color="#555555", linewidth=1, label="predicted = measured")
        ax.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="#999999",
                        alpha=0.2, linewidth=0, label="within 10%")
        for colour, source in zip(PALETTE * 4, sources):
            mine = [r for r in rows if r.source == source]
            if mine:
                ax.scatter([r.measured for r in mine], [r.predicted for r in mine], s=22, color=colour,
                           label=source, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            # Minor ticks are labelled only within one decade, where there are no major ones to read.
            axis.set_minor_formatter(plain if high / low < 10 else ticker.NullFormatter())
        ax.tick_params(which="minor", labelsize=6)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel(f"measured {FIGURE_TITLES[kind]}")
        ax.set_ylabel(f"predicted {FIGURE_TITLES[kind]}")
        ax.legend(fontsize=7, loc="upper left")
    mape = "n/a" if result.mape_percent is None else f"{result.mape_percent:.1f}%"
    fig.suptitle(f"sp-validate: {len(result.rows)} published runs, MAPE {mape}", fontsize=10)
    return fig


def write_report(result: ValidationResult, out_dir: Path) -> list[Path]:
    """Write the figure and the CSV into `out_dir` (each file replaced atomically)."""
    check_report_folder(out_dir)
    resolve_link(out_dir).mkdir(mode=new_folder_mode(), exist_ok=True)  # the folder named, never its parents
    csv_path = out_dir / CSV_FILE
    deliver_text(csv_path, rows_frame(result).to_csv(index=False), what="validation table")
    png = io.BytesIO()
    draw_figure(result).savefig(png, format=FIGURE_FORMAT, dpi=120, metadata=figure_metadata(FIGURE_FORMAT))
    figure_path = out_dir / FIGURE_FILE
    deliver_text(figure_path, png.getvalue(), what="figure")
    return [figure_path, csv_path]
