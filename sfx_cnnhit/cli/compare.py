"""`sfx-cnnhit compare`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "compare", "Compare the CNN with DIALS spot finding and peakfinder8.")
