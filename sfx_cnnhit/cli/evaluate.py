"""`sfx-cnnhit evaluate`."""

import typer

from sfx_cnnhit.cli.pending import register_pending


def register(app: typer.Typer) -> None:
    register_pending(app, "evaluate", "Evaluate a model on labelled frames (confusion matrix, ROC, threshold).")
