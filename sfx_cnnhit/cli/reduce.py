"""`sfx-cnnhit reduce`: the main job. CNN veto, peakfinder8 on hits, Grad-CAM maps in the reduced CXI."""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Annotated, Literal

import typer

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.inputs import (
    FAILED_FRAMES_EXIT,
    BatchSize,
    CommitEvery,
    Device,
    HitThreshold,
    InputOptions,
    Inputs,
    OutDir,
    Overwrite,
    Peakfinder8Options,
    PrecisionOption,
    Strict,
    with_option_groups,
)
from sfx_cnnhit.cli.summary import print_summary
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce
from sfx_cnnhit.pipeline.mpi import run_reduction
from sfx_cnnhit.pipeline.reduce import COMMIT_SECONDS

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Checkpoint file or shipped model name (default: shipped).")
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
Compression = Annotated[
    Literal["gzip", "bitshuffle-lz4", "zstd", "none"],
    typer.Option(
        "--compression",
        help="Compression of hits.cxi: gzip (level 1 + shuffle, encoded in threads; any reader, a stock CrystFEL "
        "too) or bitshuffle-lz4, zstd (readers need the HDF5 plugin, e.g. hdf5plugin), none.",
    ),
]

Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="torch threads of the CNN (default: one per core less one, which "
                 "reads and writes while the CNN computes)."),
]


def register(app: typer.Typer) -> None:
    @app.command("reduce")
    @handle_errors
    @with_option_groups
    def reduce(
        inputs: Inputs,
        output: OutDir,
        model: ModelOption = None,
        hit_threshold: HitThreshold = None,
        target_hit_recall: TargetRecall = None,
        explain: Explain = "gradcam",
        read: InputOptions = InputOptions(),
        pf8: Peakfinder8Options = Peakfinder8Options(),
        device: Device = "auto",
        batch_size: BatchSize = 64,
        precision: PrecisionOption = "float32",
        compression: Compression = "gzip",
        threads: Threads = None,
        overwrite: Overwrite = False,
        strict: Strict = False,
        commit_every: CommitEvery = COMMIT_SECONDS,
    ) -> None:
        """Classify every frame with the CNN; write hits, their peaks and Grad-CAM maps for CrystFEL.

        The peakfinder8 options (--config, --threshold, --min-snr, ...) set how peaks are localised on
        hits; the CNN alone decides hit or miss. Under `mpirun -n K` the frames are shared among K
        processes: each writes OUTPUT/rank_<r>/, and rank 0 a merged hits.lst, frames.csv and
        summary.json in OUTPUT (see docs/throughput.md).
        """
        source = read.open(inputs)
        peakfinder = pf8.finder(source)
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
            precision=precision,
            compression=compression,
            overwrite=overwrite,
            skip_bad_frames=not strict,
            threads=threads,
            commit_seconds=commit_every,
        )
        summary = run_reduction(run, output, overwrite=overwrite, progress=frame_progress, description="reduce")
        if summary is None:  # an MPI rank other than 0
            return
        print_summary(summary, console)
        if summary.failed_frames:
            raise typer.Exit(FAILED_FRAMES_EXIT)
