"""The console scripts' entry points. Each loads its command's modules (pandas, pydantic, typer:
about 0.3 s) inside a guard, so that Ctrl-C while they load ends as Ctrl-C later does (one
'interrupted' line, exit 130) instead of a KeyboardInterrupt traceback. This module imports
nothing of the planner's own, so that the guard is in place before anything slow runs."""

from __future__ import annotations

import sys
from importlib import import_module

EXIT_INTERRUPTED = 130  # as sp_planner.cli.common, which this module must not import (it loads typer)


def launch(module: str, *, once_per_node: bool = False) -> None:
    """Import sp_planner.cli.<module> and run its main(). `once_per_node`: a command that runs as
    every rank of a torchrun/SLURM launch (sp-run, sp-calibrate), whose 'interrupted' line only its
    node's first rank says, as cli.common.run_app's once_per_node."""
    try:
        main = import_module(f"sp_planner.cli.{module}").main
    except KeyboardInterrupt:
        if not (once_per_node and _quiet_rank()):
            try:
                sys.stderr.write("error: interrupted\n")
            except (OSError, ValueError):
                pass
        raise SystemExit(EXIT_INTERRUPTED) from None
    main()


def _quiet_rank() -> bool:
    """cli.joined.quiet_rank, imported only once the guard has caught Ctrl-C (it loads os and
    signal alone: at once)."""
    from sp_planner.cli.joined import quiet_rank

    return quiet_rank()


def plan() -> None:
    launch("plan_cmd")


def run() -> None:
    launch("run_cmd", once_per_node=True)


def report() -> None:
    launch("report_cmd")


def simulate() -> None:
    launch("simulate_cmd")


def calibrate() -> None:
    launch("calibrate_cmd", once_per_node=True)


def validate() -> None:
    launch("validate_cmd")
