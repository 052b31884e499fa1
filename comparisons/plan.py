"""Which settings each method runs with in a comparison: given, gain-aware defaults, or tuned.

- **Given**: an OM/Cheetah configuration, explicit peakfinder8 options, a DIALS preset or
  ``--dials-param`` values, ``--hit-threshold``; used as they are.
- **Gain-aware defaults** (nothing given): thresholds in photons, converted with the detector's ADU
  per photon (:func:`detector_gain`), on frames with their pedestal estimate subtracted
  (:func:`sfx_cnnhit.finders.config.photon_defaults`, :func:`~.grids.dials_photon_defaults`); the
  CNN at its model's calibrated threshold.
- **Tuned** (:func:`tuned_choice`): every classical method searches its grid (:mod:`.grids`) and hit
  rule on labelled validation frames, the CNN's threshold is calibrated on the same frames, all by
  the same :class:`~.contest.Criterion`; what the user gave explicitly stays fixed. The test frames
  are never read here. The result is kept in ``tuning.json`` (every setting tried, with its
  validation score) and reused by a resumed comparison.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sfx_cnnhit.detector import DetectorGeometry, median_adu_per_photon
from sfx_cnnhit.errors import NotAvailableError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import CnnHitParams, config_adu_per_photon
from sfx_cnnhit.finders.dials import dials_available
from sfx_cnnhit.finders.dispersion import DialsParams
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.atomic import write_errors, write_text_atomic
from sfx_cnnhit.io.labels import FrameLabels
from sfx_cnnhit.io.sources import FrameSource

from .contest import Criterion, Grid, Tuning, TuningRecord, frame_keys, tune
from .grids import cnn_grid, dials_grid, peakfinder8_grid
from .methods import MethodChoice, cnn_method
from .metrics import nan_to_none

TUNING_NAME = "tuning.json"
#: :func:`detector_gain`'s source when nothing gave the gain.
ASSUMED_GAIN = "assumed: no geometry, configuration or --adu-per-photon gave it"


def detector_gain(
    given: float | None, geometry: DetectorGeometry | None, config: str | os.PathLike[str] | None = None
) -> tuple[float, str]:
    """ADU per photon and where it comes from: ``given`` (``--adu-per-photon``), else the geometry's
    ``adu_per_photon``/``adu_per_eV``, else the OM/Cheetah configuration's, else 1 (assumed)."""
    if given is not None:
        return float(given), "--adu-per-photon"
    gain = median_adu_per_photon(geometry.panels) if geometry is not None else None
    if gain:
        return float(gain), "the geometry"
    gain = config_adu_per_photon(config) if config is not None else None
    if gain:
        return gain, f"{config}"
    return 1.0, ASSUMED_GAIN


@dataclass
class Contestants:
    """The methods asked for and what the user fixed of their settings.

    Attributes:
        dials, dispersion: run real DIALS / the built-in DIALS-style finder.
        peakfinder8: peakfinder8 with its base settings (given, or the gain-aware defaults), or None.
        peakfinder8_given: what the user set explicitly (config file, ``Peakfinder8Params`` fields);
            empty for the gain-aware defaults.
        min_peaks: the user's peakfinder8 hit rule (fixed under tuning), or None.
        dials_params, dials_rule: DIALS's base settings (given, or the gain-aware defaults).
        dials_given: the DIALS parameters the user set (``--dials-param``; a preset counts as given).
        dials_min_spots: the user's DIALS hit rule, or None.
        cnn: the CNN, or None; cnn_peakfinder: localises the CNN's hits.
        pedestal: ``estimate`` or ``none`` for every classical method; None: ``estimate`` for
            defaults and tuning, ``none`` for given settings.
        adu_per_photon, gain_source: the detector's gain and where it comes from.
        optional: methods that cannot be built are left out with a warning.
    """

    dials: bool = False
    dispersion: bool = False
    peakfinder8: Peakfinder8Finder | None = None
    peakfinder8_given: dict[str, Any] = field(default_factory=dict)
    min_peaks: int | None = None
    dials_params: DialsParams = field(default_factory=DialsParams)
    dials_rule: HitRule = field(default_factory=HitRule)
    dials_given: dict[str, Any] = field(default_factory=dict)
    dials_min_spots: int | None = None
    cnn: CnnHitParams | None = None
    cnn_peakfinder: Peakfinder8Finder | None = None
    pedestal: str | None = None
    adu_per_photon: float = 1.0
    gain_source: str = "assumed"
    optional: bool = False

    def _pedestal(self, given: bool) -> bool:
        return (self.pedestal or ("none" if given else "estimate")) == "estimate"

    def _choice(self, **changes: Any) -> MethodChoice:
        base = MethodChoice(
            dials=self.dials, dispersion=self.dispersion, peakfinder8=self.peakfinder8, cnn=self.cnn,
            dials_params=self.dials_params, dials_rule=self.dials_rule, cnn_peakfinder=self.cnn_peakfinder,
            optional=self.optional, adu_per_photon=self.adu_per_photon,
        )
        return replace(base, **changes)


