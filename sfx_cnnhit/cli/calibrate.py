"""`sfx-cnnhit calibrate`: fit a trained model's class offsets and hit threshold on validation frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import HotPixelMap, LonePixelSnr, PeakSnr, peak_snr_levels
from sfx_cnnhit.errors import ConfigError


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
        lone_pixel_snr: LonePixelSnr = None,
        threshold_only: Annotated[
            bool,
            typer.Option("--threshold-only",
                         help="Set only the hit threshold(s): weights, count head and offsets kept."),
        ] = False,
    ) -> None:
        """Per-class logit offsets and the hit threshold, fitted on validation frames (`train` does this
        itself when given --val); a SpotNet's spot-count head is refitted first, so shipped SpotNets
        can be recalibrated on your own labelled frames. The new checkpoint is used like any other,
        the input is kept. Files of frames the input bins (every real detector) and of frames it does
        not (512² and smaller) get a hit threshold each."""
        from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
        from sfx_cnnhit.models.fit import calibrate_checkpoint, threshold_checkpoint

        hot_pixels = DEFAULT_HOT_PIXELS if hot_pixel_map else None
        if threshold_only:
            if peak_snr is not None:
                raise ConfigError("--peak-snr changes the count head; it cannot go with --threshold-only")
            path, record = threshold_checkpoint(model, [str(p) for p in val], output, labels=labels,
                                                hot_pixels=hot_pixels, lone_pixel_snr=lone_pixel_snr)
            console.print(f"wrote {path}: {_thresholds_text(record)} on {record['n_frames']} frames")
            return
        path, record = calibrate_checkpoint(
            model, [str(p) for p in val], output, labels=labels, hot_pixels=hot_pixels,
            peak_snr=peak_snr_levels(peak_snr), lone_pixel_snr=lone_pixel_snr,
        )
        before, after = record["val_accuracy_before"], record["val_accuracy_after"]
        console.print(
            f"wrote {path}: validation accuracy {before:.4f} -> {after:.4f}, "
            f"{_thresholds_text(record)} (hit accuracy {record['val_hit_accuracy_after']:.4f}), "
            f"logit offsets {', '.join(f'{v:+.3f}' for v in record['logit_offsets'])}"
        )


def _thresholds_text(record: dict[str, Any]) -> str:
    """The hit threshold of a calibration record, or its binned and unbinned frames' thresholds."""
    from sfx_cnnhit.models.calibration import DECISION_THRESHOLD, UNBINNED_THRESHOLD

    if UNBINNED_THRESHOLD in record:
        return (f"hit threshold {record[DECISION_THRESHOLD]:.4g} for binned frames, "
                f"{record[UNBINNED_THRESHOLD]:.4g} for unbinned ones")
    return f"hit threshold {record[DECISION_THRESHOLD]:.4g}"
