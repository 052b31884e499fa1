"""`sfx-cnnhit train-spots`: train a SpotNet (spot segmentation + spot count) hit/miss model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import LonePixelSnr, PeakSnr, peak_snr_levels
from sfx_cnnhit.cli.train import Background
from sfx_cnnhit.errors import ConfigError


def parse_channels(text: str) -> tuple[int, ...]:
    """``"4,8,8"`` -> (4, 8, 8): positive widths, at least two (a stem and one 3x3 layer)."""
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) < 2 or min(widths) < 1:
        raise ConfigError(f"--channels must be two or more positive integers such as 4,8,8, got {text!r}")
    return widths


def register(app: typer.Typer) -> None:
    @app.command("train-spots")
    @handle_errors
    def train_spots(
        data: Annotated[list[Path], typer.Argument(help="Simulated training files (with /truth/bragg_mask).")],
        val: Annotated[
            list[Path], typer.Option("--val", help="Simulated validation file(s): fit the count head and calibrate.")
        ],
        output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.pt).")] = Path("spotnet.pt"),
        arch: Annotated[str, typer.Option("--arch", help="A SpotNet zoo model.")] = "spotnet",
        task: Annotated[
            Literal["hitmiss", "fiveclass"],
            typer.Option("--task", help="hitmiss (panel inputs) or fiveclass (hybrid inputs + diffuse contrast)."),
        ] = "hitmiss",
        channels: Annotated[
            str | None,
            typer.Option("--channels", help="Spot-head widths, comma-separated: stem, then one per 3x3 layer (4,8,8)."),
        ] = None,
        stride: Annotated[
            int | None,
            typer.Option("--stride", min=1, help="Spot-map cell in input pixels (default: the arch's)."),
        ] = None,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps of the spot head.")] = 24000,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per step.")] = 32,
        crop: Annotated[int, typer.Option("--crop", min=8, help="Crop side (input pixels, even).")] = 128,
        lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, one cycle).")] = 3e-3,
        hot_pixels: Annotated[
            int, typer.Option("--hot-pixels", min=0, help="Most one-bin spikes per crop (labelled no spot).")
        ] = 4,
        spike_max_sigma: Annotated[
            float,
            typer.Option("--spike-max-sigma", min=3.01, help="Brightest spike (noise sigmas)."),
        ] = 300.0,
        augment: Annotated[
            bool, typer.Option("--augment/--no-augment", help="Perturb raw frames (gain, noise, masks, hot pixels).")
        ] = True,
        augment_hot: Annotated[
            bool,
            typer.Option("--augment-hot/--no-augment-hot", help="Let --augment add unmasked hot pixels (no spot)."),
        ] = True,
        hot_pixel_map: Annotated[
            bool,
            typer.Option(
                "--hot-pixel-map/--no-hot-pixel-map",
                help="Mask the training files' static hot pixels (the run-level map), not teach them as no spot.",
            ),
        ] = False,
        peak_snr: PeakSnr = None,
        lone_pixel_snr: LonePixelSnr = None,
        background: Background = None,
        seed: Annotated[int, typer.Option("--seed", help="Augmentation and crop seed.")] = 0,
        max_frames: Annotated[int | None, typer.Option("--max-frames", help="Use at most this many per file.")] = None,
    ) -> None:
        """Train the spot head on true Bragg-spot masks, fit the class head and calibrate on --val.

        Frames are read, augmented and preprocessed once (0.5 MiB a 512x512 frame in memory); the
        default 24 000 steps of the stride-4 `spotnet` take about 20 minutes on two CPU cores.
        """
        from sfx_cnnhit.models.spot_training import SpotTrainConfig, fit_spotnet

        widths = None if channels is None else parse_channels(channels)
        config = SpotTrainConfig(
            steps=steps, batch_size=batch_size, crop=crop, lr=lr, hot_pixels=hot_pixels,
            spike_max_sigma=spike_max_sigma, augment=augment, augment_hot=augment_hot,
            hot_pixel_map=hot_pixel_map, seed=seed,
        )
        path, metrics = fit_spotnet(output, [str(p) for p in data], [str(p) for p in val], arch=arch, task=task,
                                    channels=widths, stride=stride, config=config, max_frames=max_frames,
                                    peak_snr=peak_snr_levels(peak_snr) or (), background=background,
                                    lone_pixel_snr=lone_pixel_snr)
        count, spots = metrics["count_head"], metrics["spot_training"]
        half = f"P(hit) = 0.5 at {count['spots_at_half']:.2f} spots; " if "spots_at_half" in count else ""
        console.print(
            f"wrote {path}: spot pixels precision {spots['pixel_precision']:.3f} recall {spots['pixel_recall']:.3f}; "
            f"{half}validation accuracy {metrics['calibration']['val_accuracy_after']:.4f}, hit accuracy "
            f"{metrics['calibration']['val_hit_accuracy_after']:.4f} at threshold {metrics['decision_threshold']:.4g}"
        )
