"""`sfx-cnnhit reduce`: the main job. CNN veto, peakfinder8 on hits, Grad-CAM maps in the reduced CXI."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

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
from sfx_cnnhit.cli.peakfinder8 import (
    ConfigFile,
    LocalBgRadius,
    MaxPixCount,
    MaxRes,
    MinPixCount,
    MinRes,
    MinSnr,
    Threshold,
    peakfinder8_from_options,
)
from sfx_cnnhit.cli.summary import print_summary
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Checkpoint file or shipped model name (default: shipped).")
]
HitThreshold = Annotated[
    float | None, typer.Option("--hit-threshold", help="P(hit) at or above which a frame is a hit (default 0.5).")
]
TargetRecall = Annotated[
    float | None,
    typer.Option(
        "--target-hit-recall",
        help="Choose the threshold that keeps this fraction of hits on the model's validation set (e.g. 0.995).",
    ),
]
Explain = Annotated[
    Literal["gradcam", "guided", "none"],
    typer.Option("--explain", help="Heat maps written for every hit (gradcam, guided Grad-CAM, or none)."),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")]


def register(app: typer.Typer) -> None:
    @app.command("reduce")
    @handle_errors
    def reduce(
        inputs: Inputs,
        output: OutDir,
        model: ModelOption = None,
        hit_threshold: HitThreshold = None,
        target_hit_recall: TargetRecall = None,
        explain: Explain = "gradcam",
        geometry: GeometryFile = None,
        data_path: DataPath = None,
        mask_path: MaskPath = None,
        mask_goodbits: MaskGoodbits = None,
        mask_badbits: MaskBadbits = None,
        config: ConfigFile = None,
        threshold: Threshold = None,
        min_snr: MinSnr = None,
        min_pix_count: MinPixCount = None,
        max_pix_count: MaxPixCount = None,
        local_bg_radius: LocalBgRadius = None,
        min_res: MinRes = None,
        max_res: MaxRes = None,
        device: Device = "auto",
        batch_size: BatchSize = 64,
        overwrite: Overwrite = False,
    ) -> None:
        """Classify every frame with the CNN; write hits, their peaks and Grad-CAM maps for CrystFEL.

        The peakfinder8 options (--config, --threshold, --min-snr, ...) set how peaks are localised on
        hits; the CNN alone decides hit or miss.
        """
        source = open_inputs(
            inputs,
            data_path=data_path,
            mask_path=mask_path,
            mask_goodbits=mask_goodbits,
            mask_badbits=mask_badbits,
            geometry=geometry,
        )
        peakfinder = peakfinder8_from_options(
            source,
            config,
            threshold=threshold,
            min_snr=min_snr,
            min_pix_count=min_pix_count,
            max_pix_count=max_pix_count,
            local_bg_radius=local_bg_radius,
            min_res=min_res,
            max_res=max_res,
        )
        with frame_progress("reduce") as update:
            summary = cnn_reduce(
                source,
                output,
                model=model,
                threshold=hit_threshold,
                target_hit_recall=target_hit_recall,
                explain=explain,
                peakfinder=peakfinder,
                peakfinder_settings=asdict(peakfinder.params),
                device=device,
                batch_size=batch_size,
                overwrite=overwrite,
                progress=update,
            )
        print_summary(summary, console)
