"""Shared CLI behaviour: bad input gives one line on stderr and exit code 2, no traceback.

Unexpected internal errors are not caught here, so they still show a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import pydantic
import typer

try:  # recent typer (0.29 here) vendors click as typer._click and no longer installs it
    from typer._click.exceptions import ClickException
except ImportError:  # older typer depends on click itself
    from click import ClickException  # type: ignore[import-not-found, no-redef]

from sp_planner.errors import UserInputError

EXIT_USAGE = 2


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 2."""
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


def describe_validation_error(err: pydantic.ValidationError) -> str:
    """One line naming each bad field: 'field.path: what is wrong'."""
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or err.title
        parts.append(f"{where}: {item['msg']}")
    return f"invalid {err.title}: " + "; ".join(parts)


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run a typer app, mapping user errors (ours, pydantic's, click's) to one stderr line + exit 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except typer.Abort:
        fail("aborted")
    except ClickException as err:
        fail(err.format_message())
    except UserInputError as err:
        fail(str(err))
    except pydantic.ValidationError as err:
        fail(describe_validation_error(err))
    raise SystemExit(result if isinstance(result, int) else 0)
