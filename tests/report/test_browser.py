"""Open a report in headless Chromium: it renders, shows its figures and fetches nothing.

Chromium itself makes background requests (update checks, time sync) even with
--disable-background-networking; in the net log those have the initiator "not an origin",
while anything the page asks for carries the page's origin ("null" for a file:// page).
A control page that does fetch proves the check can fail.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from sp_planner.report import read_run_record, write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed (/usr/bin/chromium; Debian package chromium)"
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars")
FIGURES = ("fig-heatmap", "fig-memory", "fig-comm", "fig-pareto", "fig-gantt", "fig-runs")
CSP_VIOLATION = "violates the following Content Security Policy"


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=True,
    )


def page_requests(net_log: Path) -> list[str]:
    """http(s) URLs the page itself requested, from a --log-net-log file."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"] for event in log["events"]
        if event["type"] == start_job and event.get("params", {}).get("initiator") != "not an origin"
        and re.match(r"https?://", event["params"].get("url", ""))
    ]


@pytest.fixture(scope="module")
def browser_report(question, result_json, tmp_path_factory) -> Path:
    """A report with one run result, so that every figure is drawn."""
    tmp = tmp_path_factory.mktemp("browser")
    result = tmp / "result.json"
    result.write_text(json.dumps(result_json()))
    out = tmp / "report"
    write_report(out, **question.report_args(), runs=[read_run_record(result)])
    return out / "index.html"


def test_page_renders_with_figures_and_requests_nothing(browser_report, tmp_path):
    shot, net_log = tmp_path / "shot.png", tmp_path / "net.json"
    done = chromium(browser_report, tmp_path, f"--screenshot={shot}", "--window-size=1400,4000",
                    f"--log-net-log={net_log}", "--enable-logging=stderr", "--v=0")
    pixels = matplotlib.image.imread(shot)[..., :3]  # (height, width, rgb) floats in [0, 1]
    assert pixels.shape[:2] == (4000, 1400)
    ink = (pixels < 0.9).any(axis=-1)
    # Text, tables and the heatmap cover far more than a blank or error page would.
    assert ink.mean() > 0.05
    rgb = (pixels * 255).astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 100  # figures, not only black text on white
    assert page_requests(net_log) == []
    assert CSP_VIOLATION not in done.stderr


def test_dom_holds_every_figure_and_no_network_reference(browser_report, tmp_path):
    dom = chromium(browser_report, tmp_path, "--dump-dom").stdout
    for figure_id in FIGURES:
        match = re.search(rf'<figure id="{figure_id}">(.*?)</figure>', dom, re.DOTALL)
        assert match, figure_id
        assert match.group(1).count("<svg") == 1 and "<path" in match.group(1)
    assert dom.count("<svg") == len(FIGURES)
    assert not re.search(r'\b(?:src|href)="https?:', dom)
    assert "<script" not in dom


def test_the_request_check_catches_a_page_that_fetches(tmp_path):
    page = tmp_path / "fetching.html"
    # Port 9 on the loopback refuses at once; nothing leaves the machine.
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">')
    net_log = tmp_path / "net.json"
    chromium(page, tmp_path, f"--screenshot={tmp_path / 's.png'}", "--window-size=200,200",
             f"--log-net-log={net_log}")
    assert page_requests(net_log) == ["http://127.0.0.1:9/x.png"]
