"""peakfinder8 parameters and the adapters that read the configurations users already have.

Three sources, each returning ``(Peakfinder8Params, HitRule)``:

- OM's monitor YAML (:func:`load_om_yaml`): group ``peakfinder8_peak_detection`` plus
  ``crystallography: min_num_peaks_for_hit / max_num_peaks_for_hit``; hit iff ``min < n < max``.
- Cheetah's ini (:func:`load_cheetah_ini`): ``hitfinder*`` keys, case-insensitive; hit iff
  ``hitfinderNpeaks <= n <= hitfinderNpeaksMax``.
- CrystFEL's indexamajig peak-search options (:func:`from_crystfel_options`); hit iff
  ``n >= --min-peaks``.

Precedence is defaults < file < overrides. Overrides use our field names (those of
:class:`Peakfinder8Params` plus ``min_peaks``, ``max_peaks``, ``inclusive``); ``None`` values are
skipped so unset command-line options can be passed straight through.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.finders.base import HitRule, probability_threshold


@dataclass(frozen=True)
class Peakfinder8Params:
    """peakfinder8 parameters, with OM's names. Defaults are CrystFEL's indexamajig defaults.

    Attributes:
        adc_threshold: lower limit of the per-radius detection threshold (ADU).
        minimum_snr: sigma multiple for the radial clipping and threshold, and the minimum peak SNR.
        min_pixel_count, max_pixel_count: accepted peak sizes in pixels (inclusive).
        local_bg_radius: the local background is taken within ``2 * local_bg_radius`` pixels.
        min_res, max_res: accepted distances from the beam in pixels (pixels with ``r < min_res``
            or ``r > max_res`` are masked, as OM does); ``max_res=None`` means no upper limit.
        max_num_peaks: at most this many peaks are returned (the first ones in scan order).
        fast_mode: radial statistics from a sample of at most
            ``number_of_pixel_per_bin_in_radial_statistics`` pixels per radial bin (OM's fast mode).
        bad_pixel_map_filename, bad_pixel_map_hdf5_path: optional HDF5 bad-pixel map
            (1 = use, 0 = ignore), as in OM.
        om_stale_probe: reproduce the reference programs' region-growing quirk that can attach an
            unconnected cluster to a peak (see :mod:`sfx_cnnhit.finders._pf8_core`); keep it on to
            agree with OM/Cheetah exactly.
    """

    adc_threshold: float = 800.0
    minimum_snr: float = 5.0
    min_pixel_count: int = 2
    max_pixel_count: int = 200
    local_bg_radius: int = 3
    min_res: float = 0.0
    max_res: float | None = None
    max_num_peaks: int = 2048
    fast_mode: bool = False
    number_of_pixel_per_bin_in_radial_statistics: int = 100
    bad_pixel_map_filename: str | None = None
    bad_pixel_map_hdf5_path: str | None = None
    om_stale_probe: bool = True

    def __post_init__(self) -> None:
        for name in ("adc_threshold", "minimum_snr", "min_res"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"peakfinder8: {name} must be a finite number, got {value!r}")
        for name in ("min_pixel_count", "max_pixel_count", "local_bg_radius", "max_num_peaks",
                     "number_of_pixel_per_bin_in_radial_statistics"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise ConfigError(f"peakfinder8: {name} must be an integer, got {value!r}")
        if self.minimum_snr < 0:
            raise ConfigError(f"peakfinder8: minimum_snr must be >= 0, got {self.minimum_snr}")
        if self.min_pixel_count < 1:
            raise ConfigError(f"peakfinder8: min_pixel_count must be >= 1, got {self.min_pixel_count}")
        if self.max_pixel_count < self.min_pixel_count:
            hint = " (Cheetah's default hitfinderMaxPixCount=0 rejects every peak)" if self.max_pixel_count == 0 else ""
            raise ConfigError(
                f"peakfinder8: max_pixel_count ({self.max_pixel_count}) must be >= min_pixel_count "
                f"({self.min_pixel_count}){hint}"
            )
        if self.local_bg_radius < 1:
            raise ConfigError(f"peakfinder8: local_bg_radius must be >= 1, got {self.local_bg_radius}")
        if self.max_num_peaks < 1:
            raise ConfigError(f"peakfinder8: max_num_peaks must be >= 1, got {self.max_num_peaks}")
        if self.number_of_pixel_per_bin_in_radial_statistics < 1:
            raise ConfigError("peakfinder8: number_of_pixel_per_bin_in_radial_statistics must be >= 1")
        if self.min_res < 0:
            raise ConfigError(f"peakfinder8: min_res must be >= 0, got {self.min_res}")
        max_res_ok = self.max_res is None or (
            isinstance(self.max_res, int | float)
            and not isinstance(self.max_res, bool)
            and math.isfinite(self.max_res)
            and self.max_res > self.min_res
        )
        if not max_res_ok:
            raise ConfigError(
                f"peakfinder8: max_res must be a number > min_res ({self.min_res}) or None, got {self.max_res!r}"
            )
        if (self.bad_pixel_map_filename is None) != (self.bad_pixel_map_hdf5_path is None):
            raise ConfigError("peakfinder8: bad_pixel_map_filename and bad_pixel_map_hdf5_path go together")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, source: str) -> Peakfinder8Params:
        """Parameters from ``{field name: value}`` (strings of the command line or YAML scalars); the
        other fields keep their defaults.

        Raises:
            ConfigError: unknown field or invalid value (the message starts with ``source``).
        """
        unknown = sorted(set(values) - set(PARAM_FIELDS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown peakfinder8 parameter(s) {', '.join(unknown)} (known: {', '.join(PARAM_FIELDS)})"
            )
        return _build({name: _coerce(name, value, source) for name, value in values.items()}, source)


EXPLAIN_METHODS = ("gradcam", "guided", "none")
PRECISION_CHOICES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class CnnHitParams:
    """The CNN hit finder's settings, as every caller gives them (OM's ``cnn_hit_detection`` group,
    Cheetah's ``cnn*`` keys, the command line, ``compare``).

    Attributes:
        model: checkpoint path or shipped model name; None = the shipped default model.
        threshold: a frame is a hit when its P(hit) is at least this (in [0, 1]); None = the model's
            calibrated threshold.
        device: ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        explain: heat map made for each hit: ``"gradcam"``, ``"guided"`` (guided Grad-CAM) or ``"none"``.
        batch_size: frames per forward pass of :meth:`CnnHitFinder.classify`.
        precision: forward-pass arithmetic: ``"auto"`` (bfloat16 where the hardware has it),
            ``"float32"`` or ``"bfloat16"``.
        adu_per_photon: the detector's gain (ADU per photon, e.g. 32 for a CSPAD), the CNN's
            noise floor; None: 1 (photon counters, or frames already in photons).
        hot_pixel_map: learn the detector's hot pixels from the frames seen so far and mask them
            (:class:`~sfx_cnnhit.io.hotpixels.HotPixelTracker`, Cheetah's ``hotpixFreq``); the first
            few frames of a run are judged without a map.
    """

    model: str | None = None
    threshold: float | None = None
    device: str = "auto"
    explain: str = "none"
    batch_size: int = 64
    precision: str = "float32"
    adu_per_photon: float | None = None
    hot_pixel_map: bool = True

    def __post_init__(self) -> None:
        if self.threshold is not None:
            probability_threshold(self.threshold)
        if self.explain not in EXPLAIN_METHODS:
            raise ConfigError(f"CNN explain must be one of {', '.join(EXPLAIN_METHODS)}, got {self.explain!r}")
        if self.batch_size < 1:
            raise ConfigError(f"CNN batch size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"CNN precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if not self.device:
            raise ConfigError("CNN device must not be empty (use auto, cpu, cuda ...)")
        if self.adu_per_photon is not None and not self.adu_per_photon > 0:
            raise ConfigError(f"CNN adu_per_photon must be positive, got {self.adu_per_photon}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, source: str) -> CnnHitParams:
        """Settings from ``{field name: value}`` as a file gives them (strings or YAML scalars).

        An empty or null ``model`` means the shipped default model.

        Raises:
            ConfigError: invalid value (the message starts with ``source``).
        """
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name in ("threshold", "adu_per_photon"):  # empty or null: the model's threshold, 1 ADU/photon
                blank = value is None or str(value).strip() == ""
                kwargs[name] = None if blank else to_float(name, value, source)
            elif name == "batch_size":
                kwargs[name] = to_int(name, value, source)
            elif name == "hot_pixel_map":
                kwargs[name] = _to_bool(name, value, source)
            elif name == "model":
                kwargs[name] = None if value is None or str(value).strip() == "" else str(value).strip()
            elif name in ("device", "explain", "precision"):
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
                kwargs[name] = value.strip().lower()
            else:
                raise ConfigError(f"{source}: unknown CNN setting {name!r}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def finder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~sfx_cnnhit.finders.cnn.CnnHitFinder` (all but ``explain``, which
        says what the caller makes of hits)."""
        return {"model": self.model, "threshold": self.threshold, "device": self.device, "batch_size": self.batch_size,
                "precision": self.precision, "hot_pixel_map": self.hot_pixel_map}


PARAM_FIELDS = tuple(f.name for f in fields(Peakfinder8Params))
_INT_FIELDS = {f.name for f in fields(Peakfinder8Params) if f.type == "int"}
_FLOAT_FIELDS = {"adc_threshold", "minimum_snr", "min_res", "max_res"}
_BOOL_FIELDS = {"fast_mode", "om_stale_probe"}
_RULE_FIELDS = ("min_peaks", "max_peaks", "inclusive")


def _to_bool(name: str, value: Any, source: str) -> bool:
    if isinstance(value, bool | int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"1", "0", "true", "false", "yes", "no"}:
        return value.strip().lower() in {"1", "true", "yes"}
    raise ConfigError(f"{source}: invalid value {value!r} for {name} (expected true/false)")


def to_int(name: str, value: Any, source: str) -> int:
    """Parameter ``name``'s ``value`` (text or a number without fraction) as an int.

    Raises:
        ConfigError: not an integer (the message starts with ``source``).
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not number.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {name} (expected an integer)") from None
    return int(number)


def to_float(name: str, value: Any, source: str) -> float:
    """Parameter ``name``'s ``value`` (text or a number) as a float.

    Raises:
        ConfigError: not a number (the message starts with ``source``).
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {name} (expected a number)") from None


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert a value from a file or the command line to the type of parameter ``name``."""
    if value is None:
        return None
    if name in _BOOL_FIELDS or name == "inclusive":
        return _to_bool(name, value, source)
    if name in _INT_FIELDS or name in {"min_peaks", "max_peaks"}:
        return to_int(name, value, source)
    if name in _FLOAT_FIELDS:
        return to_float(name, value, source)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: invalid value {value!r} for {name} (expected a string)")
    return value


def _build(settings: Mapping[str, Any], source: str) -> Peakfinder8Params:
    try:
        return Peakfinder8Params(**settings)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _split_overrides(
    overrides: Mapping[str, Any] | None, source: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Coerced ``(parameter changes, hit-rule changes)`` from overrides, skipping ``None`` values."""
    param_changes: dict[str, Any] = {}
    rule_changes: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in PARAM_FIELDS:
            param_changes[key] = _coerce(key, value, source)
        elif key in _RULE_FIELDS:
            rule_changes[key] = _coerce(key, value, source)
        else:
            known = ", ".join((*PARAM_FIELDS, *_RULE_FIELDS))
            raise ConfigError(f"{source}: unknown peakfinder8 option {key!r} (known: {known})")
    return param_changes, rule_changes


def _finish(
    settings: Mapping[str, Any],
    rule_settings: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    source: str,
) -> tuple[Peakfinder8Params, HitRule]:
    """Build parameters and hit rule from file settings with the overrides on top."""
    param_changes, rule_changes = _split_overrides(overrides, "overrides")
    params = _build({**settings, **param_changes}, source)
    try:
        rule = HitRule(**{**rule_settings, **rule_changes})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return params, rule


def apply_overrides(
    params: Peakfinder8Params,
    hit_rule: HitRule,
    overrides: Mapping[str, Any] | None,
    *,
    source: str = "overrides",
) -> tuple[Peakfinder8Params, HitRule]:
    """Replace parameters by explicitly given values (``None`` values are skipped).

    Keys are :class:`Peakfinder8Params` field names plus ``min_peaks``, ``max_peaks`` and
    ``inclusive`` for the hit rule.

    Raises:
        ConfigError: unknown key or invalid value.
    """
    rule_settings = {"min_peaks": hit_rule.min_peaks, "max_peaks": hit_rule.max_peaks,
                     "inclusive": hit_rule.inclusive}
    return _finish(_as_dict(params), rule_settings, overrides, source)


def _as_dict(params: Peakfinder8Params) -> dict[str, Any]:
    return {name: getattr(params, name) for name in PARAM_FIELDS}


# ----------------------------------------------------------------------------------------------
# OM

OM_GROUP = "peakfinder8_peak_detection"
OM_HIT_GROUP = "crystallography"
_OM_KEYS = {
    "max_num_peaks", "adc_threshold", "minimum_snr", "min_pixel_count", "max_pixel_count",
    "local_bg_radius", "min_res", "max_res", "bad_pixel_map_filename", "bad_pixel_map_hdf5_path",
    "fast_mode", "number_of_pixel_per_bin_in_radial_statistics",
}
# "detector_type" appears in OM's example files and is read by no OM 23.8.3 code; "name" is added to
# every group by OM's MonitorParameters (the group's own name).
_OM_IGNORED_KEYS = {"detector_type", "name"}


def params_from_om_group(
    group: Mapping[str, Any], *, source: str = "OM parameters", base_dir: Path | None = None
) -> Peakfinder8Params:
    """Parameters from OM's ``peakfinder8_peak_detection`` group (a dict, as OM's class takes it).

    Args:
        group: the group's entries; missing entries take our defaults.
        source: name for error messages (the file).
        base_dir: folder against which a relative ``bad_pixel_map_filename`` is resolved.

    Raises:
        ConfigError: unknown key or invalid value.
    """
    if not isinstance(group, Mapping):
        raise ConfigError(f"{source}: {OM_GROUP} must be a mapping of parameters")
    settings: dict[str, Any] = {}
    for key, value in group.items():
        if key in _OM_IGNORED_KEYS:
            continue
        if key not in _OM_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} in {OM_GROUP}")
        if key in {"bad_pixel_map_filename", "bad_pixel_map_hdf5_path"}:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{source}: {key} must be a string or null")
            if key == "bad_pixel_map_filename" and value is not None and base_dir is not None:
                value = str(base_dir / value)
            settings[key] = value
        else:
            settings[key] = _coerce(key, value, source)
    if settings.get("bad_pixel_map_filename") is None:
        settings.pop("bad_pixel_map_hdf5_path", None)
        settings.pop("bad_pixel_map_filename", None)
    return _build(settings, source)


def hit_rule_from_om_group(group: Mapping[str, Any] | None, *, source: str = "OM parameters") -> HitRule:
    """OM's hit rule ``min_num_peaks_for_hit < n < max_num_peaks_for_hit`` (strict) from its group.

    Other keys of OM's ``crystallography`` group belong to other OM components and are ignored.
    """
    group = group or {}
    if not isinstance(group, Mapping):
        raise ConfigError(f"{source}: {OM_HIT_GROUP} must be a mapping of parameters")
    min_peaks = _coerce("min_peaks", group.get("min_num_peaks_for_hit", HitRule.min_peaks), source)
    max_peaks = _coerce("max_peaks", group.get("max_num_peaks_for_hit"), source)
    try:
        return HitRule(min_peaks=min_peaks, max_peaks=max_peaks, inclusive=False)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_om_yaml(
    path: str | Path, *, overrides: Mapping[str, Any] | None = None
) -> tuple[Peakfinder8Params, HitRule]:
    """Parameters and hit rule from an OM monitor YAML file (other groups are ignored).

    A relative ``bad_pixel_map_filename`` is resolved against the YAML file's folder.

    Raises:
        ConfigError: unreadable file, missing ``peakfinder8_peak_detection`` group, unknown key.
    """
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read OM configuration ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, Mapping) or OM_GROUP not in document:
        raise ConfigError(f"{path}: no '{OM_GROUP}' group (is this an OM monitor.yaml?)")
    params = params_from_om_group(document[OM_GROUP], source=str(path), base_dir=path.parent)
    rule = hit_rule_from_om_group(document.get(OM_HIT_GROUP), source=str(path))
    return apply_overrides(params, rule, overrides, source=str(path))


