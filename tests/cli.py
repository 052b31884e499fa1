"""Run the ``sfx-cnnhit`` CLI in-process (typer's test runner) and check its one-line errors."""

from __future__ import annotations

from click.testing import Result
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app

ERROR_PREFIX = "sfx-cnnhit: error: "


def run_cli(args: list[str]) -> Result:
    """``sfx-cnnhit ARGS`` in this process; stdout and stderr are captured apart."""
    return CliRunner().invoke(app, args)


def one_line_error(result: Result) -> str:
    """The error of a failed run, checked to be exit status 2 (the run failed) with exactly one line on
    stderr and no traceback (nor an exception escaping the CLI); returned without its prefix."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    return lines[0].removeprefix(ERROR_PREFIX)
