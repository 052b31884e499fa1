"""`sfx-cnnhit peakfinder8`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "peakfinder8", "Find peaks and hits with peakfinder8 and write a reduced CXI.")
