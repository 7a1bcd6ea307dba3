"""The console scripts' entry points: Ctrl-C while a command's modules load is one line, exit 130."""

from __future__ import annotations

import re
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
