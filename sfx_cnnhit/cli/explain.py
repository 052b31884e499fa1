"""`sfx-cnnhit explain`: Grad-CAM / guided Grad-CAM maps, explanation scores, histograms, inversions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.inputs import BatchSize, Device, InputOptions, Inputs, with_option_groups
from sfx_cnnhit.io.atomic import write_text_atomic

if TYPE_CHECKING:
    from sfx_cnnhit.explain.report import PeakFinding
    from sfx_cnnhit.io.sources import FrameSource
    from sfx_cnnhit.models.zoo import ModelSpec

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Checkpoint file or shipped model name (default: shipped).")
]
MethodOption = Annotated[
    Literal["gradcam", "guided", "hirescam"], typer.Option("--method", help="Maps to compute and score.")
]
Target = Annotated[str, typer.Option("--target", help="'hit' (all hit classes) or a class index.")]
Frames = Annotated[str | None, typer.Option("--frames", help="Frame indices, e.g. 0,3,7 or 10-19.")]
NFrames = Annotated[int | None, typer.Option("--n-frames", help="Explain the first N frames.")]
Figures = Annotated[Path | None, typer.Option("--figures", help="Folder for PNG figures.")]
MaxFigures = Annotated[int, typer.Option("--max-figures", help="Figures for at most N frames.")]
Score = Annotated[bool, typer.Option("--score", help="Score the maps against the ground-truth spots.")]
Truth = Annotated[
    str | None, typer.Option("--truth", help="Truth Bragg-spot mask dataset (default /truth/bragg_mask).")
]
Labels = Annotated[str | None, typer.Option("--labels", help="Truth class-label dataset (default /truth/label).")]
Dilation = Annotated[
    float | None, typer.Option("--dilation", help="Spot-region radius in pixels (default: 1.5 map cells).")
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")]
Invert = Annotated[str | None, typer.Option("--invert", help="Invert these layers (comma-separated, or 'all').")]
InvertSteps = Annotated[int, typer.Option("--invert-steps", help="Steps per inversion.")]
Histograms = Annotated[str | None, typer.Option("--histograms", help="Activation histograms per class of this layer.")]
Bins = Annotated[int, typer.Option("--bins", help="Histogram bins.")]
Peaks = Annotated[bool, typer.Option("--peaks/--no-peaks", help="Circle peakfinder8's peaks.")]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def figure_peaks(source: FrameSource) -> PeakFinding:
    """The peaks circled in explanation figures: peakfinder8 with CrystFEL's defaults on ``source``'s
    geometry (else with the beam at the slab centre)."""
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

    if source.geometry is not None:
        return Peakfinder8Finder.from_geometry(source.geometry).find_peaks_masked
    ss, fs = source.frame_shape
    return Peakfinder8Finder.from_beam_center((ss, fs)).find_peaks_masked


def _print_report(report: dict[str, Any], spec: ModelSpec, figures: Path | None) -> None:
    """What was explained, the scores (with --score) and where the figures are."""
    console.print(
        f"{report['n_frames']} frames explained with {report['method']} on {spec.name} "
        f"({spec.cam_target_layer}); map cell {report['map_resolution_px']:.1f} px"
    )
    if "score" in report:
        s = report["score"]
        console.print(
            f"hits {s['n_hits']}: mass in spots mean {_fmt(s['mass_in_spots_mean'])} "
            f"median {_fmt(s['mass_in_spots_median'])} (chance {_fmt(s['chance_mass_in_spots'])}, "
            f"above chance {_fmt(s['mass_above_chance_mean'])}), pointing game {_fmt(s['pointing_game'])}; "
            f"spot radius {s['dilation_px']:.1f} px"
        )
        console.print(
            f"strict ({s['strict_dilation_px']:.0f} px): mass {_fmt(s['mass_in_spots_strict_mean'])} "
            f"(chance {_fmt(s['chance_mass_in_spots_strict'])}), pointing {_fmt(s['pointing_game_strict'])}; "
            f"misses {s['misses']['n_misses']}, map entropy {_fmt(s['misses']['entropy_mean'])}"
        )
    if report["figures"]:
        console.print(f"{len(report['figures'])} figures in {figures}")


def register(app: typer.Typer) -> None:
    @app.command("explain")
    @handle_errors
    @with_option_groups
    def explain(
        inputs: Inputs,
        model: ModelOption = None,
        method: MethodOption = "gradcam",
        target: Target = "hit",
        frames: Frames = None,
        n_frames: NFrames = None,
        figures: Figures = None,
        max_figures: MaxFigures = 16,
        score: Score = False,
        truth: Truth = None,
        labels: Labels = None,
        dilation: Dilation = None,
        json_out: JsonOut = None,
        invert: Invert = None,
        invert_steps: InvertSteps = 300,
        histograms: Histograms = None,
        bins: Bins = 64,
        peaks: Peaks = True,
        device: Device = "auto",
        read: InputOptions = InputOptions(),
        batch_size: BatchSize = 16,
    ) -> None:
        """Explain the CNN's decisions: heat maps, their scores against the truth, figures."""
        from sfx_cnnhit.explain.report import run_explain

        source = read.open(inputs)
        truth_paths: dict[str, Any] = {"truth_path": truth, "labels_path": labels}
        options = {
            **{key: value for key, value in truth_paths.items() if value is not None},
            "method": method, "score": score, "dilation_px": dilation, "figures_dir": figures,
            "max_figures": max_figures, "peaks": peaks,
            "invert": tuple(v.strip() for v in invert.split(",")) if invert else (), "invert_steps": invert_steps,
            "histogram_layer": histograms, "histogram_bins": bins, "batch_size": batch_size,
        }
        report, spec = run_explain(
            source, model=model, device=device, frames=frames, n_frames=n_frames, target=target,
            json_out=json_out, options=options, progress=frame_progress, peak_finder=figure_peaks,
        )
        _print_report(report, spec, figures)
        if json_out is not None:
            write_text_atomic(json_out, json.dumps(report, indent=1), protect=source.input_paths)
            console.print(f"report: {json_out}")
