"""`sfx-cnnhit info`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "info", "Describe frames, datasets, masks and metadata in input files.")
