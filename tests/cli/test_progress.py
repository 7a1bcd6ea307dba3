"""The progress bar appears on a terminal only once the work passes half a second."""

from __future__ import annotations

import io
import time
from contextlib import contextmanager

import pytest
from rich.console import Console

from sp_planner.cli import progress
from sp_planner.cli.progress import delayed_progress

SHOW_AFTER_S = 0.1


@pytest.fixture(autouse=True)
def _fast_interactive_term(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")  # conftest pins TERM=dumb, which Rich treats as not interactive
    monkeypatch.setattr(progress, "SHOW_AFTER_S", SHOW_AFTER_S)  # 0.5 s in use; shorter keeps the test quick


def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=80), buffer


def test_quick_work_shows_nothing():
    console, buffer = _terminal()
    with delayed_progress("searching plans", console=console) as update:
        update(1, 2)
    assert buffer.getvalue() == ""


def test_slow_work_shows_the_bar():
    console, buffer = _terminal()
    with delayed_progress("searching plans", console=console) as update:
        update(3, 10)
        time.sleep(SHOW_AFTER_S * 5)
    assert "searching plans" in buffer.getvalue()
    assert "3/10" in buffer.getvalue()


@pytest.mark.parametrize(("force_terminal", "term"), [(False, "xterm"), (True, "dumb")])
def test_no_bar_off_an_interactive_terminal_however_long(monkeypatch, force_terminal, term):
    monkeypatch.setenv("TERM", term)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=force_terminal)
    with delayed_progress("searching plans", console=console):
        time.sleep(SHOW_AFTER_S * 3)
    assert buffer.getvalue() == ""


def test_the_work_can_say_what_it_is_doing():
    console, buffer = _terminal()
    with delayed_progress("searching plans", console=console) as update:
        update(2, 5, "searching 3,108 candidates: step time")
        time.sleep(SHOW_AFTER_S * 5)
    assert "searching 3,108 candidates: step time" in buffer.getvalue() and "2/5" in buffer.getvalue()


def test_search_reports_candidates_searched_in_order(monkeypatch):
    import sp_planner.search as search_module
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.search import search
    from sp_planner.specs.workload import Workload

    monkeypatch.setattr(search_module, "CHUNK_CANDIDATES", 500)  # several chunks
    seen = []
    search(load_model("llama3-8b"), load_hardware("a800"), Workload(seq_len=128 * 1024, global_batch=16),
           num_nodes=2, gpus_per_node=8, progress=lambda done, total, what=None: seen.append((done, total, what)))
    done = [d for d, _, _ in seen]
    # 5,265 with plain 1F1B; vpp 2, 4, 8 where the 32 layers and the micro-batches allow them: 10,860.
    assert done[0] == 0 and done[-1] == 10860 and done == sorted(done) and len(done) > 3
    assert {total for _, total, _ in seen} == {10860}
    assert {what for _, _, what in seen} == {"searching 10,860 candidates"}


def test_sp_run_progress_names_rank_0s_stage(tmp_path):
    from sp_planner.cli.run_modes import rank_progress

    assert rank_progress(tmp_path, 4) == (0, 4, "starting the ranks")
    (tmp_path / "rank1.stage").write_text("done")
    (tmp_path / "rank0.stage").write_text("running attention")
    assert rank_progress(tmp_path, 4) == (1, 4, "rank 0: running attention")


def _bar_recorder():
    """(the descriptions of the bars open now, innermost last; a delayed_progress stand-in that keeps them)."""
    open_bars: list[str] = []

    @contextmanager
    def recording(description, **_):
        open_bars.append(description)
        try:
            yield lambda *a, **k: None
        finally:
            open_bars.pop()

    return open_bars, recording


def test_the_look_for_a_plan_a_framework_can_express_shows_the_bar(run_main, monkeypatch):
    """--framework all renders flags down the ranking for each framework that cannot express plan 1:
    over a second each at 1,024 GPUs, with no bar until this was wrapped."""
    from sp_planner.cli import plan_cmd, plan_output
    from sp_planner.present import expressible
    from tests.cli.conftest import README_QUESTION

    open_bars, recording = _bar_recorder()
    printed: list[str] = []
    real_print = plan_output.Console.print

    def recording_print(self, *objects, **kwargs):
        printed.extend(str(o) for o in objects)
        return real_print(self, *objects, **kwargs)

    def console_text() -> str:
        return "\n".join(printed)

    monkeypatch.setattr(plan_output.Console, "print", recording_print)
    looked_under: list[tuple[str, str | None]] = []
    real_best = expressible.best_expressible

    said_first: list[bool] = []

    def best(result, name, **kwargs):
        looked_under.append((name, open_bars[-1] if open_bars else None))
        # The refusal is printed before the look down the ranking, not after it.
        said_first.append(f"{name} cannot express plan 1: " in console_text())
        return real_best(result, name, **kwargs)

    monkeypatch.setattr(plan_output, "delayed_progress", recording)
    monkeypatch.setattr(expressible, "best_expressible", best)
    assert run_main(plan_cmd, *README_QUESTION, "--framework", "all").exit_code == 0
    # Plan 1 is ulysses 8 x ring 2: DeepSpeed has no ring axis.
    assert "deepspeed" in dict(looked_under)
    assert all(bar == f"looking for a plan {name} can express" for name, bar in looked_under)
    assert said_first and all(said_first)


@pytest.mark.parametrize("output", ["table", "json", "csv"])
def test_describing_and_laying_out_the_plans_shows_the_bar(run_main, monkeypatch, output):
    """sp-plan --top 1000 spent seconds after the search's bar closed, with nothing shown: the JSON
    and CSV rows (every plan's flags) and the table's layout (Rich measures every cell) now run under one."""
    from sp_planner.cli import plan_cmd, plan_output
    from tests.cli.conftest import README_QUESTION

    open_bars, recording = _bar_recorder()
    under: list[str | None] = []

    def watched(real):
        def call(*args, **kwargs):
            under.append(open_bars[-1] if open_bars else None)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(plan_output, "delayed_progress", recording)
    for name in ("summary", "estimate_row", "ranked_tables"):
        monkeypatch.setattr(plan_output, name, watched(getattr(plan_output, name)))
    result = run_main(plan_cmd, *README_QUESTION, "--top", "3", "--format", output)
    assert result.exit_code == 0
    verb = "laying out" if output == "table" else "describing"
    assert under and set(under) == {f"{verb} 3 plans"}
