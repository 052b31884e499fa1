"""`sfx-cnnhit reduce`: the main job. CNN veto, peakfinder8 on hits, Grad-CAM maps in the reduced CXI; or any
registered hit finder (`--finder`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

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
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce
from sfx_cnnhit.pipeline.finder_reduce import finder_reduce
from sfx_cnnhit.pipeline.mpi import run_reduction
from sfx_cnnhit.pipeline.reduce import COMMIT_SECONDS, ReduceSummary

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
    Literal["gradcam", "guided", "hirescam", "none"] | None,
    typer.Option(
        "--explain",
        help="Heat maps for every hit: gradcam, guided (guided Grad-CAM), hirescam (sharper on sparse spots), none "
        "(default: gradcam with the CNN, none with another finder).",
        show_default=False,
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

Finder = Annotated[
    str,
    typer.Option("--finder", help="Hit finder: cnn, or any registered one (peakfinder8, dispersion, dials, ...; "
                 "see docs/architecture.md)."),
]
FinderParam = Annotated[
    list[str] | None,
    typer.Option("--finder-param", metavar="KEY=VALUE",
                 help="A parameter of a --finder other than cnn, e.g. adc_threshold=50 (repeatable)."),
]
MinPeaks = Annotated[
    int | None,
    typer.Option("--min-peaks", min=0, help="With a --finder other than cnn: a hit has at least this many peaks "
                 "(default: the finder's own rule, e.g. 10 for peakfinder8, 14 spots for dispersion and dials)."),
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
        finder: Finder = "cnn",
        finder_param: FinderParam = None,
        min_peaks: MinPeaks = None,
        model: ModelOption = None,
        hit_threshold: HitThreshold = None,
        target_hit_recall: TargetRecall = None,
        explain: Explain = None,
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
        hits; the CNN alone decides hit or miss. With `--finder NAME` another registered hit finder
        decides and finds the peaks instead, its parameters given as `--finder-param KEY=VALUE` (no
        heat maps). Under `mpirun -n K` the frames are shared among K processes: each writes
        OUTPUT/rank_<r>/, and rank 0 a merged hits.lst, frames.csv and summary.json in OUTPUT (see
        docs/throughput.md).
        """
        source = read.open(inputs)
        job: dict[str, Any] = {"batch_size": batch_size, "compression": compression, "overwrite": overwrite,
                               "skip_bad_frames": not strict, "commit_seconds": commit_every}
        run: Callable[..., ReduceSummary]
        if finder == "cnn":
            if finder_param or min_peaks is not None:
                raise ConfigError("--finder-param and --min-peaks are for a --finder other than cnn; the CNN "
                                  "takes --model, --hit-threshold, ...")
            peakfinder = pf8.finder(source)
            run = functools.partial(
                cnn_reduce, source, model=model, threshold=hit_threshold, target_hit_recall=target_hit_recall,
                explain=explain or "gradcam", peakfinder=peakfinder, peakfinder_settings=asdict(peakfinder.params),
                device=device, precision=precision, threads=threads, **job,
            )
        else:
            _refuse_cnn_options(finder, {
                "--model": model is not None,
                "--hit-threshold": hit_threshold is not None,
                "--target-hit-recall": target_hit_recall is not None,
                "--explain": explain not in (None, "none"),
                "--config and the peakfinder8 flags (use --finder-param)": pf8.config is not None or pf8.overrides(),
                "--device": device != "auto",
                "--precision": precision != "float32",
                "--threads": threads is not None,
            })
            run = functools.partial(finder_reduce, source, name=finder, params=_assignments(finder_param),
                                    min_peaks=min_peaks, **job)
        summary = run_reduction(run, output, overwrite=overwrite, progress=frame_progress, description="reduce")
        if summary is None:  # an MPI rank other than 0
            return
        print_summary(summary, console)
        if summary.failed_frames:
            raise typer.Exit(FAILED_FRAMES_EXIT)


def _refuse_cnn_options(finder: str, given: dict[str, object]) -> None:
    """Refuse the CNN's options (``{option: truthy if given}``) with another ``finder``.

    Raises:
        ConfigError: naming every CNN option given.
    """
    named = [option for option, used in given.items() if used]
    if named:
        raise ConfigError(f"{', '.join(named)}: options of the CNN, not of --finder {finder}")


def _assignments(items: list[str] | None) -> dict[str, Any]:
    """``["adc_threshold=50", "fast_mode=true"]`` -> ``{"adc_threshold": "50", "fast_mode": "true"}``.

    Raises:
        ConfigError: an item without ``=``, a name or a value.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--finder-param {item!r}: expected KEY=VALUE, e.g. adc_threshold=50")
        out[key.strip()] = value.strip()
    return out
