"""`sfx-cnnhit demo`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "demo", "Simulate a small run and reduce it with the shipped model.")
