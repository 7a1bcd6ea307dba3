"""Self-contained reports: index.html (tables, inline SVG figures), plans.csv and summary.json."""

from sp_planner.report.runs import RunRecord, read_run_record
from sp_planner.report.writer import REPORT_FILES, render_index, write_report

__all__ = ["REPORT_FILES", "RunRecord", "read_run_record", "render_index", "write_report"]
