"""`sfx-cnnhit reduce`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "reduce", "The main job: CNN hit finding with Grad-CAM heat maps in the reduced CXI.")