# ----------------------------------------------------------------------------------------------
# Cheetah

CHEETAH_DEFAULTS: dict[str, Any] = {
    # antonbarty/cheetah source/libcheetah/src/global.cpp defaults.
    "hitfinderadc": 100.0,
    "hitfinderminsnr": 40.0,
    "hitfinderminpixcount": 3,
    "hitfindermaxpixcount": 0,
    "hitfinderlocalbgradius": 4,
    "hitfinderminres": 0.0,
    "hitfindermaxres": 1e6,
    "hitfindernpeaks": 50,
    "hitfindernpeaksmax": 100000,
}
_CHEETAH_TO_FIELD = {
    "hitfinderadc": "adc_threshold",
    "hitfinderminsnr": "minimum_snr",
    "hitfinderminpixcount": "min_pixel_count",
    "hitfindermaxpixcount": "max_pixel_count",
    "hitfinderlocalbgradius": "local_bg_radius",
    "hitfinderminres": "min_res",
    "hitfindermaxres": "max_res",
    "hitfindernpeaks": "min_peaks",
    "hitfindernpeaksmax": "max_peaks",
}
# Cheetah hit-finder keys that do not change what peakfinder8 finds: accepted and ignored.
_CHEETAH_IGNORED = {
    "hitfinder", "hitfinderalgorithm", "hitfinderforinitials", "hitfinderinverthit",
    "hitfinderdetectorid", "hitfindertit", "hitfindercheckgradient", "hitfindermingradient",
    "hitfindercluster", "hitfindersubtractlocalbg", "hitfinderlocalbgthickness",
    "hitfinderdownsampling", "hitfinderfastscan", "hitfinderusetof", "hitfindertofmincount",
    "hitfindertofmaxcount", "hitfindertofwindow", "hitfinderignorehalopixels",
    "hitfinderignorenoisypixels", "hitfinderondetectorcorrecteddata", "hitfinderresolutionunitpixel",
    "hitfinderminpeakseparation",
}


