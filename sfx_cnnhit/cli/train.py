"""`sfx-cnnhit train`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "train", "Train a CNN hit finder on simulated or labelled frames.")
