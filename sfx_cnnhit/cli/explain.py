"""`sfx-cnnhit explain`: Grad-CAM / guided Grad-CAM maps, explanation scores, histograms, inversions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.inputs import BatchSize, Device, InputOptions, Inputs, with_option_groups
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.atomic import check_output_path, make_output_folder, write_text_atomic

if TYPE_CHECKING:
    from sfx_cnnhit.explain.report import PeakFinding
    from sfx_cnnhit.io.sources import FrameSource


def parse_frames(text: str | None) -> list[int] | None:
    """``"0,3,7"`` or ``"10-19,40"`` -> sorted frame indices."""
    if text is None:
        return None
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--frames must be indices or ranges such as 0,3,7 or 10-19, got {text!r}") from None
    return sorted(out)


def parse_target(text: str) -> str | int:
    """``"hit"`` or a class index."""
    if text == "hit":
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--target must be 'hit' or a class index, got {text!r}") from None


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


def register(app: typer.Typer) -> None:
    @app.command("explain")
    @handle_errors
    @with_option_groups
    def explain(
        inputs: Inputs,
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Checkpoint file or shipped model name (default: shipped).")
        ] = None,
        method: Annotated[
            Literal["gradcam", "guided", "hirescam"], typer.Option("--method", help="Maps to compute and score.")
        ] = "gradcam",
        target: Annotated[str, typer.Option("--target", help="'hit' (all hit classes) or a class index.")] = "hit",
        frames: Annotated[str | None, typer.Option("--frames", help="Frame indices, e.g. 0,3,7 or 10-19.")] = None,
        n_frames: Annotated[int | None, typer.Option("--n-frames", help="Explain the first N frames.")] = None,
        figures: Annotated[Path | None, typer.Option("--figures", help="Folder for PNG figures.")] = None,
        max_figures: Annotated[int, typer.Option("--max-figures", help="Figures for at most N frames.")] = 16,
        score: Annotated[bool, typer.Option("--score", help="Score the maps against the ground-truth spots.")] = False,
        truth: Annotated[
            str | None, typer.Option("--truth", help="Truth Bragg-spot mask dataset (default /truth/bragg_mask).")
        ] = None,
        labels: Annotated[
            str | None, typer.Option("--labels", help="Truth class-label dataset (default /truth/label).")
        ] = None,
        dilation: Annotated[
            float | None, typer.Option("--dilation", help="Spot-region radius in pixels (default: 1.5 map cells).")
        ] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
        invert: Annotated[
            str | None, typer.Option("--invert", help="Invert these layers (comma-separated, or 'all').")
        ] = None,
        invert_steps: Annotated[int, typer.Option("--invert-steps", help="Steps per inversion.")] = 300,
        histograms: Annotated[
            str | None, typer.Option("--histograms", help="Activation histograms per class of this layer.")
        ] = None,
        bins: Annotated[int, typer.Option("--bins", help="Histogram bins.")] = 64,
        peaks: Annotated[bool, typer.Option("--peaks/--no-peaks", help="Circle peakfinder8's peaks.")] = True,
        device: Device = "auto",
        read: InputOptions = InputOptions(),
        batch_size: BatchSize = 16,
    ) -> None:
        """Explain the CNN's decisions: heat maps, their scores against the truth, figures."""
        from sfx_cnnhit.explain.report import ExplainSettings, explain_source, select_frames
        from sfx_cnnhit.models.checkpoint import load_model
        from sfx_cnnhit.models.training import resolve_device

        source = read.open(inputs)
        if json_out is not None:  # refused before the work, not after it
            check_output_path(json_out, protect=source.input_paths)
        chosen = select_frames(source, parse_frames(frames), n_frames)
        net, spec = load_model(model, device=resolve_device(device))
        if figures is not None:
            make_output_folder(figures)
        truth_paths: dict[str, Any] = {"truth_path": truth, "labels_path": labels}
        settings = ExplainSettings(
            **{key: value for key, value in truth_paths.items() if value is not None},
            method=method,
            target=parse_target(target),  # type: ignore[arg-type]
            score=score,
            dilation_px=dilation,
            figures_dir=figures,
            max_figures=max_figures,
            peaks=peaks,
            invert=tuple(v.strip() for v in invert.split(",")) if invert else (),
            invert_steps=invert_steps,
            histogram_layer=histograms,
            histogram_bins=bins,
            batch_size=batch_size,
        )
        with frame_progress("explain") as update:
            report = explain_source(
                source, net, spec, frames=chosen, settings=settings, model_source=model or "default", progress=update,
                peak_finder=figure_peaks(source),
            )
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
        if json_out is not None:
            write_text_atomic(json_out, json.dumps(report, indent=1), protect=source.input_paths)
            console.print(f"report: {json_out}")