def read_cheetah_ini(path: str | os.PathLike[str]) -> dict[str, str]:
    """``key -> value`` of a Cheetah ini file, keys lower-cased (Cheetah is case-insensitive).

    ``#`` and ``;`` start comments; ``[section]`` lines are skipped; later keys win.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read Cheetah configuration ({exc.strerror})") from None
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line or (line.startswith("[") and line.endswith("]")):
            continue
        if "=" not in line:
            raise ConfigError(f"{path}:{number}: expected key=value, got {raw.strip()!r}")
        key, value = line.split("=", 1)
        entries[key.strip().lower()] = value.strip()
    return entries


def from_cheetah_settings(
    entries: Mapping[str, Any],
    *,
    source: str = "Cheetah parameters",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Peakfinder8Params, HitRule]:
    """Parameters and the inclusive hit rule from Cheetah ini entries (keys any case).

    Cheetah's defaults fill missing keys. ``hitfinderNpeaksMax`` is also the peak-list size
    (``max_num_peaks``), as in Cheetah. Keys outside the ``hitfinder*`` family belong to other
    Cheetah stages and are ignored; unknown ``hitfinder*`` keys are errors. Cheetah's
    ``hitfinderMaxPixCount=0`` (its default) rejects every peak: it is replaced by our default
    with a warning unless an override sets ``max_pixel_count``.

    Raises:
        ConfigError: unknown ``hitfinder*`` key, invalid value, or resolution limits in Å.
    """
    lowered = {str(k).lower(): v for k, v in entries.items()}
    for key in lowered:
        if key.startswith("hitfinder") and key not in _CHEETAH_TO_FIELD and key not in _CHEETAH_IGNORED:
            raise ConfigError(f"{source}: unknown Cheetah hit-finder key {key!r}")
    unit_pixel = to_int("hitfinderResolutionUnitPixel", lowered.get("hitfinderresolutionunitpixel", 1), source)
    if unit_pixel != 1:
        raise ConfigError(
            f"{source}: hitfinderResolutionUnitPixel=0 (limits in Å) is not supported; give "
            "hitfinderMinRes/hitfinderMaxRes in pixels"
        )
    algorithm = lowered.get("hitfinderalgorithm")
    if algorithm is not None and str(algorithm).strip() != "8":
        warnings.warn(
            f"{source}: hitfinderAlgorithm={algorithm}; sfx-cnnhit runs peakfinder8 with these parameters",
            UserWarning,
            stacklevel=2,
        )
    if "hitfinderminpeakseparation" in lowered:
        warnings.warn(f"{source}: hitfinderMinPeakSeparation is not applied", UserWarning, stacklevel=2)
    values = {**CHEETAH_DEFAULTS, **{k: v for k, v in lowered.items() if k in _CHEETAH_TO_FIELD}}
    settings = {_CHEETAH_TO_FIELD[k]: _coerce(_CHEETAH_TO_FIELD[k], v, source) for k, v in values.items()}
    min_peaks = settings.pop("min_peaks")
    max_peaks = settings.pop("max_peaks")
    settings["max_num_peaks"] = max_peaks
    if settings["max_pixel_count"] == 0 and (overrides or {}).get("max_pixel_count") is None:
        default = Peakfinder8Params.max_pixel_count
        warnings.warn(
            f"{source}: hitfinderMaxPixCount=0 makes Cheetah's peakfinder8 reject every peak; "
            f"using max_pixel_count={default} (set hitfinderMaxPixCount to choose)",
            UserWarning,
            stacklevel=2,
        )
        settings["max_pixel_count"] = default
    return _finish(settings, {"min_peaks": min_peaks, "max_peaks": max_peaks, "inclusive": True}, overrides, source)


def load_cheetah_ini(
    path: str | Path, *, overrides: Mapping[str, Any] | None = None
) -> tuple[Peakfinder8Params, HitRule]:
    """Parameters and hit rule from a Cheetah ini file: see :func:`from_cheetah_settings`."""
    return from_cheetah_settings(read_cheetah_ini(path), source=str(path), overrides=overrides)


# ----------------------------------------------------------------------------------------------
# CrystFEL

CRYSTFEL_DEFAULTS: dict[str, Any] = {
    # taw10/crystfel src/im-argparse.c defaults (max-res 0 = no limit since 0.12.0); the peak-list
    # size is fixed at 2048 in process_image.c.
    "threshold": 800.0,
    "min-snr": 5.0,
    "min-pix-count": 2,
    "max-pix-count": 200,
    "local-bg-radius": 3,
    "min-res": 0.0,
    "max-res": 0.0,
    "min-peaks": 0,
}
_CRYSTFEL_TO_FIELD = {
    "threshold": "adc_threshold",
    "min-snr": "minimum_snr",
    "min-pix-count": "min_pixel_count",
    "max-pix-count": "max_pixel_count",
    "local-bg-radius": "local_bg_radius",
    "min-res": "min_res",
    "max-res": "max_res",
    "min-peaks": "min_peaks",
}
_CRYSTFEL_ALIASES = {"t": "threshold"}


def _crystfel_pairs(options: Mapping[str, Any] | Sequence[str], source: str) -> dict[str, Any]:
    """Normalise ``{"--min-snr": 5}`` or ``["--min-snr=5", "-t", "100", "--peakfinder8-fast"]``."""
    pairs: dict[str, Any] = {}
    if isinstance(options, Mapping):
        items = list(options.items())
    else:
        items = []
        tokens = list(options)
        i = 0
        value: str | bool
        while i < len(tokens):
            token = tokens[i]
            if not token.startswith("-"):
                raise ConfigError(f"{source}: expected an option, got {token!r}")
            if "=" in token:
                name, value = token.split("=", 1)
            elif token.lstrip("-") == "peakfinder8-fast":
                name, value = token, True
            elif i + 1 < len(tokens):
                name, value = token, tokens[i + 1]
                i += 1
            else:
                raise ConfigError(f"{source}: option {token} needs a value")
            items.append((name, value))
            i += 1
    for name, value in items:
        key = str(name).lstrip("-")
        pairs[_CRYSTFEL_ALIASES.get(key, key)] = value
    return pairs


def from_crystfel_options(
    options: Mapping[str, Any] | Sequence[str],
    *,
    source: str = "indexamajig options",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Peakfinder8Params, HitRule]:
    """Parameters and hit rule from indexamajig's peak-search options.

    Accepts ``--threshold/-t --min-snr --min-pix-count --max-pix-count --local-bg-radius --min-res
    --max-res --min-peaks --peakfinder8-fast`` and ``--peaks=peakfinder8``, as a mapping (names with
    or without dashes) or as command-line tokens. CrystFEL's defaults fill the rest;
    ``--max-res 0`` means no limit; the hit rule is ``n >= --min-peaks`` with no upper bound.

    Raises:
        ConfigError: any other option, ``--peaks`` other than peakfinder8, or an invalid value.
    """
    pairs = _crystfel_pairs(options, source)
    values = dict(CRYSTFEL_DEFAULTS)
    fast = False
    for key, value in pairs.items():
        if key == "peaks":
            if str(value) != "peakfinder8":
                raise ConfigError(f"{source}: --peaks={value} is not peakfinder8")
        elif key == "peakfinder8-fast":
            fast = _coerce("fast_mode", value, source)
        elif key in _CRYSTFEL_TO_FIELD:
            values[key] = value
        else:
            raise ConfigError(f"{source}: unsupported indexamajig option --{key}")
    settings = {_CRYSTFEL_TO_FIELD[k]: _coerce(_CRYSTFEL_TO_FIELD[k], v, source) for k, v in values.items()}
    min_peaks = settings.pop("min_peaks")
    settings.pop("max_peaks", None)
    if settings["max_res"] == 0:
        settings["max_res"] = None
    rule_settings = {"min_peaks": min_peaks, "max_peaks": None, "inclusive": True}
    return _finish({**settings, "fast_mode": fast}, rule_settings, overrides, source)


# ----------------------------------------------------------------------------------------------


def load_finder_config(
    path: str | Path | None, *, overrides: Mapping[str, Any] | None = None
) -> tuple[Peakfinder8Params, HitRule]:
    """Parameters and hit rule from an OM YAML (``.yaml``/``.yml``) or Cheetah ini (``.ini``) file.

    With ``path=None``: our defaults (CrystFEL's) and the default :class:`HitRule`, then overrides.

    Raises:
        ConfigError: unknown file type or any error of the loaders.
    """
    if path is None:
        return apply_overrides(Peakfinder8Params(), HitRule(), overrides)
    suffix = Path(path).suffix.lower()
    if suffix in {".yaml", ".yml"}:
        return load_om_yaml(path, overrides=overrides)
    if suffix == ".ini":
        return load_cheetah_ini(path, overrides=overrides)
    raise ConfigError(f"{path}: unknown configuration type (expected OM .yaml or Cheetah .ini)")


def load_bad_pixel_map(filename: str | Path, hdf5_path: str) -> NDArray[np.bool_]:
    """A bad-pixel map from HDF5 (OM convention: nonzero = use); returns bool, True = good pixel.

    Raises:
        InputError: missing file or dataset, or a dataset that is not 2-D.
    """
    import h5py

    try:
        with h5py.File(filename, "r") as handle:
            if hdf5_path not in handle:
                raise InputError(f"{filename}: no dataset {hdf5_path} for the bad-pixel map")
            data = np.asarray(handle[hdf5_path][()])
    except OSError as exc:
        raise InputError(f"{filename}: cannot read bad-pixel map ({exc})") from None
    if data.ndim != 2:
        raise InputError(f"{filename}:{hdf5_path}: bad-pixel map must be 2-D, got shape {data.shape}")
    return cast("NDArray[np.bool_]", data != 0)


# ----------------------------------------------------------------------------------------------
# Gain-aware defaults

#: peakfinder8's ADC threshold of the gain-aware defaults, in photons above the pedestal (CrystFEL's
#: 800 ADU is about 25 photons of a CSPAD, and 800 photons of a photon counter).
PHOTON_ADC_THRESHOLD = 10.0
#: The hit rule of the gain-aware defaults of every classical method: at least this many peaks.
PHOTON_MIN_PEAKS = 5


def photon_defaults(adu_per_photon: float) -> tuple[Peakfinder8Params, HitRule]:
    """CrystFEL's peakfinder8 defaults with the ADC threshold set in photons (:data:`PHOTON_ADC_THRESHOLD`
    times ``adu_per_photon``, for frames with the pedestal subtracted) and hit iff ``n >=``
    :data:`PHOTON_MIN_PEAKS`.

    Raises:
        ConfigError: ``adu_per_photon`` is not positive.
    """
    if not adu_per_photon > 0:
        raise ConfigError(f"ADU per photon must be positive, got {adu_per_photon}")
    return Peakfinder8Params(adc_threshold=PHOTON_ADC_THRESHOLD * adu_per_photon), HitRule(min_peaks=PHOTON_MIN_PEAKS)


def config_adu_per_photon(path: str | os.PathLike[str]) -> float | None:
    """The detector gain an OM YAML (``cnn_hit_detection: adu_per_photon``) or Cheetah ini
    (``cnnADUperPhoton``) states, or None.

    Raises:
        ConfigError: unreadable file or a value that is not a positive number.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".ini":
        value: Any = read_cheetah_ini(path).get("cnnaduperphoton")
    else:
        import yaml

        try:
            document = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc})") from None
        group = document.get("cnn_hit_detection") if isinstance(document, Mapping) else None
        value = group.get("adu_per_photon") if isinstance(group, Mapping) else None
    if value is None or value == "":
        return None
    gain = to_float("adu_per_photon", value, str(path))
    if not gain > 0:
        raise ConfigError(f"{path}: adu_per_photon must be positive, got {value!r}")
    return gain
