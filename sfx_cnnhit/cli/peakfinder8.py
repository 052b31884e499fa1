"""`sfx-cnnhit peakfinder8`: classical hit finding with our peakfinder8 (exact to OM's), reduced CXI output."""

from __future__ import annotations

import functools
from dataclasses import asdict

import typer

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.inputs import (
    FAILED_FRAMES_EXIT,
    BatchSize,
    CommitEvery,
    InputOptions,
    Inputs,
    MinPeaks,
    OutDir,
    Overwrite,
    Peakfinder8Options,
    Strict,
    with_option_groups,
)
from sfx_cnnhit.cli.summary import print_summary
from sfx_cnnhit.pipeline.mpi import run_reduction
from sfx_cnnhit.pipeline.reduce import COMMIT_SECONDS, reduce_run


def register(app: typer.Typer) -> None:
    @app.command("peakfinder8")
    @handle_errors
    @with_option_groups
    def peakfinder8(
        inputs: Inputs,
        output: OutDir,
        read: InputOptions = InputOptions(),
        pf8: Peakfinder8Options = Peakfinder8Options(),
        min_peaks: MinPeaks = None,
        batch_size: BatchSize = 64,
        overwrite: Overwrite = False,
        strict: Strict = False,
        commit_every: CommitEvery = COMMIT_SECONDS,
    ) -> None:
        """Find peaks and hits with peakfinder8; write the hits as a reduced CXI plus a per-frame table.

        Without a geometry the beam is taken at the slab centre and the file's ASIC layout is used.
        Under `mpirun -n K` the frames are shared among K processes, as for `reduce`.
        """
        source = read.open(inputs)
        finder = pf8.finder(source, min_peaks)
        settings = {"peakfinder8": asdict(finder.params), "hit_rule": asdict(finder.hit_rule)}
        run = functools.partial(
            reduce_run, source, finder, method="peakfinder8", settings=settings, batch_size=batch_size,
            overwrite=overwrite, skip_bad_frames=not strict, commit_seconds=commit_every,
        )
        summary = run_reduction(run, output, overwrite=overwrite, progress=frame_progress, description="peakfinder8")
        if summary is None:  # an MPI rank other than 0
            return
        print_summary(summary, console)
        if summary.failed_frames:
            raise typer.Exit(FAILED_FRAMES_EXIT)