def _given_words(given: Mapping[str, Any], rule: str | None) -> str:
    parts = [f"{k}={v}" for k, v in given.items()] + ([rule] if rule else [])
    return "given: " + ", ".join(parts)


def untuned_choice(c: Contestants) -> MethodChoice:
    """The methods at their given settings or the gain-aware defaults, each with its origin."""
    gain = f"{c.adu_per_photon:g} ADU/photon ({c.gain_source})"
    pf8_given = bool(c.peakfinder8_given) or c.min_peaks is not None
    dials_given = bool(c.dials_given) or c.dials_min_spots is not None
    origins: dict[str, dict[str, Any]] = {}
    for name, given, what, rule in (
        ("peakfinder8", pf8_given, c.peakfinder8_given, None if c.min_peaks is None else f"min_peaks={c.min_peaks}"),
        *((n, dials_given, c.dials_given, None if c.dials_min_spots is None else f"min_spots={c.dials_min_spots}")
          for n in ("dials", "dispersion")),
    ):
        pedestal = "pedestal estimate subtracted" if c._pedestal(given) else "no pedestal subtracted"
        detail = (f"{_given_words(what, rule)}; the rest gain-aware defaults" if given
                  else "gain-aware defaults (thresholds in photons)")
        origins[name] = {"kind": "given" if given else "defaults", "detail": f"{detail}, {gain}, {pedestal}"}
    cnn_given = c.cnn is not None and c.cnn.threshold is not None
    origins["cnn"] = {"kind": "given" if cnn_given else "defaults",
                      "detail": "given threshold" if cnn_given else "the model's calibrated threshold"}
    return c._choice(peakfinder8_pedestal=c._pedestal(pf8_given), dials_pedestal=c._pedestal(dials_given),
                     origins=origins)


def _grids(c: Contestants, geometry: DetectorGeometry | None, warnings: list[str]) -> list[Grid]:
    grids: list[Grid] = []
    fixed_pedestal = {} if c.pedestal is None else {"pedestal": c.pedestal}
    if c.peakfinder8 is not None:
        grids.append(peakfinder8_grid(c.peakfinder8, c.adu_per_photon, fixed={**c.peakfinder8_given, **fixed_pedestal},
                                      fixed_cut=c.min_peaks))
    if c.dials or c.dispersion:
        real = c.dials and dials_available()
        grids.append(dials_grid("dials" if real else "dispersion", c.dials_params, c.adu_per_photon, real=real,
                                geometry=geometry, fixed={**c.dials_given, **fixed_pedestal},
                                fixed_cut=c.dials_min_spots))
    if c.cnn is not None:
        try:
            grids.append(cnn_grid(cnn_method(c.cnn, c.cnn_peakfinder, geometry), c.cnn.threshold))
        except NotAvailableError as err:
            if not c.optional:
                raise
            warnings.append(f"CNN not tuned: {err}")
    return grids


