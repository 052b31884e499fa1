"""`sfx-cnnhit reduce`: the main job. CNN veto, peakfinder8 on hits, Grad-CAM maps in the reduced CXI."""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
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
from sfx_cnnhit.pipeline.mpi import run_ranks, world
from sfx_cnnhit.pipeline.reduce import ReduceSummary

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
    Literal["gradcam", "guided", "hirescam", "none"],
    typer.Option(
        "--explain",
        help="Heat maps for every hit: gradcam, guided (guided Grad-CAM), hirescam (sharper on sparse spots), none.",
    ),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")]
Compression = Annotated[
    Literal["gzip", "bitshuffle-lz4", "zstd", "none"],
    typer.Option(
        "--compression",
        help="Compression of hits.cxi: gzip (any reader) or bitshuffle-lz4 (about twice as fast to write; "
        "readers need the HDF5 plugin, e.g. hdf5plugin).",
    ),
]


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
        compression: Compression = "gzip",
        overwrite: Overwrite = False,
    ) -> None:
        """Classify every frame with the CNN; write hits, their peaks and Grad-CAM maps for CrystFEL.

        The peakfinder8 options (--config, --threshold, --min-snr, ...) set how peaks are localised on
        hits; the CNN alone decides hit or miss. Under `mpirun -n K` the frames are shared among K
        processes: each writes OUTPUT/rank_<r>/, and rank 0 a merged hits.lst, frames.csv and
        summary.json in OUTPUT (see docs/throughput.md).
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
        run = functools.partial(
            cnn_reduce,
            source,
            model=model,
            threshold=hit_threshold,
            target_hit_recall=target_hit_recall,
            explain=explain,
            peakfinder=peakfinder,
            peakfinder_settings=asdict(peakfinder.params),
            device=device,
            batch_size=batch_size,
            compression=compression,
            overwrite=overwrite,
        )
        comm = world()
        if comm is None:
            with frame_progress("reduce") as update:
                summary = run(output, progress=update)
        else:

            def run_rank(folder: Path, rank: int, n_ranks: int) -> ReduceSummary:
                if rank:
                    return run(folder, rank=rank, n_ranks=n_ranks)
                with frame_progress(f"reduce, rank 0 of {n_ranks}") as update:
                    return run(folder, rank=rank, n_ranks=n_ranks, progress=update)

            summary = run_ranks(run_rank, output, comm=comm, overwrite=overwrite)
            if comm.Get_rank():
                return
        print_summary(summary, console)
