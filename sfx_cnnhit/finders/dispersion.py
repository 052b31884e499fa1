"""DIALS-style spot finding in numpy: the ``dispersion`` and ``dispersion_extended`` thresholds.

The per-pixel criteria are those of DIALS 3.12 (``dials/algorithms/image/threshold/local.h``,
classes ``DispersionThreshold`` and ``DispersionExtendedThreshold``), evaluated with the same
double-precision summed-area tables and the same order of floating-point operations, so that the
strong-pixel masks agree bit for bit with real DIALS. Spots are then formed as DIALS does for stills:
4-connected components of strong pixels (``PixelListLabeller.labels_2d``), kept if
``min_spot_size <= n_pixels <= max_spot_size`` and if the brightest pixel lies within
``max_separation`` pixels of the intensity-weighted centroid. Each detector panel is thresholded and
labelled on its own, as DIALS does with multi-panel detectors.

DIALS assumes Poisson statistics: frames must be pedestal-subtracted, and ``gain`` must be the
detector's ADU per photon (leave it None for photon-counting data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.finders.base import HitRule, PeakCountingHitFinder, check_options, detector_mask, finder_params
from sfx_cnnhit.finders.config import to_float, to_int
from sfx_cnnhit.types import PEAK_FIELDS, PeakList

ALGORITHMS = ("dispersion", "dispersion_extended")

# DIALS leaves pixels >= 2**24 out of its summed-area tables (but still thresholds them).
BIG = float(1 << 24)

# Extra half-width of the kernel in dispersion_extended's final step (local.h: kernel_size + 2).
EXTENDED_KERNEL_GROWTH = 2


@dataclass(frozen=True)
class DialsParams:
    """DIALS spot-finding parameters, under DIALS's own names, with DIALS 3.12's defaults.

    Attributes:
        gain: ADU per photon (``spotfinder.threshold.dispersion.gain``); None = 1 and DIALS's
            gain-free formulas.
        sigma_background: ``n_b`` of the index-of-dispersion test.
        sigma_strong: ``n_s`` of the pixel-above-local-mean test.
        kernel_size: ``(ny, nx)`` half-sizes of the local box, which is ``(2 ny + 1) x (2 nx + 1)``.
        min_local: fewest valid pixels under the kernel for a pixel to be tested; <= 0 means all of
            them (an always-background border around the frame and masked pixels).
        global_threshold: pixels at or below this value (ADU) are background.
        min_spot_size, max_spot_size: pixels per spot (``spotfinder.filter.*``; DIALS's ``Auto``
            gives 3 for pixel-array detectors, the default here).
        max_separation: largest distance (pixels) between a spot's brightest pixel and its
            centroid (``spotfinder.filter.max_separation``); None disables the filter.
        d_min, d_max: resolution limits (Å); pixels with ``d <= d_min`` or ``d >= d_max`` are masked.
        algorithm: ``"dispersion"`` or ``"dispersion_extended"`` (DIALS's default since 2019).
    """

    gain: float | None = None
    sigma_background: float = 6.0
    sigma_strong: float = 3.0
    kernel_size: tuple[int, int] = (3, 3)
    min_local: int = 2
    global_threshold: float = 0.0
    min_spot_size: int = 3
    max_spot_size: int = 1000
    max_separation: float | None = 2.0
    d_min: float | None = None
    d_max: float | None = None
    algorithm: str = "dispersion_extended"

    def __post_init__(self) -> None:
        try:
            kernel = tuple(int(k) for k in self.kernel_size)
        except (TypeError, ValueError):
            kernel = ()
        if len(kernel) != 2 or min(kernel) < 1:
            raise ConfigError(f"DIALS kernel_size must be two half-sizes >= 1, got {self.kernel_size!r}")
        object.__setattr__(self, "kernel_size", kernel)
        if self.gain is not None and not self.gain > 0:
            raise ConfigError(f"DIALS gain must be positive (ADU per photon), got {self.gain}")
        if not (self.sigma_background >= 0 and self.sigma_strong >= 0):
            raise ConfigError("DIALS sigma_background and sigma_strong must be >= 0")
        n_kernel = (2 * kernel[0] + 1) * (2 * kernel[1] + 1)
        if self.min_local > 0 and not 1 < self.min_local <= n_kernel:
            raise ConfigError(f"DIALS min_local must be <= 0 or in 2..{n_kernel}, got {self.min_local}")
        if not self.global_threshold >= 0:
            raise ConfigError(f"DIALS global_threshold must be >= 0, got {self.global_threshold}")
        if self.min_spot_size < 1 or self.max_spot_size <= self.min_spot_size:
            raise ConfigError(
                f"DIALS needs 1 <= min_spot_size < max_spot_size, got {self.min_spot_size}, {self.max_spot_size}"
            )
        if self.max_separation is not None and not self.max_separation >= 0:
            raise ConfigError(f"DIALS max_separation must be >= 0, got {self.max_separation}")
        for name in ("d_min", "d_max"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"DIALS {name} must be positive (Å), got {value}")
        if self.d_min is not None and self.d_max is not None and self.d_min >= self.d_max:
            raise ConfigError(f"DIALS d_min ({self.d_min} Å) must be below d_max ({self.d_max} Å)")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"DIALS algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, source: str) -> DialsParams:
        """Parameters from ``{field name: value}`` (strings of the command line or YAML scalars); the
        other fields keep DIALS's defaults. ``none``/``null``/empty means None where a field allows it;
        ``kernel_size`` is ``"3,3"`` or a pair.

        Raises:
            ConfigError: unknown field or invalid value (the message starts with ``source``).
        """
        converted = {name: _dials_value(name, value, source) for name, value in values.items()}
        try:
            return cls().with_overrides(**converted)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @property
    def min_count(self) -> int:
        """The effective ``min_local``: all kernel pixels when ``min_local <= 0``."""
        ky, kx = self.kernel_size
        return self.min_local if self.min_local > 0 else (2 * ky + 1) * (2 * kx + 1)

    def with_overrides(self, **overrides: Any) -> DialsParams:
        """A copy with some parameters changed (unknown names raise :class:`ConfigError`)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown DIALS parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a plain JSON-able dict."""
        return {**dataclasses.asdict(self), "kernel_size": list(self.kernel_size)}


_OPTIONAL_FIELDS = {"gain", "max_separation", "d_min", "d_max"}
_INT_FIELDS = {"min_local", "min_spot_size", "max_spot_size"}
_FLOAT_FIELDS = {"sigma_background", "sigma_strong", "global_threshold", *_OPTIONAL_FIELDS}


def _dials_value(name: str, value: Any, source: str) -> Any:
    """A :class:`DialsParams` field's value from text or a YAML scalar (unknown names pass unchanged,
    for :meth:`DialsParams.with_overrides` to name)."""
    if name in _OPTIONAL_FIELDS and (value is None or str(value).strip().lower() in ("", "none", "null")):
        return None
    if name in _FLOAT_FIELDS:
        return to_float(name, value, source)
    if name in _INT_FIELDS:
        return to_int(name, value, source)
    if name == "kernel_size":
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, Sequence):
            raise ConfigError(f"{source}: invalid value {value!r} for kernel_size (expected two integers such as 3,3)")
        return tuple(to_int(name, part, source) for part in parts)
    return value.strip() if isinstance(value, str) else value


# Ke et al. (2018) counted a frame as a hit with >= 14 (LN83) or >= 29 (LN84) DIALS spots; the lower
# one is the default.
DEFAULT_HIT_RULE = HitRule(min_peaks=14)

# The seed paper's Table 6 (Nawaz et al. 2023, after Ke et al. 2018): gain (ADU/photon), global
# threshold 200 ADU, sigma_strong 3, minimum spot area 3 pixels. DIALS's default algorithm at the
# time (before 2019) was "dispersion".
PRESETS: dict[str, tuple[DialsParams, HitRule]] = {
    name: (
        DialsParams(gain=gain, global_threshold=200.0, sigma_strong=3.0, min_spot_size=3, algorithm="dispersion"),
        HitRule(min_peaks=n_spots),
    )
    for name, gain, n_spots in (("ke2018_ln83", 0.27, 14), ("ke2018_ln84", 0.31, 29))
}


def dials_preset(name: str) -> tuple[DialsParams, HitRule]:
    """Parameters and hit rule of a named preset (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown DIALS preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def _box_sums(planes: list[NDArray[np.generic]], half_ss: int, half_fs: int) -> NDArray[np.float64]:
    """Sum over each pixel's ``(2 half_ss + 1) x (2 half_fs + 1)`` box, clipped at the frame edges.

    Args:
        planes: ``k`` images ``(ss, fs)`` summed independently (as float64).

    Returns:
        ``(ss, k, fs)`` box sums, computed as DIALS does: summed-area tables built row by row (running
        sum along the row, plus the row above), and corners combined as ``(d00 - (d10 + d01)) + d11``.
        The tables are interleaved by row, so each step of the row loop touches one contiguous block,
        and sit in a frame of repeated edges, so the clipped corners are plain slices.
    """
    n_ss, n_fs = planes[0].shape
    top, left = half_ss + 1, half_fs + 1
    ext = np.zeros((n_ss + 2 * half_ss + 1, len(planes), n_fs + 2 * half_fs + 1))
    core = ext[top : top + n_ss, :, left : left + n_fs]
    for i, plane in enumerate(planes):
        core[:, i] = plane
    np.cumsum(core, axis=2, out=core)
    for row in range(top, top + n_ss):  # a loop over rows: numpy's cumsum along ss is far slower
        np.add(ext[row - 1], ext[row], out=ext[row])
    ext[:, :, left + n_fs :] = ext[:, :, left + n_fs - 1 : left + n_fs]
    ext[top + n_ss :] = ext[top + n_ss - 1]
    lo_ss, hi_ss = slice(0, n_ss), slice(2 * half_ss + 1, 2 * half_ss + 1 + n_ss)
    lo_fs, hi_fs = slice(0, n_fs), slice(2 * half_fs + 1, 2 * half_fs + 1 + n_fs)
    out = ext[hi_ss, :, lo_fs] + ext[lo_ss, :, hi_fs]
    np.subtract(ext[lo_ss, :, lo_fs], out, out=out)
    out += ext[hi_ss, :, hi_fs]
    return out


def _local_sums(
    values: NDArray[np.float64], use: NDArray[np.bool_], kernel: tuple[int, int], squares: bool
) -> list[NDArray[np.float64]]:
    """Box count ``m``, sum ``x`` and, if ``squares``, sum of squares ``y`` of the ``use`` pixels.

    Pixels at or above DIALS's BIG (2**24) are left out. Returns 2 or 3 ``(ss, fs)`` arrays.
    """
    use = use & (values < BIG)
    weighted = np.where(use, values, 0.0)
    planes = [use, weighted] + ([weighted * weighted] if squares else [])
    sums = _box_sums(planes, *kernel)
    return [sums[:, i] for i in range(len(planes))]


def _dispersion_test(
    m: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64], params: DialsParams
) -> NDArray[np.bool_]:
    """DIALS's index-of-dispersion test ``a > c`` (where ``m >= 2``; the caller checks ``min_local``)."""
    with np.errstate(invalid="ignore"):
        root = np.sqrt(2 * (m - 1))
        if params.gain is None:
            return (m * y - x * x - x * (m - 1)) > x * params.sigma_background * root
        return (m * y - x * x) > params.gain * x * (m - 1 + params.sigma_background * root)


