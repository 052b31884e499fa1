"""`sfx-cnnhit simulate`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "simulate", "Simulate serial-crystallography frames with ground truth.")
