"""`sfx-cnnhit compare`: the CNN, real DIALS spot finding, the built-in dispersion finder and peakfinder8
on the same frames, side by side (per-frame CSV, compare.json, disagreement gallery, Markdown report)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.inputs import (
    BatchSize,
    Device,
    HitThreshold,
    InputOptions,
    Inputs,
    MinPeaks,
    OutDir,
    Overwrite,
    Peakfinder8Options,
    with_option_groups,
)

UseDials = Annotated[bool, typer.Option("--dials", help="Real DIALS spot finding (built-in fallback if absent).")]
UseDispersion = Annotated[bool, typer.Option("--dispersion", help="Built-in DIALS-style spot finding.")]
UsePeakfinder8 = Annotated[bool, typer.Option("--peakfinder8", help="peakfinder8 (CrystFEL-style options below).")]
UseCnn = Annotated[bool, typer.Option("--cnn", help="The CNN hit finder.")]
Model = Annotated[str, typer.Option("--model", help="CNN model name or checkpoint file.")]
Labels = Annotated[
    str | None,
    typer.Option("--labels", help="True labels: a dataset in each input (/truth/hit) or a CSV (event_id,label)."),
]
DialsPreset = Annotated[
    str | None, typer.Option("--dials-preset", help="DIALS parameters of the seed's Table 6: ke2018_ln83, ke2018_ln84.")
]
DialsMinSpots = Annotated[int | None, typer.Option("--dials-min-spots", help="DIALS hit if n_spots >= this.")]
DialsParam = Annotated[
    list[str] | None,
    typer.Option("--dials-param", help="A DIALS parameter, repeatable: gain=0.31, kernel_size=3,3, algorithm=..."),
]
MaxFrames = Annotated[int | None, typer.Option("--max-frames", min=1, help="Compare only the first N frames.")]
Tune = Annotated[
    list[Path] | None,
    typer.Option("--tune", help="Labelled validation frames (repeatable; files or .lst lists): tune every method "
                 "there, then score on the inputs.", readable=False),
]
TargetRecall = Annotated[
    float | None,
    typer.Option("--target-recall", min=0.0, max=1.0,
                 help="Tune for the best miss rejection at this hit recall (default: the best accuracy)."),
]
AduPerPhoton = Annotated[
    float | None,
    typer.Option("--adu-per-photon", help="Detector gain, ADU/photon (default: the geometry's, else the config's, "
                 "else 1)."),
]
Pedestal = Annotated[
    str | None,
    typer.Option("--pedestal", help="Classical methods: 'estimate' (subtract each frame's pedestal estimate) or "
                 "'none' (default: estimate for defaults and tuning, none for given settings)."),
]
Gallery = Annotated[int, typer.Option("--gallery", min=0, help="Most frames in the disagreement gallery (0: none).")]


def _print_summary(summary: dict[str, Any], paths: dict[str, Path]) -> None:
    table = Table(title=f"compare: {summary['n_frames']} frames", title_justify="left")
    for column in ("method", "settings", "frames/s", "hits", "accuracy", "precision", "recall", "tuning accuracy"):
        table.add_column(column, justify="left" if column in ("method", "settings") else "right")

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for name, m in summary["methods"].items():
        fps = m["frames_per_second"]
        origin = m.get("origin") or {}
        tuning = origin.get("tuning") or {}
        table.add_row(name, origin.get("kind", "given"), "-" if fps is None else f"{fps:.1f}", str(m["n_hits_called"]),
                      fmt(m["accuracy"]), fmt(m["precision"]), fmt(m["recall"]), fmt(tuning.get("accuracy")))
    console.print(table)
    for role, path in paths.items():
        console.print(f"{role}: {path}", markup=False, highlight=False)


def _warn(text: str) -> None:
    console.print(f"warning: {text}", style="yellow", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("compare")
    @handle_errors
    @with_option_groups
    def compare(
        inputs: Inputs,
        output: OutDir,
        dials: UseDials = False,
        dispersion: UseDispersion = False,
        peakfinder8: UsePeakfinder8 = False,
        cnn: UseCnn = False,
        model: Model = "default",
        hit_threshold: HitThreshold = None,
        device: Device = "auto",
        labels: Labels = None,
        dials_preset: DialsPreset = None,
        dials_min_spots: DialsMinSpots = None,
        dials_param: DialsParam = None,
        read: InputOptions = InputOptions(),
        pf8_options: Peakfinder8Options = Peakfinder8Options(),
        min_peaks: MinPeaks = None,
        max_frames: MaxFrames = None,
        tune: Tune = None,
        target_recall: TargetRecall = None,
        adu_per_photon: AduPerPhoton = None,
        pedestal: Pedestal = None,
        gallery: Gallery = 8,
        batch_size: BatchSize = 64,
        overwrite: Overwrite = False,
    ) -> None:
        """Run hit finders side by side on the same frames, against labels if given.

        Without a method flag, every available method runs (real DIALS only where installed).
        --threshold and the other peakfinder8 options use CrystFEL's names; the CNN's P(hit)
        threshold is --hit-threshold. Settings not given are gain-aware defaults (thresholds in
        photons); with --tune, every method is tuned on those labelled frames first.
        """
        from sfx_cnnhit.comparisons.job import CompareRequest, run_compare

        command = shlex.join(["sfx-cnnhit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "sfx-cnnhit" else ""
        request = CompareRequest(
            inputs=inputs, output=output, dials=dials, dispersion=dispersion, peakfinder8=peakfinder8, cnn=cnn,
            model=model, hit_threshold=hit_threshold, device=device, labels=labels, dials_preset=dials_preset,
            dials_min_spots=dials_min_spots, dials_param=dials_param, min_peaks=min_peaks, max_frames=max_frames,
            tune=tune, target_recall=target_recall, adu_per_photon=adu_per_photon, pedestal=pedestal,
            gallery=gallery, batch_size=batch_size, overwrite=overwrite, command=command,
        )
        paths, summary = run_compare(
            request, open_inputs=read.open, pf8_options=pf8_options, progress=frame_progress, warn=_warn,
            status=lambda text: console.print(text, markup=False, highlight=False),
        )
        _print_summary(summary, paths)
