"""`sfx-cnnhit explain`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "explain", "Grad-CAM, guided Grad-CAM, inversion, histograms, explanation scores.")
