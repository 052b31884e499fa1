"""Build the methods a comparison runs: real DIALS (or its built-in fallback), dispersion, peakfinder8, CNN.

:func:`build_methods` turns a :class:`MethodChoice` into :class:`Method` objects (a named finder with a
description, parameters and notes for the report). Asking for DIALS where it is not installed gives
the built-in ``dispersion`` finder with the same parameters instead, and a warning. Importing this
module imports neither torch nor numba (the benchmark's workers build their finders here and measure
their own memory).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, NotAvailableError
from sfx_cnnhit.finders.base import HitFinder, HitRule, create_finder
from sfx_cnnhit.finders.config import CnnHitParams
from sfx_cnnhit.finders.dials import INSTALL_HINT, DialsSpotFinder, dials_available, dials_python
from sfx_cnnhit.finders.dispersion import DEFAULT_HIT_RULE, DialsParams, DispersionSpotFinder, dials_preset

from .pedestal import PedestalSubtracted

if TYPE_CHECKING:  # torch and numba: imported only where a CNN or peakfinder8 is built
    from sfx_cnnhit.finders.cnn import CnnHitFinder
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

CNN_MODULE = "sfx_cnnhit.finders.cnn"

HeatMaps = Callable[[NDArray[np.float32], NDArray[np.bool_]], tuple[NDArray[np.float32], NDArray[np.float32]]]


@dataclass
class Method:
    """A named hit finder taking part in a comparison.

    Attributes:
        name: short name used in tables and file columns (``dials``, ``peakfinder8``, ``cnn``).
        finder: the hit finder.
        score_name: what its score is (``n_spots``, ``n_peaks``, ``p_hit``).
        description: one line for the report (``real DIALS 3.12, dispersion, n_spots >= 14``).
        settings: JSON-able parameters, recorded in the report.
        notes: caveats for the report (a fallback, what its timing includes).
        inner_seconds: returns the seconds the finder spent in its own computation so far, when
            ``classify`` also pays for something else (process start, hand-over); None otherwise.
        origin: where the settings come from: ``kind`` (``tuned``, ``defaults`` or ``given``), ``detail``
            (one line for the report) and, when tuned, ``tuning`` (the validation score).
    """

    name: str
    finder: HitFinder
    score_name: str = "n_peaks"
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inner_seconds: Callable[[], float] | None = None
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def heatmaps(self) -> HeatMaps | None:
        """The finder's ``heatmaps(frames, masks) -> (maps (k, ss, fs) in [0, 1], raw_max (k,))``, if any."""
        maker = getattr(self.finder, "heatmaps", None)
        return maker if callable(maker) else None


@dataclass(frozen=True)
class MethodChoice:
    """Which methods to run and with what parameters.

    Attributes:
        dials: run real DIALS (falls back to the built-in finder when DIALS is not installed).
        dispersion: run the built-in DIALS-style finder.
        peakfinder8: the peakfinder8 finder to run, or None.
        cnn: the CNN to build, or None.
        dials_params, dials_rule: parameters and hit rule of both DIALS-style methods.
        cnn_peakfinder: localises the peaks of the CNN's hits (default: ``peakfinder8``).
        optional: the choice is the default "everything available": methods that cannot be built
            (DIALS, the CNN) are left out with a warning instead of an error.
        adu_per_photon: the detector's gain, for the pedestal estimate.
        peakfinder8_pedestal, dials_pedestal: those methods see each frame minus its pedestal
            estimate (:mod:`sfx_cnnhit.comparisons.pedestal`).
        origins: per method name, where its settings come from (:attr:`Method.origin`).
    """

    dials: bool = False
    dispersion: bool = False
    peakfinder8: Peakfinder8Finder | None = None
    cnn: CnnHitParams | None = None
    dials_params: DialsParams = field(default_factory=DialsParams)
    dials_rule: HitRule = DEFAULT_HIT_RULE
    cnn_peakfinder: Peakfinder8Finder | None = None
    optional: bool = False
    adu_per_photon: float = 1.0
    peakfinder8_pedestal: bool = False
    dials_pedestal: bool = False
    origins: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def _parse_value(text: str) -> Any:
    """A ``--dials-param`` value: none, an integer, a number, ``3,3`` (integers) or a word."""
    if text.lower() in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if "," in text:
        try:
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"DIALS parameter value {text!r}: a list must be integers such as 3,3") from None
    return text


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["gain=0.5", "kernel_size=3,3"]`` -> ``{"gain": "0.5", "kernel_size": "3,3"}`` (``--dials-param``)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--dials-param {item!r}: expected NAME=VALUE, e.g. gain=0.31")
        out[key.strip()] = value.strip()
    return out


