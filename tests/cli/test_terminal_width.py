"""sp-plan's table in a real pseudo-terminal of 80 and 120 columns: every degree visible, nothing cut."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.present.expressible import expressible_plans
from sp_planner.search import search
from sp_planner.sim.rerank import rerank_by_simulation
from sp_planner.specs.workload import Workload

README = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k"]
DEGREES = ("tp", "pp", "dp", "ulysses", "ring")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _in_pty(args: list[str], columns: int, exit_code: int = 0) -> str:
    """Run sp-plan with stdout on a pseudo-terminal `columns` wide; return what the terminal got."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm", PYTHONPATH=os.getcwd(), NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sp_planner.cli.plan_cmd import main; main(sys.argv[1:])", *args],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(120) == exit_code, proc.stderr.read()
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def _table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Ranked plans"))
    end = next(i for i in range(start + 3, len(lines)) if not lines[i].strip() or not lines[i].split()[0].isdigit())
    return lines[start + 1:end]


@pytest.mark.parametrize("columns, extra", [(80, []), (80, ["--simulate", "3"]), (120, []), (120, ["--wide"])])
def test_ranked_table_fits_the_terminal_with_every_degree(columns, extra):
    text = _in_pty([*README, *extra], columns)
    header, rule, *rows = _table_lines(text)
    assert all(len(line) <= columns for line in (header, rule, *rows)), [len(line) for line in (header, *rows)]
    assert "…" not in "".join((header, *rows))  # no column squeezed
    names = header.split()
    assert all(name in names for name in DEGREES)
    assert "% peak" in header and ("model MFU (full square)" in header) == ("--wide" in extra)
    assert ("sim step" in header) == ("--simulate" in extra)
    # Row 1 holds the best plan Megatron-LM (the default framework) can run, read back from the terminal.
    a800, llama = load_hardware("a800"), load_model("llama3-8b")
    workload = Workload(seq_len=128 * 1024, global_batch=16)
    result = search(llama, a800, workload, num_nodes=2, gpus_per_node=8, top_k=10)
    mine = expressible_plans(result, "megatron", model=llama, workload=workload, num_nodes=2, gpus_per_node=8,
                             top_k=10)
    if "--simulate" in extra:  # the framework's plans are the ones simulated
        mine = rerank_by_simulation(result.model_copy(update={"ranked": mine}), llama, a800, workload,
                                    num_nodes=2, gpus_per_node=8, top_k=3).ranked
    best = mine[0]
    cells = rows[0].split()
    assert cells[0] == "1"
    assert [int(cell) for cell in cells[1:6]] == [getattr(best.plan, axis) for axis in DEGREES]
    assert f"{best.hardware_mfu:.1%}" in rows[0]


@pytest.mark.parametrize("extra", [["--wide"], ["--explain"]])
def test_wide_columns_on_80_columns_move_to_their_own_table(extra):
    # --wide (and --explain, which shows them too) needs 116 columns in one table (the README says so); on 80 the
    # degrees table stays whole and the wide columns follow in a table of their own, by rank.
    text = _in_pty([*README, *extra], 80)
    header, rule, *rows = _table_lines(text)
    assert all(len(line) <= 80 for line in text.splitlines()), max(len(line) for line in text.splitlines())
    assert "…" not in text
    assert all(name in header.split() for name in DEGREES) and "tokens/s" not in header
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Throughput of the ranked plans")))
    wide_header, _, *wide_rows = lines[start + 1:start + 1 + 2 + len(rows)]
    assert wide_header.split() == ["#", "tokens/s", "TFLOPS", "model", "MFU", "(full", "square)"]
    # Row by row, the same plans: rank 1's tokens/s is the one "why this plan" gives.
    assert [r.split()[0] for r in wide_rows] == [r.split()[0] for r in rows]
    tokens = wide_rows[0].split()[1]
    assert f"({tokens} tokens/s" in " ".join(text.split())


@pytest.mark.parametrize("columns, one_table", [(116, True), (115, False)])
def test_wide_columns_sit_beside_the_degrees_from_116_columns(columns, one_table):
    # The README: "--wide adds tokens/s ... (beside the degrees from 116 columns, in a table of
    # their own on a narrower terminal)".
    text = _in_pty([*README, "--wide"], columns)
    header, *_ = _table_lines(text)
    assert ("tokens/s" in header.split()) is one_table
    assert any(line.startswith("Throughput of the ranked plans") for line in text.splitlines()) is not one_table


def test_moe_plans_that_do_not_fit_keep_every_cell_on_80_columns():
    """DeepSeek-V3 on 32 A100s: expert degrees and a fits column make the ranked table 81 columns;
    the degrees stay whole and % peak and fits follow by rank, in a table of their own."""
    text = _in_pty(["--model", "deepseek-v3", "--hardware", "a100-80gb", "--nodes", "4", "--seq-len", "64k",
                    "--top", "3"], 80, exit_code=1)
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    header, _, *rows = _table_lines(text)
    assert header.split()[-2:] == ["GiB/GPU", "step"] and {"ep", "etp"} <= set(header.split())
    assert all(row.split()[-1] == "s" for row in rows)  # the step with its unit
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Outcome by rank"))
    outcome_header, _, *outcome = lines[start + 1:start + 1 + 2 + len(rows)]
    assert outcome_header.split() == ["#", "%", "peak", "fits"]
    assert [r.split()[0] for r in outcome] == [r.split()[0] for r in rows]
    assert all(r.split()[-1] == "no" for r in outcome)


def test_a_pipe_without_columns_gets_80():
    # `sp-plan ... | less` or `> answer.txt`: no terminal, no COLUMNS, every line within 80.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=os.getcwd())
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from sp_planner.cli.plan_cmd import main; main(sys.argv[1:])",
         *README, "--explain"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Why this plan" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


@pytest.mark.parametrize("extra", [[], ["--wide"]])
def test_a_60_column_terminal_gets_every_cell_whole(extra):
    # Under ~72 columns even the degrees beside memory and step do not fit one table: the columns
    # follow by rank in tables of their own, none squeezed to "…".
    text = _in_pty([*README, *extra], 60).split("Why this plan")[0]  # the flags below are shell code
    assert all(len(line) <= 60 for line in text.splitlines()), max(len(line) for line in text.splitlines())
    assert "…" not in text
    header, _, *rows = _table_lines(text)
    assert header.split() == ["#", *DEGREES, "ZeRO", "recompute", "micro", "GiB/GPU"]
    assert "% peak" in text and ("model MFU (full square)" in text) == ("--wide" in extra)
