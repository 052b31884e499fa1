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
from sfx_cnnhit.errors import ConfigError

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


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["gain=0.5", "kernel_size=3,3"]`` -> ``{"gain": "0.5", "kernel_size": "3,3"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--dials-param {item!r}: expected NAME=VALUE, e.g. gain=0.31")
        out[key.strip()] = value.strip()
    return out


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
        from sfx_cnnhit.comparisons import (
            CnnChoice,
            RunContext,
            build_methods,
            load_labels,
            run_comparison,
            write_comparison,
        )
        from sfx_cnnhit.comparisons.contest import Criterion
        from sfx_cnnhit.comparisons.grids import DIALS_GRID, PEAKFINDER8_GRID, dials_photon_defaults
        from sfx_cnnhit.comparisons.methods import dials_settings, parse_dials_overrides
        from sfx_cnnhit.comparisons.pedestal import PEDESTAL_MODES
        from sfx_cnnhit.comparisons.plan import (
            Contestants,
            detector_gain,
            overlap_warning,
            tuned_choice,
            untuned_choice,
        )
        from sfx_cnnhit.comparisons.report import STATE_DIR, check_outdir
        from sfx_cnnhit.finders.config import photon_defaults

        if pedestal is not None and pedestal not in PEDESTAL_MODES:
            raise ConfigError(f"--pedestal {pedestal!r}: expected one of {', '.join(PEDESTAL_MODES)}")
        if tune and not labels:
            raise ConfigError("--tune needs --labels (the tuning frames must be labelled)")
        criterion = Criterion(target_recall)
        check_outdir(output, overwrite=overwrite)
        source = read.open(inputs)
        everything = not (dials or dispersion or peakfinder8 or cnn)
        gain, gain_source = detector_gain(adu_per_photon, source.geometry, pf8_options.config)
        pf8 = None  # the peakfinder8 method, and the localiser of the CNN's hits
        if peakfinder8 or cnn or everything:
            pf8 = pf8_options.finder(source, min_peaks, defaults=photon_defaults(gain))
        pf8_given = pf8_options.overrides()
        if pf8 is not None and pf8_options.config is not None:
            pf8_given = {k: getattr(pf8.params, k) for k in PEAKFINDER8_GRID if k != "pedestal"}
        dials_overrides = parse_assignments(dials_param)
        params, rule = dials_settings(dials_preset, dials_min_spots, dials_overrides,
                                      base=dials_photon_defaults(gain))
        dials_given = parse_dials_overrides(dials_overrides)
        if dials_preset:  # a preset fixes every parameter it states
            dials_given = {**{k: getattr(params, k) for k in DIALS_GRID if k != "pedestal"}, **dials_given}
        contestants = Contestants(
            dials=dials or everything,
            dispersion=dispersion or everything,
            peakfinder8=pf8 if peakfinder8 or everything else None,
            peakfinder8_given=pf8_given,
            min_peaks=min_peaks,
            dials_params=params,
            dials_rule=rule,
            dials_given=dials_given,
            dials_min_spots=rule.min_peaks if dials_preset or dials_min_spots is not None else None,
            cnn=CnnChoice(model=model, threshold=hit_threshold, device=device) if cnn or everything else None,
            cnn_peakfinder=pf8,
            pedestal=pedestal,
            adu_per_photon=gain,
            gain_source=gain_source,
            optional=everything,
        )
        truth = load_labels(labels) if labels else None
        tuning, tuning_warnings = None, []
        if tune:
            assert truth is not None
            with frame_progress("tune") as update:
                choice, tuning, tuning_warnings = tuned_choice(
                    contestants, read.open(tune), truth, criterion, given=tune, outdir=output, restart=overwrite,
                    batch_size=batch_size, progress=update,
                )
        else:
            choice = untuned_choice(contestants)
        methods, warnings = build_methods(choice, geometry=source.geometry)
        warnings = tuning_warnings + warnings
        for warning in warnings:
            _warn(warning)
        with frame_progress("compare") as update:
            result = run_comparison(
                source, methods, labels=truth, batch_size=batch_size, max_frames=max_frames, progress=update,
                state_dir=Path(output) / STATE_DIR, restart=overwrite,
            )
        overlap = tuning and overlap_warning(tuning, result.source_files, result.source_index)
        if overlap:
            _warn(overlap)
            warnings.append(overlap)
        command = shlex.join(["sfx-cnnhit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "sfx-cnnhit" else ""
        context = RunContext(command=command, warnings=warnings, n_frames_available=source.n_frames)
        paths, summary = write_comparison(
            result,
            output,
            source=source,
            gallery=gallery,
            context=context,
            overwrite=overwrite,
            status=lambda text: console.print(text, markup=False, highlight=False),
        )
        _print_summary(summary, paths)