def parse_dials_overrides(overrides: Mapping[str, str] | None) -> dict[str, Any]:
    """``--dials-param`` values (text) as DIALS parameter values (checked against a :class:`DialsParams`).

    Raises:
        ConfigError: unknown parameter or invalid value.
    """
    values = {k: _parse_value(v) for k, v in (overrides or {}).items()}
    try:
        DialsParams().with_overrides(**values)
    except TypeError as err:
        raise ConfigError(f"invalid DIALS parameter value ({err})") from None
    return values


def dials_settings(
    preset: str | None = None,
    min_spots: int | None = None,
    overrides: Mapping[str, str] | None = None,
    *,
    base: tuple[DialsParams, HitRule] | None = None,
) -> tuple[DialsParams, HitRule]:
    """DIALS parameters and hit rule: ``base`` (default DIALS's defaults), or a preset < ``overrides`` <
    ``min_spots``.

    Args:
        preset: a name from :data:`sfx_cnnhit.finders.dispersion.PRESETS` (``ke2018_ln83``, ...).
        min_spots: hit if ``n_spots >= min_spots`` (default: the preset's or base's, else 14).
        overrides: DIALS parameter names to values as text (``{"gain": "0.5", "kernel_size": "3,3"}``).
        base: the parameters and rule without a preset (e.g. the gain-aware defaults).

    Raises:
        ConfigError: unknown preset or parameter, or an invalid value.
    """
    params, rule = dials_preset(preset) if preset else (base or (DialsParams(), DEFAULT_HIT_RULE))
    if overrides:
        params = params.with_overrides(**parse_dials_overrides(overrides))
    if min_spots is not None:
        if min_spots < 1:
            raise ConfigError(f"the DIALS hit rule needs min_spots >= 1, got {min_spots}")
        rule = HitRule(min_peaks=min_spots)
    return params, rule


def describe_rule(rule: HitRule, count: str) -> str:
    """A hit rule in words, e.g. ``n_peaks >= 10`` or ``10 < n_peaks < 2048``."""
    op = "<=" if rule.inclusive else "<"
    if rule.max_peaks is None:
        return f"{count} {'>=' if rule.inclusive else '>'} {rule.min_peaks}"
    return f"{rule.min_peaks} {op} {count} {op} {rule.max_peaks}"


@functools.cache
def dials_version(python: str) -> str:
    """The version DIALS reports under ``python`` (``DIALS 3.12``), or ``unknown``."""
    done = subprocess.run(
        [python, "-c", "from dials.util.version import dials_version; print(dials_version())"],
        capture_output=True,
        text=True,
    )
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else "unknown"


def _with_pedestal(finder: HitFinder, pedestal_gain: float | None) -> tuple[HitFinder, dict[str, Any], str]:
    """``finder`` seeing frames minus their pedestal estimate (``pedestal_gain``: ADU per photon; None:
    frames as read), the setting to record and a few words for the description."""
    if pedestal_gain is None:
        return finder, {"pedestal": "none"}, ""
    settings = {"pedestal": "estimate", "adu_per_photon": pedestal_gain}
    return PedestalSubtracted(finder, pedestal_gain), settings, ", pedestal estimate subtracted"


def _dials_like(
    finder: DispersionSpotFinder | DialsSpotFinder, name: str, what: str, notes: list[str],
    pedestal_gain: float | None,
) -> Method:
    params, rule = finder.params, finder.hit_rule
    runs, pedestal, words = _with_pedestal(finder, pedestal_gain)
    return Method(
        name=name,
        finder=runs,
        score_name="n_spots",
        description=f"{what}, algorithm {params.algorithm}{words}, hit if {describe_rule(rule, 'n_spots')}",
        settings={"dials": params.as_dict(), "hit_rule": dataclasses.asdict(rule), **pedestal},
        notes=notes,
    )


def dispersion_method(
    params: DialsParams, rule: HitRule, *, geometry: DetectorGeometry | None = None, notes: list[str] | None = None,
    pedestal_gain: float | None = None,
) -> Method:
    """The built-in DIALS-style spot finder (same criteria as DIALS 3.12, no DIALS needed).

    ``pedestal_gain``: subtract each frame's pedestal estimate for this gain (ADU/photon); None: don't.
    """
    finder = DispersionSpotFinder(params, geometry=geometry, hit_rule=rule)
    return _dials_like(finder, "dispersion", "built-in DIALS-style spot finding (numpy)", list(notes or []),
                       pedestal_gain)


def dials_method(
    params: DialsParams, rule: HitRule, *, geometry: DetectorGeometry | None = None, frames_per_call: int = 256,
    pedestal_gain: float | None = None,
) -> Method:
    """Real DIALS spot finding, run as a subprocess (``pedestal_gain`` as in :func:`dispersion_method`).

    Raises:
        NotAvailableError: DIALS is not installed.
    """
    finder = DialsSpotFinder(params, geometry=geometry, hit_rule=rule, frames_per_call=frames_per_call)
    version = dials_version(finder.python)
    method = _dials_like(
        finder,
        "dials",
        f"real {version} spot finding (SpotFinderFactory, in {finder.python})",
        [
            "DIALS runs in its own Python: its time includes starting one DIALS process per batch of frames "
            "and handing the frames over as .npy files; the time inside DIALS is given separately"
        ],
        pedestal_gain,
    )
    method.settings["dials_version"] = version
    method.inner_seconds = lambda: finder.seconds_in_dials
    return method


