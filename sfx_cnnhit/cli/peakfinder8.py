"""`sfx-cnnhit peakfinder8`: classical hit finding with our peakfinder8 (exact to OM's), reduced CXI output."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.inputs import (
    BatchSize,
    DataPath,
    GeometryFile,
    Inputs,
    MaskBadbits,
    MaskGoodbits,
    MaskPath,
    OutDir,
    Overwrite,
    open_inputs,
)
from sfx_cnnhit.cli.summary import print_summary
from sfx_cnnhit.finders.config import load_finder_config
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.pipeline.reduce import reduce_run

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="OM monitor YAML or Cheetah ini with peakfinder8 settings.")
]
# CrystFEL indexamajig option names; None = keep the value from --config or the default.
Threshold = Annotated[float | None, typer.Option("--threshold", "-t", help="ADC threshold (ADU).")]
MinSnr = Annotated[float | None, typer.Option("--min-snr", help="Minimum peak SNR.")]
MinPixCount = Annotated[int | None, typer.Option("--min-pix-count", help="Minimum pixels per peak.")]
MaxPixCount = Annotated[int | None, typer.Option("--max-pix-count", help="Maximum pixels per peak.")]
LocalBgRadius = Annotated[int | None, typer.Option("--local-bg-radius", help="Local background radius (px).")]
MinRes = Annotated[float | None, typer.Option("--min-res", help="Minimum radius from the beam (px).")]
MaxRes = Annotated[float | None, typer.Option("--max-res", help="Maximum radius from the beam (px).")]
MinPeaks = Annotated[int | None, typer.Option("--min-peaks", help="A hit has at least this many peaks.")]


def peakfinder8_from_options(
    source: FrameSource,
    config: Path | None,
    *,
    threshold: float | None = None,
    min_snr: float | None = None,
    min_pix_count: int | None = None,
    max_pix_count: int | None = None,
    local_bg_radius: int | None = None,
    min_res: float | None = None,
    max_res: float | None = None,
    min_peaks: int | None = None,
) -> Peakfinder8Finder:
    """peakfinder8 for ``source`` from a config file and CrystFEL-style overrides (defaults < file < flags)."""
    params, rule = load_finder_config(
        config,
        overrides={
            "adc_threshold": threshold,
            "minimum_snr": min_snr,
            "min_pixel_count": min_pix_count,
            "max_pixel_count": max_pix_count,
            "local_bg_radius": local_bg_radius,
            "min_res": min_res,
            "max_res": max_res,
            "min_peaks": min_peaks,
        },
    )
    if source.geometry is not None:
        return Peakfinder8Finder.from_geometry(source.geometry, params, rule)
    layout = source.layout_info
    asic = (layout["asic_ny"], layout["asic_nx"]) if layout else None
    return Peakfinder8Finder.from_beam_center(source.frame_shape, params, rule, asic_shape=asic)


def register(app: typer.Typer) -> None:
    @app.command("peakfinder8")
    @handle_errors
    def peakfinder8(
        inputs: Inputs,
        output: OutDir,
        config: ConfigFile = None,
        geometry: GeometryFile = None,
        data_path: DataPath = None,
        mask_path: MaskPath = None,
        mask_goodbits: MaskGoodbits = None,
        mask_badbits: MaskBadbits = None,
        threshold: Threshold = None,
        min_snr: MinSnr = None,
        min_pix_count: MinPixCount = None,
        max_pix_count: MaxPixCount = None,
        local_bg_radius: LocalBgRadius = None,
        min_res: MinRes = None,
        max_res: MaxRes = None,
        min_peaks: MinPeaks = None,
        batch_size: BatchSize = 64,
        overwrite: Overwrite = False,
    ) -> None:
        """Find peaks and hits with peakfinder8; write the hits as a reduced CXI plus a per-frame table.

        Without a geometry the beam is taken at the slab centre and the file's ASIC layout is used.
        """
        source = open_inputs(
            inputs,
            data_path=data_path,
            mask_path=mask_path,
            mask_goodbits=mask_goodbits,
            mask_badbits=mask_badbits,
            geometry=geometry,
        )
        finder = peakfinder8_from_options(
            source,
            config,
            threshold=threshold,
            min_snr=min_snr,
            min_pix_count=min_pix_count,
            max_pix_count=max_pix_count,
            local_bg_radius=local_bg_radius,
            min_res=min_res,
            max_res=max_res,
            min_peaks=min_peaks,
        )
        settings = {"peakfinder8": asdict(finder.params), "hit_rule": asdict(finder.hit_rule)}
        with frame_progress("peakfinder8") as update:
            summary = reduce_run(
                source,
                finder,
                output,
                method="peakfinder8",
                settings=settings,
                batch_size=batch_size,
                overwrite=overwrite,
                progress=update,
            )
        print_summary(summary, console)
