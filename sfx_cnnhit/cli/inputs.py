"""Options several commands share, as option groups, and the one place that opens the inputs.

An option group is a frozen dataclass whose fields are typer options. A command declares one
parameter of the group's type; :func:`with_option_groups` puts the group's options into the
command's signature (so they show in ``--help``) and hands the command one instance of the group.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import Peakfinder8Params, apply_overrides, load_finder_config
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.geometry import read_geometry
from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
from sfx_cnnhit.io.masks import MaskConvention, parse_mask_argument
from sfx_cnnhit.io.sources import FrameSource, open_frames

F = TypeVar("F", bound=Callable[..., Any])

Inputs = Annotated[
    list[Path],
    # readable=False: the readers name an unreadable file in one line, click would print a usage box
    typer.Argument(help="CXI/HDF5 files, CBF/SMV/EDF/TIFF images or .lst lists.", readable=False),
]
OutDir = Annotated[Path, typer.Option("--output", "-o", help="Output folder (created if missing).")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Frames per batch (bounds memory).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a completed run in the output folder.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")]
PrecisionOption = Annotated[
    Literal["auto", "float32", "bfloat16"],
    typer.Option(
        "--precision",
        help="Arithmetic of the veto's forward pass: bfloat16 is about 3x faster on CPUs with AMX/AVX512-BF16 "
        "and on GPUs; auto picks it where the hardware has it.",
    ),
]
LabelledGeometry = Annotated[
    Path | None,
    typer.Option("--geometry", "-g", help="CrystFEL geometry of every file (default: X.geom beside X.cxi)."),
]
HotPixelMap = Annotated[
    bool,
    typer.Option(
        "--hot-pixel-map/--no-hot-pixel-map",
        help="Also mask pixels that are a local maximum in most frames of each 500-frame window (Cheetah's "
        "hotpixFreq; costs 24 extra frame reads per window).",
    ),
]
PeakSnr = Annotated[
    list[float] | None,
    typer.Option(
        "--peak-snr",
        help="SpotNet: count two-pixel local maxima of the normalised frame at or above this z-score as a head "
        "input (repeat for several; 0: none; default: train-spots none, calibrate as the checkpoint).",
    ),
]


LonePixelSnr = Annotated[
    float | None,
    typer.Option(
        "--lone-pixel-snr",
        help="SpotNet: do not count a spot whose brightest pixel reaches this z-score while no two adjacent pixels "
        "reach z 2.5 (a zinger or an unmasked hot pixel; 0: count them; default: train-spots 0, calibrate as the "
        "checkpoint).",
    ),
]


def peak_snr_levels(values: list[float] | None) -> list[float] | None:
    """``--peak-snr`` values as levels: None when not given, ``[]`` for 0 (none)."""
    return None if values is None else [v for v in values if v != 0]


Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Stop at the first unreadable frame. Default: skip it, list it in summary.json (failed_frames) "
        "and the CSV, and exit with status 3.",
    ),
]
#: The CNN's hit threshold, one name in every command (``--cnn-threshold``, compare's old name, still works).
HitThreshold = Annotated[
    float | None,
    typer.Option(
        "--hit-threshold", "--cnn-threshold", min=0.0, max=1.0,
        help="CNN: P(hit) at or above which a frame is a hit (default: the model's calibrated threshold).",
    ),
]
CommitEvery = Annotated[
    float,
    typer.Option(
        "--commit-every",
        min=0.0,
        help="Seconds between commits of the output (a killed run resumes from the last one; 0: after "
        "every batch).",
    ),
]
#: Exit status of a run that finished but skipped unreadable frames (2: the run failed; 130: interrupted).
FAILED_FRAMES_EXIT = 3
MinPeaks = Annotated[int | None, typer.Option("--min-peaks", help="A hit has at least this many peaks.")]


def parse_bits(value: str | None) -> int | None:
    """An integer option given in any base (``0x1``, ``1``)."""
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an integer such as 0x0001") from None


@dataclass(frozen=True)
class InputOptions:
    """How to read the inputs: geometry, dataset path and mask."""

    geometry: Annotated[Path | None, typer.Option("--geometry", "-g", help="CrystFEL geometry file.")] = None
    data_path: Annotated[
        str | None, typer.Option("--data-path", help="HDF5 dataset of the frames (may use CrystFEL's %).")
    ] = None
    mask_path: Annotated[
        str | None, typer.Option("--mask-path", help="Mask: a file, file.h5:/dataset, or /dataset in each input.")
    ] = None
    mask_goodbits: Annotated[
        str | None, typer.Option("--mask-goodbits", help="Read masks with CrystFEL good bits, e.g. 0x1.")
    ] = None
    mask_badbits: Annotated[
        str | None, typer.Option("--mask-badbits", help="Read masks with CrystFEL bad bits, e.g. 0xffff.")
    ] = None
    mask_convention: Annotated[
        MaskConvention,
        typer.Option(
            "--mask-convention",
            help="How stored masks are read: cheetah (0 = good), crystfel (1 = good: goodbits 0x1, badbits 0); "
            "auto: --mask-goodbits/--mask-badbits or the geometry's bits, else cheetah, refusing a mask that "
            "looks inverted.",
        ),
    ] = "auto"
    hot_pixel_map: HotPixelMap = True

    def open(self, inputs: list[Path]) -> FrameSource:
        """Open ``inputs`` with these options."""
        mask_file, mask_dataset = parse_mask_argument(self.mask_path) if self.mask_path else (None, None)
        return open_frames(
            [str(p) for p in inputs],
            data_path=self.data_path,
            mask_path=mask_dataset,
            mask_file=mask_file,
            mask_goodbits=parse_bits(self.mask_goodbits),
            mask_badbits=parse_bits(self.mask_badbits),
            mask_convention=self.mask_convention,
            geometry=read_geometry(self.geometry) if self.geometry else None,
            hot_pixels=DEFAULT_HOT_PIXELS if self.hot_pixel_map else None,
        )


@dataclass(frozen=True)
class Peakfinder8Options:
    """peakfinder8 settings: a config file, then CrystFEL indexamajig-named overrides (None = keep)."""

    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="OM monitor YAML or Cheetah ini with peakfinder8 settings.")
    ] = None
    threshold: Annotated[float | None, typer.Option("--threshold", "-t", help="ADC threshold (ADU).")] = None
    min_snr: Annotated[float | None, typer.Option("--min-snr", help="Minimum peak SNR.")] = None
    min_pix_count: Annotated[int | None, typer.Option("--min-pix-count", help="Minimum pixels per peak.")] = None
    max_pix_count: Annotated[int | None, typer.Option("--max-pix-count", help="Maximum pixels per peak.")] = None
    local_bg_radius: Annotated[
        int | None, typer.Option("--local-bg-radius", help="Local background radius (px).")
    ] = None
    min_res: Annotated[float | None, typer.Option("--min-res", help="Minimum radius from the beam (px).")] = None
    max_res: Annotated[float | None, typer.Option("--max-res", help="Maximum radius from the beam (px).")] = None

    def overrides(self) -> dict[str, Any]:
        """The flags given, under :class:`~sfx_cnnhit.finders.config.Peakfinder8Params` names."""
        given = {
            "adc_threshold": self.threshold,
            "minimum_snr": self.min_snr,
            "min_pixel_count": self.min_pix_count,
            "max_pixel_count": self.max_pix_count,
            "local_bg_radius": self.local_bg_radius,
            "min_res": self.min_res,
            "max_res": self.max_res,
        }
        return {k: v for k, v in given.items() if v is not None}

    def finder(
        self,
        source: FrameSource,
        min_peaks: int | None = None,
        defaults: tuple[Peakfinder8Params, HitRule] | None = None,
    ) -> Peakfinder8Finder:
        """peakfinder8 for ``source`` (``defaults``, else CrystFEL's < config file < flags); without a
        geometry the beam is at the slab centre and the file's ASIC layout is used."""
        overrides = {**self.overrides(), "min_peaks": min_peaks}
        if self.config is None and defaults is not None:
            params, rule = apply_overrides(*defaults, overrides)
        else:
            params, rule = load_finder_config(self.config, overrides=overrides)
        if source.geometry is not None:
            return Peakfinder8Finder.from_geometry(source.geometry, params, rule)
        layout = source.layout_info
        asic = (layout["asic_ny"], layout["asic_nx"]) if layout else None
        return Peakfinder8Finder.from_beam_center(source.frame_shape, params, rule, asic_shape=asic)


OPTION_GROUPS = (InputOptions, Peakfinder8Options)


def with_option_groups(func: F) -> F:
    """Let typer see the fields of each option-group parameter of ``func`` as options of their own.

    The wrapper's signature lists ``func``'s other parameters, then every group's fields (keyword
    only, with their defaults); a call gathers those into one group instance per parameter.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    groups = {name: hints[name] for name in signature.parameters if hints.get(name) in OPTION_GROUPS}
    params = [p.replace(annotation=hints[name]) for name, p in signature.parameters.items() if name not in groups]
    fields: dict[str, list[str]] = {}
    for name, group in groups.items():
        group_hints = typing.get_type_hints(group, include_extras=True)
        fields[name] = [f.name for f in dataclasses.fields(group)]
        params += [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=group_hints[f.name])
            for f in dataclasses.fields(group)
        ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name, group in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in fields[name] if field in kwargs})
        return func(*args, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must read the new signature, not follow back to func's
    return wrapper  # type: ignore[return-value]
