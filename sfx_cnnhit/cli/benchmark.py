"""`sfx-cnnhit benchmark`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "benchmark", "Frames per second and memory of every method.")