def _identity(
    source: FrameSource, given: Sequence[str | os.PathLike[str]], labels: FrameLabels, criterion: Criterion,
    grids: list[Grid],
) -> dict[str, Any]:
    """What a reused ``tuning.json`` must share: every file read (lists included) by path, size and
    modification time, the labels, criterion and grids."""
    files = dict.fromkeys([*map(str, given), *source.input_paths])
    signature = [[os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files]
    identity = {"inputs": signature, "n_frames": source.n_frames, "labels": labels.description,
                "criterion": criterion.describe(),
                "grids": [{"name": g.name, "cells": g.cells, "fixed_cut": g.fixed_cut} for g in grids]}
    plain: dict[str, Any] = json.loads(json.dumps(identity))  # as read back from tuning.json
    return plain


def load_tuning(path: Path, identity: dict[str, Any]) -> Tuning | None:
    """The tuning kept in ``path`` if it was made with the same ``identity``, else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return TuningRecord(**record).tuning() if record.get("identity") == identity else None
    except (OSError, ValueError, TypeError):
        return None


def tuned_choice(
    c: Contestants,
    source: FrameSource,
    labels: FrameLabels,
    criterion: Criterion,
    *,
    given: Sequence[str | os.PathLike[str]] = (),
    outdir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[MethodChoice, Tuning, list[str]]:
    """Tune every method on ``source`` (the validation frames) and return the methods at their chosen
    settings, the tuning (with the frames it used, ``file //index``) and warnings.

    Args:
        c: the methods and what the user fixed.
        source, labels: the labelled validation frames.
        criterion: the same choice rule for every method.
        given: the files named for the tuning (``.lst`` lists included): a changed list is a new tuning.
        outdir: keep the tuning in ``outdir/tuning.json`` and reuse one made with the same files (by
            path, size and modification time), labels, criterion and grids (unless ``restart``).
        batch_size, progress: as for :func:`~.contest.tune`.
    """
    warnings: list[str] = []
    grids = _grids(c, source.geometry, warnings)
    identity = _identity(source, given, labels, criterion, grids)
    path = None if outdir is None else Path(outdir) / TUNING_NAME
    tuning = None if path is None or restart else load_tuning(path, identity)
    if tuning is None:
        tuning = tune(source, labels, grids, criterion, batch_size=batch_size, progress=progress)
        if path is not None:
            record = dataclasses.asdict(TuningRecord.of(identity, tuning))
            with write_errors(path):
                write_text_atomic(path, json.dumps(nan_to_none(record), indent=1) + "\n",
                                  protect=source.input_paths)
    tuned = tuning.methods
    on = f"{len(tuning.frames)} labelled frames of " + ", ".join(source.input_paths)
    origins: dict[str, dict[str, Any]] = {}
    changes: dict[str, Any] = {}
    for name, t in tuned.items():
        context = {"kind": "tuned", "on": source.input_paths, "labels": labels.description,
                   "criterion": criterion.describe()}
        origin = {"kind": "tuned", "detail": f"tuned on {on} ({criterion.describe()}, {len(t.table)} settings "
                                             f"tried, {t.seconds:.1f} s)", "tuning": t.summary(context)}
        settings = {k: v for k, v in t.settings.items() if k != "pedestal"}
        if name == "peakfinder8":
            assert c.peakfinder8 is not None
            finder = c.peakfinder8.with_params(replace(c.peakfinder8.params, **settings))
            finder.hit_rule = HitRule(min_peaks=int(t.cut))
            changes.update(peakfinder8=finder, peakfinder8_pedestal=t.settings["pedestal"] == "estimate")
            origins[name] = origin
        elif name == "cnn":
            assert c.cnn is not None
            changes["cnn"] = replace(c.cnn, threshold=t.cut)
            origins[name] = origin
        else:
            changes.update(dials_params=c.dials_params.with_overrides(**settings),
                           dials_rule=HitRule(min_peaks=int(t.cut)),
                           dials_pedestal=t.settings["pedestal"] == "estimate")
            origins["dials"] = origins["dispersion"] = origin
    return c._choice(origins=origins, **changes), tuning, warnings


def overlap_warning(tuning: Tuning, files: list[str], indices: Any) -> str | None:
    """A warning naming how many test frames were also tuning frames, or None when the sets are disjoint."""
    shared = set(tuning.frames).intersection(frame_keys(files, indices))
    if not shared:
        return None
    return (f"{len(shared)} of the test frames were also tuning frames (e.g. {min(shared)}): their scores are not "
            "independent of the settings; tune on other frames")
