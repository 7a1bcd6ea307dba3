"""The console scripts' entry points: Ctrl-C while a command's modules load is one line, exit 130; --help
and bad input answer without loading pandas or matplotlib."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sp_planner.cli import launch

ROOT = Path(__file__).resolve().parents[2]


def test_every_console_script_launches_its_own_command(monkeypatch):
    table = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n")[1].split("\n\n")[0]
    scripts = dict(re.findall(r'^(sp-[a-z]+) = "([^"]+)"$', table, re.MULTILINE))
    loaded = []
    monkeypatch.setattr(launch, "import_module", lambda name: loaded.append(name) or type("M", (), {
        "main": staticmethod(lambda: None)}))
    for script, target in scripts.items():
        module, function = target.split(":")
        assert module == "sp_planner.cli.launch"
        getattr(launch, function)()
        assert loaded[-1] == f"sp_planner.cli.{script.removeprefix('sp-')}_cmd"
    assert len(scripts) == 6


def test_ctrl_c_while_the_command_loads_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "import_module", interrupted)
    with pytest.raises(SystemExit) as stopped:
        launch.plan()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_ctrl_c_while_sp_run_or_sp_calibrate_loads_under_torchrun_is_said_by_local_rank_0(monkeypatch, capsys):
    # Every rank of a node loads the command when Ctrl-C reaches them all: each said the line.
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "import_module", interrupted)
    for name, value in {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2"}.items():
        monkeypatch.setenv(name, value)
    for command in (launch.run, launch.calibrate, launch.plan):
        with pytest.raises(SystemExit) as stopped:
            command()
        assert stopped.value.code == 130
        assert capsys.readouterr().err == ("error: interrupted\n" if command is launch.plan else "")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as stopped:
        launch.run()
    assert stopped.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_the_launcher_imports_nothing_slow():
    # The guard must be in place before pandas, pydantic or typer load.
    source = Path(launch.__file__).read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "import sys", "from importlib import import_module"]


# A console script in a fresh process, as `sp-<command> ARGS` runs it, saying on its last stderr line
# which of the slow libraries it loaded.
LOADED = """
import sys
from sp_planner.cli import launch
command = sys.argv.pop(1)
try:
    getattr(launch, command)()
finally:
    print("loaded:", *(m for m in ("pandas", "matplotlib", "torch") if m in sys.modules), file=sys.stderr)
"""
QUESTION = ("--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "32k")


def _loaded(command: str, *args: str) -> tuple[int, str, str]:
    """(exit code, the first line written, the 'loaded:' line) of `sp-<command> ARGS`, run from the
    checkout (sys.path's '')."""
    env = {"COLUMNS": "80", "TERM": "dumb", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", LOADED, command, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    *said, loaded = done.stderr.splitlines()
    return done.returncode, (done.stdout.splitlines() or said)[0], loaded


@pytest.mark.parametrize("command, args, code, first", [
    ("plan", ("--help",), 0, "Usage: sp-plan [OPTIONS]"),
    ("plan", (*QUESTION[:4], "--nodes", "0", *QUESTION[6:]), 2,  # the parser's range
     "error: Invalid value for '--nodes': Input should be greater than or equal to 1"),
    ("plan", ("--model", "nosuch", *QUESTION[2:]), 2, "error: unknown model 'nosuch'."),  # the command's checks
    ("plan", (*QUESTION, "--tp", "3"), 2, "error: pinned degrees tp 3 = 3 do not divide the GPU count 8;"),
    ("simulate", ("--help",), 0, "Usage: sp-simulate [OPTIONS] PLAN.json"),
    ("simulate", ("nosuch.json",), 2, "error: plan file nosuch.json does not exist"),
    ("report", ("--help",), 0, "Usage: sp-report [OPTIONS] PLAN.json"),
    ("run", ("--help",), 0, "Usage: sp-run [OPTIONS]"),
    ("calibrate", ("--help",), 0, "Usage: sp-calibrate [OPTIONS]"),
    ("validate", ("--help",), 0, "Usage: sp-validate [OPTIONS]"),
])
def test_help_and_bad_input_load_neither_pandas_nor_matplotlib(command, args, code, first):
    # About 0.35 s for pandas and 0.3 s for matplotlib before the first line (benchmarks/startup.py).
    said_code, said, loaded = _loaded(command, *args)
    assert (said_code, loaded) == (code, "loaded:")
    assert said.startswith(first), said


def test_a_search_loads_pandas_and_not_torch():
    # The check above sees a library the command loads: the search's frame is a pandas one.
    code, _, loaded = _loaded("plan", *QUESTION, "--top", "1")
    assert (code, loaded) == (0, "loaded: pandas")
