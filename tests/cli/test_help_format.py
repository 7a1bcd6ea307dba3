"""Every sp-* --help in an 80-column terminal: lines fit, option names whole, examples pasteable."""

from __future__ import annotations

import re

import pytest
import typer.main

from sp_planner.cli import calibrate_cmd, plan_cmd, report_cmd, run_cmd, simulate_cmd, validate_cmd
from sp_planner.cli.help_format import epilog_commands, epilog_lines, option_lines, wrap_command

COMMANDS = [plan_cmd, run_cmd, validate_cmd, calibrate_cmd, simulate_cmd, report_cmd]


def _help(run_main, monkeypatch, module, columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = run_main(module, "--help")
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _unwrap_examples(text: str) -> list[str]:
    """The example commands as a shell reads them: continuation lines joined."""
    commands, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if current:
            current += " " + stripped.removesuffix("\\").strip()
        elif line.startswith(("    sp-", "    torchrun ")):  # an example, indented under the epilog's heading
            current = stripped.removesuffix("\\").strip()
        else:
            continue
        if not stripped.endswith("\\"):
            commands.append(current)
            current = ""
    return commands


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_help_fits_80_columns_and_names_every_option_whole(run_main, monkeypatch, module):
    text = _help(run_main, monkeypatch, module, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    words = set(re.findall(r"--[a-z0-9][a-z0-9-]*", text))
    for param in typer.main.get_command(module.app).params:
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("--") and not param.hidden:
                assert name in words, name


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_examples_read_back_as_written(run_main, monkeypatch, module):
    text = _help(run_main, monkeypatch, module, 80)
    written = [" ".join(line.split()) for line in epilog_commands(module.EPILOG)
               if line.startswith(("sp-", "torchrun "))]
    assert written and _unwrap_examples(text) == written
    # Only options and their values: a note such as "(on node0)" pasted with a command breaks it.
    assert not any(re.search(r"[()\[\];]", command) for command in written)


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_help_ends_with_its_exit_codes(run_main, monkeypatch, module):
    # sp-simulate's and sp-report's help said nothing of their exit codes, unlike the other four.
    text = " ".join(_help(run_main, monkeypatch, module, 80).split())
    assert re.search(r"Exit codes: 0 [^.]*2 bad input\.$", text), text[-200:]


@pytest.mark.parametrize("module", [report_cmd, simulate_cmd], ids=["report", "simulate"])
def test_usage_names_the_plan_argument_as_click_does(run_main, monkeypatch, module):
    # A required argument by its name, not Typer's braces (which a shell reads as an expansion).
    usage = _help(run_main, monkeypatch, module, 80).splitlines()[0]
    assert usage.endswith("[OPTIONS] PLAN.json") and "{" not in usage


def test_a_command_breaks_between_options_and_keeps_each_with_its_value():
    line = "sp-plan --model llama3-70b --hardware h100 --nodes 8 --seq-len 256k --tp 8 --ulysses 4 --explain"
    lines = wrap_command(line, 40)
    assert lines == ["sp-plan --model llama3-70b \\", "    --hardware h100 --nodes 8 \\",
                     "    --seq-len 256k --tp 8 --ulysses 4 \\", "    --explain"]
    assert all(len(text) <= 40 for text in lines)


def test_options_keep_flag_names_whole_and_long_names_on_their_own_line():
    rows = [("--tp <int>", "Pin the tensor-parallel degree."),
            ("--reshard-after-forward / --no-reshard-after-forward", "Pin reshard after forward."),
            ("--cpu-offload-layers <int>", "Megatron --cpu-offloading-num-layers; pins pp 1 and no recompute.")]
    lines = option_lines(rows, 70)
    assert lines[0] == "--tp <int>".ljust(32) + "Pin the tensor-parallel degree."
    assert lines[1] == "--reshard-after-forward / --no-reshard-after-forward"
    assert lines[2] == " " * 32 + "Pin reshard after forward."
    assert any("--cpu-offloading-num-layers;" in line for line in lines)


def test_epilog_wraps_prose_and_commands_apart():
    lines = epilog_lines("Examples:\n\n  sp-validate --row nemo-b200-128k\n\nExit codes: 0 scored, 2 bad input.\n", 30)
    assert lines == ["Examples:", "", "  sp-validate \\", "      --row nemo-b200-128k", "",
                     "Exit codes: 0 scored, 2 bad", "input."]


def test_a_torchrun_example_continued_in_the_source_wraps_as_one_command():
    # sp-calibrate's multi-node example: written over two lines with a backslash, read as one
    # command and wrapped as one (at 80 columns it had been wrapped as prose, its backslash mid-line).
    epilog = ("On every node:\n\n  torchrun --nnodes 2 --rdzv-endpoint HEAD:29500 \\\n"
              "    -m sp_planner.cli.calibrate_cmd --out my-cluster.yaml\n")
    assert epilog_commands(epilog) == [
        "On every node:", "", "torchrun --nnodes 2 --rdzv-endpoint HEAD:29500 -m sp_planner.cli.calibrate_cmd "
        "--out my-cluster.yaml"]
    assert epilog_lines(epilog, 50) == [
        "On every node:", "", "  torchrun --nnodes 2 --rdzv-endpoint HEAD:29500 \\",
        "      -m sp_planner.cli.calibrate_cmd \\", "      --out my-cluster.yaml"]


@pytest.mark.parametrize("columns", [40, 52, 64, 72])
@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_help_on_a_narrow_terminal_keeps_every_word_and_example(run_main, monkeypatch, module, columns):
    # Click's floor of 50 columns ran help past a 40-column terminal, its help column left a word
    # or two a line at 60, and it broke the description at hyphens ("all-" / "gather").
    text = _help(run_main, monkeypatch, module, columns)
    wide = _help(run_main, monkeypatch, module, 200)
    # A line passes the terminal only when it is one word longer than the room (an option's choices).
    assert all(len(line) <= columns or len(line.split()) == 1 for line in text.splitlines()), text
    assert set(text.split()) - {"\\"} <= set(wide.split())
    assert sorted(word for word in text.split() if word != "\\") == sorted(w for w in wide.split() if w != "\\")
    assert _unwrap_examples(text) == _unwrap_examples(wide) != []


def test_an_option_and_its_value_too_long_for_a_line_part():
    lines = wrap_command("sp-validate --report reports/validation --check validation/thresholds.yaml", 36)
    assert lines == ["sp-validate \\", "    --report reports/validation \\", "    --check \\",
                     "    validation/thresholds.yaml"]
