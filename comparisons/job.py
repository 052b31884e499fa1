"""The ``compare`` job as one library call: settings of every method, tuning, the run and its outputs.

:func:`run_compare` does what ``sfx-cnnhit compare`` does after parsing its options: it checks them,
opens the inputs, sets every method's settings (given, gain-aware defaults or tuned on labelled
frames, see :mod:`.plan`), runs the methods side by side (:mod:`.runner`) and writes the outputs
(:mod:`.report`). How frames are opened, how peakfinder8 is configured and how progress, warnings and
status lines are shown are the caller's (the command line's option groups and console).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import CnnHitParams, Peakfinder8Params, photon_defaults
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.labels import load_labels
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.types import ProgressFactory

from .contest import Criterion, Tuning
from .grids import DIALS_GRID, PEAKFINDER8_GRID, dials_photon_defaults
from .methods import build_methods, dials_settings, parse_assignments, parse_dials_overrides
from .pedestal import PEDESTAL_MODES
from .plan import ASSUMED_GAIN, Contestants, detector_gain, overlap_warning, tuned_choice, untuned_choice
from .report import STATE_DIR, RunContext, check_outdir, write_comparison
from .runner import run_comparison


class Peakfinder8Options(Protocol):
    """peakfinder8 as the user set it up (the CLI's option group): a config file and explicit overrides."""

    @property
    def config(self) -> Path | None:
        """OM monitor YAML or Cheetah ini with peakfinder8 settings, or None."""
        ...

    def overrides(self) -> dict[str, Any]:
        """The settings given explicitly, under :class:`Peakfinder8Params` names."""
        ...

    def finder(
        self,
        source: FrameSource,
        min_peaks: int | None = None,
        defaults: tuple[Peakfinder8Params, HitRule] | None = None,
    ) -> Peakfinder8Finder:
        """peakfinder8 for ``source`` (``defaults`` unless a config file is given, then the overrides)."""
        ...


@dataclass(frozen=True)
class CompareRequest:
    """What a comparison was asked for (``sfx-cnnhit compare``'s options; see its help for each).

    No method flag (``dials``, ``dispersion``, ``peakfinder8``, ``cnn``) runs every available method.
    ``command``: the command line, quoted in the report.
    """

    inputs: list[Path]
    output: Path
    dials: bool = False
    dispersion: bool = False
    peakfinder8: bool = False
    cnn: bool = False
    model: str = "default"
    hit_threshold: float | None = None
    device: str = "auto"
    labels: str | None = None
    dials_preset: str | None = None
    dials_min_spots: int | None = None
    dials_param: list[str] | None = None
    min_peaks: int | None = None
    max_frames: int | None = None
    tune: list[Path] | None = None
    target_recall: float | None = None
    adu_per_photon: float | None = None
    pedestal: str | None = None
    gallery: int = 8
    batch_size: int = 64
    overwrite: bool = False
    command: str = ""


def run_compare(
    request: CompareRequest,
    *,
    open_inputs: Callable[[list[Path]], FrameSource],
    pf8_options: Peakfinder8Options,
    progress: ProgressFactory,
    warn: Callable[[str], None],
    status: Callable[[str], None],
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Run the comparison ``request`` asks for; returns the outputs' paths and ``compare.json``'s summary.

    Args:
        request: the methods, settings, labels, tuning frames and outputs.
        open_inputs: opens files (inputs or tuning frames) as a :class:`FrameSource`.
        pf8_options: how peakfinder8 was set up.
        progress: progress of the tuning (``"tune"``) and of the comparison (``"compare"``).
        warn: shows a warning (methods left out or replaced, tuning frames among the inputs).
        status: shows a line while the outputs are written.

    Raises:
        ConfigError: an unknown pedestal mode, tuning without labels, a bad ``--dials-param``.
        OutputError: ``request.output`` holds an earlier comparison (without ``overwrite``).
    """
    r = request
    if r.pedestal is not None and r.pedestal not in PEDESTAL_MODES:
        raise ConfigError(f"--pedestal {r.pedestal!r}: expected one of {', '.join(PEDESTAL_MODES)}")
    if r.tune and not r.labels:
        raise ConfigError("--tune needs --labels (the tuning frames must be labelled)")
    criterion = Criterion(r.target_recall)
    check_outdir(r.output, overwrite=r.overwrite)
    source = open_inputs(r.inputs)
    contestants = _contestants(r, source, pf8_options)
    truth = load_labels(r.labels) if r.labels else None
    tuning: Tuning | None = None
    tuning_warnings: list[str] = []
    if r.tune:
        assert truth is not None
        with progress("tune") as update:
            choice, tuning, tuning_warnings = tuned_choice(
                contestants, open_inputs(r.tune), truth, criterion, given=r.tune, outdir=r.output,
                restart=r.overwrite, batch_size=r.batch_size, progress=update,
            )
    else:
        choice = untuned_choice(contestants)
    methods, warnings = build_methods(choice, geometry=source.geometry)
    warnings = tuning_warnings + warnings + _geometry_warning(source, contestants)
    for warning in warnings:
        warn(warning)
    with progress("compare") as update:
        result = run_comparison(
            source, methods, labels=truth, batch_size=r.batch_size, max_frames=r.max_frames, progress=update,
            state_dir=Path(r.output) / STATE_DIR, restart=r.overwrite,
        )
    overlap = tuning and overlap_warning(tuning, result.source_files, result.source_index)
    if overlap:
        warn(overlap)
        warnings.append(overlap)
    context = RunContext(command=r.command, warnings=warnings, n_frames_available=source.n_frames)
    return write_comparison(
        result, r.output, source=source, gallery=r.gallery, context=context, overwrite=r.overwrite, status=status
    )


def _cnn_params(r: CompareRequest) -> CnnHitParams:
    """The CNN's settings of the request (``--model default``: the shipped default model)."""
    return CnnHitParams(model=None if r.model == "default" else r.model, threshold=r.hit_threshold, device=r.device)


def _geometry_warning(source: FrameSource, contestants: Contestants) -> list[str]:
    """A warning when neither a geometry nor a gain was given: every method then reads a frame as one
    panel of 1 ADU per photon (docs/compare.md, ``--geometry``)."""
    if source.geometry is not None or contestants.gain_source != ASSUMED_GAIN:
        return []
    return [
        "no geometry (-g) and no gain given: each frame is read as one panel of 1 ADU per photon, with the "
        "beam at its centre; right for a one-panel photon counter, not for a multi-panel or integrating "
        "detector (give its CrystFEL geometry)"
    ]


def _contestants(r: CompareRequest, source: FrameSource, pf8_options: Peakfinder8Options) -> Contestants:
    """The methods asked for (all when none is named), with their base settings (given, or the gain-aware
    defaults) and what the user fixed of them."""
    everything = not (r.dials or r.dispersion or r.peakfinder8 or r.cnn)
    gain, gain_source = detector_gain(r.adu_per_photon, source.geometry, pf8_options.config)
    pf8 = None  # the peakfinder8 method, and the localiser of the CNN's hits
    if r.peakfinder8 or r.cnn or everything:
        pf8 = pf8_options.finder(source, r.min_peaks, defaults=photon_defaults(gain))
    pf8_given = pf8_options.overrides()
    if pf8 is not None and pf8_options.config is not None:
        pf8_given = {k: getattr(pf8.params, k) for k in PEAKFINDER8_GRID if k != "pedestal"}
    dials_overrides = parse_assignments(r.dials_param)
    params, rule = dials_settings(r.dials_preset, r.dials_min_spots, dials_overrides,
                                  base=dials_photon_defaults(gain))
    dials_given = parse_dials_overrides(dials_overrides)
    if r.dials_preset:  # a preset fixes every parameter it states
        dials_given = {**{k: getattr(params, k) for k in DIALS_GRID if k != "pedestal"}, **dials_given}
    return Contestants(
        dials=r.dials or everything,
        dispersion=r.dispersion or everything,
        peakfinder8=pf8 if r.peakfinder8 or everything else None,
        peakfinder8_given=pf8_given,
        min_peaks=r.min_peaks,
        dials_params=params,
        dials_rule=rule,
        dials_given=dials_given,
        dials_min_spots=rule.min_peaks if r.dials_preset or r.dials_min_spots is not None else None,
        cnn=_cnn_params(r) if r.cnn or everything else None,
        cnn_peakfinder=pf8,
        pedestal=r.pedestal,
        adu_per_photon=gain,
        gain_source=gain_source,
        optional=everything,
    )
