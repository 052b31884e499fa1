"""`sfx-cnnhit calibrate`: fit a trained model's class offsets and hit threshold on validation frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.cli.common import console, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    @handle_errors
    def calibrate(
        model: Annotated[str, typer.Argument(help="Trained checkpoint (or shipped model name).")],
        val: Annotated[list[Path], typer.Option("--val", help="Labelled validation file(s), never the test split.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Calibrated checkpoint to write (.pt).")],
        labels: Annotated[str, typer.Option("--labels", help="Label dataset in each file, or a CSV.")] = "/truth/label",
    ) -> None:
        """Per-class logit offsets and the hit threshold, fitted on validation frames (`train` does this
        itself when given --val); the new checkpoint is used like any other, the input is kept."""
        from sfx_cnnhit.models.fit import calibrate_checkpoint

        path, record = calibrate_checkpoint(model, [str(p) for p in val], output, labels=labels)
        before, after = record["val_accuracy_before"], record["val_accuracy_after"]
        console.print(
            f"wrote {path}: validation accuracy {before:.4f} -> {after:.4f}, "
            f"hit threshold {record['decision_threshold']:.4g} (hit accuracy {record['val_hit_accuracy_after']:.4f}), "
            f"logit offsets {', '.join(f'{v:+.3f}' for v in record['logit_offsets'])}"
        )