def peakfinder8_method(finder: Peakfinder8Finder, pedestal_gain: float | None = None) -> Method:
    """Our peakfinder8 (identical to OM's) with its hit rule (``pedestal_gain`` as in :func:`dispersion_method`)."""
    runs, pedestal, words = _with_pedestal(finder, pedestal_gain)
    return Method(
        name="peakfinder8",
        finder=runs,
        score_name="n_peaks",
        description=f"peakfinder8 (sfx-cnnhit's, same results as OM 23.8.3){words}, hit if "
        f"{describe_rule(finder.hit_rule, 'n_peaks')}",
        settings={"peakfinder8": dataclasses.asdict(finder.params), "hit_rule": dataclasses.asdict(finder.hit_rule),
                  **pedestal},
    )


def cnn_method(
    choice: CnnHitParams, peakfinder: Peakfinder8Finder | None, geometry: DetectorGeometry | None = None
) -> Method:
    """The CNN hit finder (``sfx_cnnhit.finders.cnn``), built on demand, as ``reduce`` builds it.

    Args:
        choice: the CNN finder's settings (model, threshold, device ...).
        peakfinder: localises the peaks of the CNN's hits.
        geometry: the frames' detector (its panels tile the CNN's input, its gain is the CNN's noise
            floor); None: the peakfinder's slab as one image.

    Raises:
        NotAvailableError: the CNN hit finder or its model is not available.
        ConfigError: no peakfinder.
    """
    if importlib.util.find_spec(CNN_MODULE) is None:
        raise NotAvailableError(
            f"the CNN hit finder ({CNN_MODULE}) is not part of this installation; run compare without --cnn"
        )
    if peakfinder is None:
        raise ConfigError("the CNN of a comparison needs the peakfinder8 that localises its hits")
    detector = geometry if geometry is not None else DetectorGeometry.simple(peakfinder.layout.slab_shape)
    # the frames are read with the run-level hot-pixel map
    finder = cast("CnnHitFinder", create_finder("cnn", replace(choice, hot_pixel_map=False), detector=detector,
                                                peakfinder=peakfinder))
    import torch

    threshold = finder.threshold_for(peakfinder.layout.slab_shape)
    return Method(
        name="cnn",
        finder=finder,
        score_name="p_hit",
        description=f"CNN {choice.model or 'default'}, hit if P(hit) >= {threshold:g}",
        settings={
            **dataclasses.asdict(choice),
            "threshold": threshold,
            "localiser": dataclasses.asdict(peakfinder.params),
            "torch_version": torch.__version__,
        },
        notes=["peaks of the CNN's hits are localised with peakfinder8 (`localiser` settings); its time includes that "
               "localisation"],
    )


def build_methods(choice: MethodChoice, *, geometry: DetectorGeometry | None = None) -> tuple[list[Method], list[str]]:
    """The methods of ``choice``, in the order dials, dispersion, peakfinder8, cnn, and warnings.

    Raises:
        NotAvailableError: the CNN was asked for explicitly and cannot be built.
        ConfigError: nothing to run.
    """
    methods: list[Method] = []
    warnings: list[str] = []
    fallback: list[str] = []
    gain = choice.adu_per_photon
    dials_gain = gain if choice.dials_pedestal else None
    if choice.dials:
        if dials_available():
            methods.append(dials_method(choice.dials_params, choice.dials_rule, geometry=geometry,
                                        pedestal_gain=dials_gain))
        else:
            message = (
                f"real DIALS is not available under {dials_python()}: {INSTALL_HINT}. "
                "Using the built-in 'dispersion' finder with the same parameters instead"
            )
            warnings.append(message)
            fallback.append(f"DIALS was asked for but is not installed; {message}")
    if choice.dispersion or fallback:
        methods.append(dispersion_method(choice.dials_params, choice.dials_rule, geometry=geometry, notes=fallback,
                                         pedestal_gain=dials_gain))
    if choice.peakfinder8 is not None:
        methods.append(peakfinder8_method(choice.peakfinder8, gain if choice.peakfinder8_pedestal else None))
    if choice.cnn is not None:
        try:
            methods.append(cnn_method(choice.cnn, choice.cnn_peakfinder or choice.peakfinder8, geometry))
        except NotAvailableError as err:
            if not choice.optional:
                raise
            warnings.append(f"CNN left out: {err}")
    if not methods:
        raise ConfigError("compare: no method to run")
    for method in methods:
        method.origin = dict(choice.origins.get(method.name, {}))
    return methods, warnings