def strong_pixels(
    data: NDArray[np.floating], mask: NDArray[np.bool_], params: DialsParams
) -> NDArray[np.bool_]:
    """DIALS's strong-pixel mask of one panel, before connected components.

    Args:
        data: ``(ss, fs)`` pedestal-subtracted frame (ADU).
        mask: ``(ss, fs)`` bool, True = good pixel.
        params: thresholds; ``params.algorithm`` picks ``dispersion`` or ``dispersion_extended``.

    Returns:
        ``(ss, fs)`` bool, True = strong pixel.
    """
    v = np.asarray(data, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    kernel = params.kernel_size
    m, x, y = _local_sums(v, mask, kernel, squares=True)
    tested = mask & (m >= params.min_count) & (x >= 0)
    dispersed = tested & _dispersion_test(m, x, y, params)
    gain = 1.0 if params.gain is None else params.gain  # 1.0 * x is x: DIALS's gain-free formula
    if params.algorithm == "dispersion":
        with np.errstate(invalid="ignore"):
            above_mean = m * v - x > params.sigma_strong * np.sqrt(gain * x * m)
        return dispersed & (v > params.global_threshold) & above_mean

    # dispersion_extended: keep the dispersed pixels at least min(kernel) pixels (Chebyshev) from any
    # other pixel (masked and untested pixels included), call everything else background, and compare
    # each pixel with the mean background of a kernel grown by EXTENDED_KERNEL_GROWTH.
    width = 2 * min(kernel) - 1
    core = ndimage.minimum_filter(dispersed, size=width, mode="constant", cval=True)
    grown = (kernel[0] + EXTENDED_KERNEL_GROWTH, kernel[1] + EXTENDED_KERNEL_GROWTH)
    m_bg, x_bg = _local_sums(v, mask & ~core, grown, squares=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_bg = np.where(m_bg >= 2, x_bg / m_bg, 0.0)
        above_bg = v >= mean_bg + params.sigma_strong * np.sqrt(gain * mean_bg)
    return cast("NDArray[np.bool_]", mask & (x_bg >= 0) & core & (v > params.global_threshold) & above_bg)


def spot_snr(intensity: NDArray[np.floating], gain: float | None) -> NDArray[np.float32]:
    """Signal-to-noise ratio of strong spots: ``I / sqrt(gain * I) = sqrt(I / gain)`` (0 where I <= 0).

    DIALS gives a spot-finding spot ``intensity.sum.value`` = I (the sum of its pixels, no background
    subtracted) and ``intensity.sum.variance`` = I, i.e. Poisson counts; with ``gain`` ADU per photon
    the Poisson variance in ADU² is ``gain * I``. With ``gain=None`` this is DIALS's own
    ``value / sqrt(variance)``.
    """
    photons = np.maximum(np.asarray(intensity, dtype=np.float64), 0.0) / (1.0 if gain is None else gain)
    return np.sqrt(photons).astype(np.float32)


def spots_from_strong(
    data: NDArray[np.floating], strong: NDArray[np.bool_], params: DialsParams
) -> dict[str, NDArray[np.float64]]:
    """Spots of one panel from its strong pixels, as DIALS forms them for stills.

    4-connected components, the size filter, value-weighted centroids (pixel centre at an integer:
    DIALS ``xyzobs.px`` minus 0.5), the peak-centroid separation filter.

    Returns:
        ``fs, ss, intensity, num_pixels, max_pixel_intensity`` arrays (float64), one entry per spot,
        in DIALS's order (by the first pixel of each spot in row-major order).
    """
    labels, n_labels = ndimage.label(strong)
    flat = np.flatnonzero(labels)
    lab = labels.ravel()[flat] - 1
    value = np.asarray(data, dtype=np.float64).ravel()[flat]
    ss, fs = np.divmod(flat, strong.shape[1])
    npix = np.bincount(lab, minlength=n_labels)
    total = np.bincount(lab, weights=value, minlength=n_labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        cen_fs = np.bincount(lab, weights=value * fs, minlength=n_labels) / total
        cen_ss = np.bincount(lab, weights=value * ss, minlength=n_labels) / total
    # The peak is the first brightest pixel in row-major order, as DIALS's max_index over the shoebox.
    order = np.lexsort((flat, -value, lab))
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]] if flat.size else order
    keep = (npix >= params.min_spot_size) & (npix <= params.max_spot_size)
    if params.max_separation is not None:
        keep &= np.hypot(fs[first] - cen_fs, ss[first] - cen_ss) <= params.max_separation
    return {
        "fs": cen_fs[keep],
        "ss": cen_ss[keep],
        "intensity": cast("NDArray[np.float64]", total[keep]),  # bincount with weights: float64
        "num_pixels": npix[keep].astype(np.float64),
        "max_pixel_intensity": value[first][keep],
    }


class DialsFinderBase(PeakCountingHitFinder):
    """What the built-in and the real-DIALS finders share: parameters, masks, panels, resolution.

    Args:
        params: DIALS parameters (default :class:`DialsParams`).
        mask: static ``(ss, fs)`` bool mask, True = good pixel, applied to every frame.
        geometry: detector geometry; its panels are thresholded separately (as DIALS does), its bad
            regions and edge masks are masked, and it gives the resolution map for ``d_min``/``d_max``.
            None = the frame is one panel.
        resolution_map: ``(ss, fs)`` resolution (Å) of every pixel; overrides the geometry's.
        photon_energy_ev: photon energy for the geometry's resolution map when the geometry holds none.
        hit_rule: ``n_spots >= N`` rule (default :data:`DEFAULT_HIT_RULE`).
    """

    #: the run-time options :meth:`for_detector` passes to the constructor
    OPTIONS: ClassVar[tuple[str, ...]] = ("hit_rule",)

    def __init__(
        self,
        params: DialsParams | None = None,
        *,
        mask: NDArray[np.bool_] | None = None,
        geometry: DetectorGeometry | None = None,
        resolution_map: NDArray[np.floating] | None = None,
        photon_energy_ev: float | None = None,
        hit_rule: HitRule | None = None,
    ) -> None:
        self.params = params if params is not None else DialsParams()
        self.hit_rule = hit_rule if hit_rule is not None else DEFAULT_HIT_RULE
        self.geometry = geometry
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        if geometry is not None:
            allowed = geometry.good_pixel_mask()
            if self.mask is not None and self.mask.shape != allowed.shape:
                raise InputError(f"mask shape {self.mask.shape} does not match the geometry's {allowed.shape}")
            self.mask = allowed if self.mask is None else self.mask & allowed
        if resolution_map is None and geometry is not None and self._needs_resolution:
            resolution_map = geometry.resolution_map(photon_energy_ev)
        if resolution_map is None and self._needs_resolution:
            raise ConfigError("DIALS d_min/d_max need a resolution map: give geometry= or resolution_map=")
        self.resolution_map = None if resolution_map is None else np.asarray(resolution_map, dtype=np.float64)

    @classmethod
    def for_detector(
        cls,
        params: DialsParams | Mapping[str, Any] | None = None,
        *,
        detector: DetectorGeometry,
        mask: NDArray[np.bool_] | None = None,
        **options: Any,
    ) -> DialsFinderBase:
        """The uniform factory (:func:`~sfx_cnnhit.finders.base.create_finder`): ``cls(params, mask=mask,
        geometry=detector)``, ``params`` a :class:`DialsParams` or a mapping of its field values, ``mask``
        True = good ``(ss, fs)``; options: :attr:`OPTIONS`.

        Raises:
            ConfigError: unknown parameter or option, or an invalid value.
        """
        check_options(cls.name, options, cls.OPTIONS)
        params = finder_params(cls.name, DialsParams, params)
        return cls(params, mask=detector_mask(cls.name, mask, detector), geometry=detector, **options)

    @property
    def _needs_resolution(self) -> bool:
        return self.params.d_min is not None or self.params.d_max is not None

    def panel_slices(self, shape: tuple[int, ...]) -> list[tuple[slice, slice]]:
        """``(ss, fs)`` slices of the panels DIALS thresholds separately."""
        if self.geometry is None:
            return [(slice(0, shape[0]), slice(0, shape[1]))]
        if tuple(shape) != self.geometry.slab_shape:
            raise InputError(f"frame shape {tuple(shape)} does not match the geometry's {self.geometry.slab_shape}")
        return [p.slab_slices() for p in self.geometry.panels]

    def pixel_mask(self, data: NDArray[np.floating], frame_mask: NDArray[np.bool_] | None) -> NDArray[np.bool_]:
        """Good pixels of one frame: finite, in the static, per-frame and resolution masks."""
        if data.ndim != 2:
            raise InputError(f"a frame must be 2-D (ss, fs), got shape {data.shape}")
        good = np.isfinite(data)
        for name, extra in (("mask", self.mask), ("frame mask", frame_mask), ("resolution map", self.resolution_map)):
            if extra is not None and extra.shape != data.shape:
                raise InputError(f"{name} shape {extra.shape} does not match the frame shape {data.shape}")
        if self.mask is not None:
            good &= self.mask
        if frame_mask is not None:
            good &= np.asarray(frame_mask, dtype=bool)
        if self.resolution_map is not None:
            d = self.resolution_map
            if self.params.d_min is not None:
                good &= ~(d <= self.params.d_min)
            if self.params.d_max is not None:
                good &= ~(d >= self.params.d_max)
        return cast("NDArray[np.bool_]", good)

    def peak_list(self, spots: dict[str, NDArray[np.float64]]) -> PeakList:
        """A :class:`PeakList` from spot arrays (``snr`` from :func:`spot_snr`)."""
        fields: dict[str, Any] = {k: spots[k] for k in PEAK_FIELDS if k != "snr"}  # PeakList makes them float32
        return PeakList(**fields, snr=spot_snr(spots["intensity"], self.params.gain))


class DispersionSpotFinder(DialsFinderBase):
    """Built-in DIALS ``dispersion``/``dispersion_extended`` spot finder (no DIALS needed).

    Score = number of spots; hit = :attr:`hit_rule`. Peaks: ``fs``/``ss`` centroids (pixel centre at an
    integer), ``intensity`` = sum of the spot's pixel values (ADU, no background subtracted, DIALS's
    ``intensity.sum.value``), ``num_pixels``, ``max_pixel_intensity`` (ADU), ``snr`` from
    :func:`spot_snr`.
    """

    name: ClassVar[str] = "dispersion"

    def strong_pixels(
        self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
    ) -> NDArray[np.bool_]:
        """Strong-pixel masks before labelling, each panel thresholded on its own.

        Args:
            data: one ``(ss, fs)`` frame or a ``(n, ss, fs)`` batch.
            mask: matching per-frame mask(s), True = good, on top of the finder's own.

        Returns:
            bool, the shape of ``data``.
        """
        data = np.asarray(data)
        if data.ndim == 3:
            return np.stack([self.strong_pixels(f, None if mask is None else mask[i]) for i, f in enumerate(data)])
        good = self.pixel_mask(data, mask)
        strong = np.zeros(data.shape, dtype=bool)
        for panel in self.panel_slices(data.shape):
            strong[panel] = strong_pixels(data[panel], good[panel], self.params)
        return strong

    def find_peaks_masked(self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None) -> PeakList:
        data = np.asarray(data)
        strong = self.strong_pixels(data, mask)
        parts = []
        for ss_slice, fs_slice in self.panel_slices(data.shape):
            spots = spots_from_strong(data[ss_slice, fs_slice], strong[ss_slice, fs_slice], self.params)
            spots["fs"] = spots["fs"] + fs_slice.start
            spots["ss"] = spots["ss"] + ss_slice.start
            parts.append(spots)
        return self.peak_list({key: np.concatenate([p[key] for p in parts]) for key in parts[0]})
