"""`sfx-cnnhit calibrate`: fit a trained model's class offsets and hit threshold on validation frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import HotPixelMap, PeakSnr, peak_snr_levels


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    @handle_errors
    def calibrate(
        model: Annotated[str, typer.Argument(help="Trained checkpoint (or shipped model name).")],
        val: Annotated[list[Path], typer.Option("--val", help="Labelled validation file(s), never the test split.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Calibrated checkpoint to write (.pt).")],
        labels: Annotated[str, typer.Option("--labels", help="Label dataset in each file, or a CSV.")] = "/truth/label",
        hot_pixel_map: HotPixelMap = True,
        peak_snr: PeakSnr = None,
    ) -> None:
        """Per-class logit offsets and the hit threshold, fitted on validation frames (`train` does this
        itself when given --val); a SpotNet's spot-count head is refitted first, so shipped SpotNets
        can be recalibrated on your own labelled frames. The new checkpoint is used like any other,
        the input is kept."""
        from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
        from sfx_cnnhit.models.fit import calibrate_checkpoint

        hot_pixels = DEFAULT_HOT_PIXELS if hot_pixel_map else None
        path, record = calibrate_checkpoint(
            model, [str(p) for p in val], output, labels=labels, hot_pixels=hot_pixels,
            peak_snr=peak_snr_levels(peak_snr),
        )
        before, after = record["val_accuracy_before"], record["val_accuracy_after"]
        console.print(
            f"wrote {path}: validation accuracy {before:.4f} -> {after:.4f}, "
            f"hit threshold {record['decision_threshold']:.4g} (hit accuracy {record['val_hit_accuracy_after']:.4f}), "
            f"logit offsets {', '.join(f'{v:+.3f}' for v in record['logit_offsets'])}"
        )
