"""The ``sfx-cnnhit`` command line: a thin typer layer over the library.

Each command lives in its own module under ``sfx_cnnhit.cli`` and exposes ``register(app)``.
"""

from __future__ import annotations

import importlib

import typer

from sfx_cnnhit import __version__
from sfx_cnnhit.cli.common import STATE

app = typer.Typer(
    name="sfx-cnnhit",
    help="Explainable CNN hit finder for serial crystallography (a drop-in for peakfinder8).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order as shown by --help.
COMMAND_MODULES = (
    "demo",
    "info",
    "simulate",
    "peakfinder8",
    "train",
    "train_spots",
    "calibrate",
    "evaluate",
    "reduce",
    "explain",
    "compare",
    "benchmark",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sfx-cnnhit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    STATE.debug = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"sfx_cnnhit.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
