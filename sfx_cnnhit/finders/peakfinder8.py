"""Our peakfinder8 (Cheetah/OM/CrystFEL's peak finder), exact to OM 23.8.3's compiled one.

Algorithm, per frame (``(ss, fs)`` slab of ``nasics_y x nasics_x`` ASICs of ``asic_ny x asic_nx``):

1. Radial bin of each pixel ``rint(r)``; pixels outside ``[min_res, max_res]``, masked or with no
   radius (negative / non-finite) are not used.
2. Five passes of sigma clipping per bin give the background ``offset`` and the threshold
   ``max(offset + minimum_snr * sigma, adc_threshold)``.
3. Pixels above their bin's threshold seed peaks, scanning ASIC by ASIC and never from an ASIC's
   border row or column; a peak grows over 8-connected above-threshold pixels of its ASIC.
4. Peaks with ``min_pixel_count <= npix <= max_pixel_count`` get a local background (mean, sigma and
   maximum of below-threshold pixels within ``2 * local_bg_radius`` of the first centroid), are
   re-integrated above it and kept if ``snr >= minimum_snr``, their brightest pixel reaches the
   brightest background pixel and the centroid lies inside the ASIC; at most ``max_num_peaks``.

Differences from OM's Python class: ``snr`` is the true ``intensity / local_sigma`` (OM 23.8.3 puts
the local sigma there); ``set_bad_pixel_map`` takes effect at once (OM's keeps a cached mask).
The kernels live in :mod:`sfx_cnnhit.finders._pf8_core`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry, PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.finders import _pf8_core as core
from sfx_cnnhit.finders.base import HitRule, PeakCountingHitFinder, check_options, detector_mask, finder_params
from sfx_cnnhit.finders.config import Peakfinder8Params, load_bad_pixel_map
from sfx_cnnhit.types import PeakList

FAST_MODE_SEED = 0  # the fast-mode pixel sample is drawn once per radius map with this seed
MAX_RADIUS_PX = 1e6  # larger radii are not distances in pixels (and would need that many bins)


def radius_map_from_beam_center(
    slab_shape: tuple[int, int], beam_center: tuple[float, float] | None = None
) -> NDArray[np.float32]:
    """Distance (pixels) of every pixel centre from the beam, for a flat detector whose slab is the image.

    Args:
        slab_shape: ``(ss, fs)`` of the frame.
        beam_center: ``(fs, ss)`` of the beam in slab pixels (pixel centre = integer); default the
            centre of the slab.

    Returns:
        float32 ``(ss, fs)`` radius map.
    """
    n_ss, n_fs = slab_shape
    bc_fs, bc_ss = beam_center if beam_center is not None else ((n_fs - 1) / 2.0, (n_ss - 1) / 2.0)
    fs = np.arange(n_fs, dtype=np.float64) - bc_fs
    ss = np.arange(n_ss, dtype=np.float64) - bc_ss
    return np.hypot(fs[None, :], ss[:, None]).astype(np.float32)


@dataclass(frozen=True)
class _Prepared:
    """Per-detector arrays computed once: radial bins, static usable map, statistics pixel order."""

    bins: NDArray[np.int32]  # (ss, fs) rint(r); 0 where the radius is invalid
    usable: NDArray[np.uint8]  # (ss, fs) 1 = usable (valid radius, good pixel, inside res limits)
    order: NDArray[np.int32]  # pixels entering the radial statistics, grouped by bin
    bin_starts: NDArray[np.int64]  # (n_bins + 1,)


def _prepare(
    radius: NDArray[np.float32], params: Peakfinder8Params, good: NDArray[np.bool_] | None
) -> _Prepared:
    """Radial bins, the usable map (radius valid, good pixel, within the resolution limits) and the
    pixels of the radial statistics (all usable ones, or the fast-mode sample), grouped by bin."""
    valid = np.isfinite(radius) & (radius >= 0)
    if valid.any() and float(radius[valid].max()) > MAX_RADIUS_PX:
        raise ConfigError(f"radius map reaches {float(radius[valid].max()):.3g}; expected distances in pixels")
    bins = np.where(valid, np.rint(np.where(valid, radius, 0)), 0).astype(np.int32)
    usable = valid & (radius >= params.min_res)
    if params.max_res is not None:
        usable &= radius <= params.max_res
    if good is not None:
        usable &= good
    flat_bins = bins.ravel()
    candidates = np.flatnonzero(usable.ravel())
    candidates = candidates[np.argsort(flat_bins[candidates], kind="stable")]
    counts = np.bincount(flat_bins[candidates], minlength=int(flat_bins.max()) + 1)
    if params.fast_mode:
        rng = np.random.default_rng(FAST_MODE_SEED)
        limit = params.number_of_pixel_per_bin_in_radial_statistics
        groups = np.split(candidates, np.cumsum(counts)[:-1])
        groups = [g if g.size <= limit else rng.choice(g, limit, replace=False) for g in groups]
        counts = np.array([g.size for g in groups], dtype=np.int64)
        candidates = np.concatenate(groups) if groups else candidates
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return _Prepared(bins=bins, usable=usable.astype(np.uint8), order=candidates.astype(np.int32),
                     bin_starts=starts)


def _prepared_key(params: Peakfinder8Params) -> tuple[Any, ...]:
    return (params.min_res, params.max_res, params.fast_mode,
            params.number_of_pixel_per_bin_in_radial_statistics)


class Peakfinder8Finder(PeakCountingHitFinder):
    """peakfinder8 as a :class:`~sfx_cnnhit.finders.base.HitFinder` (score = number of peaks).

    Args:
        params: algorithm parameters (default :class:`Peakfinder8Params`).
        radius_map: ``(ss, fs)`` distance of each pixel from the beam in pixels; negative or
            non-finite values mark pixels that belong to no panel (never used).
        layout: ASIC grid (a :class:`~sfx_cnnhit.detector.PanelLayout` whose panels form one, or OM's
            ``layout_info`` dict); default one ASIC.
        bad_pixel_map: ``(ss, fs)`` map, nonzero/True = good pixel (OM's 1 = use); default: the
            params' HDF5 bad-pixel map if named there, else every pixel is good.
        hit_rule: peak-count hit rule used by :meth:`classify`.

    Raises:
        ConfigError: inconsistent shapes or invalid parameters.
    """

    name: ClassVar[str] = "peakfinder8"

    def __init__(
        self,
        params: Peakfinder8Params | None = None,
        *,
        radius_map: NDArray[np.floating],
        layout: PanelLayout | Mapping[str, int] | None = None,
        bad_pixel_map: NDArray[Any] | None = None,
        hit_rule: HitRule | None = None,
    ) -> None:
        self._params = params if params is not None else Peakfinder8Params()
        radius = np.array(radius_map, dtype=np.float32, order="C")  # own copy, made read-only below
        if radius.ndim != 2:
            raise ConfigError(f"radius map must be 2-D (ss, fs), got shape {radius.shape}")
        self._layout = PanelLayout.single(radius.shape) if layout is None else PanelLayout.from_layout_info(layout)
        if self._layout.slab_shape != radius.shape:
            raise ConfigError(f"layout {self._layout.layout_info()} describes a {self._layout.slab_shape} slab, "
                              f"but the radius map is {radius.shape}")
        if bad_pixel_map is None and self._params.bad_pixel_map_filename is not None:
            bad_pixel_map = load_bad_pixel_map(
                self._params.bad_pixel_map_filename, str(self._params.bad_pixel_map_hdf5_path)
            )
        good = None
        if bad_pixel_map is not None:
            good = np.asarray(bad_pixel_map) != 0
            if good.shape != radius.shape:
                raise ConfigError(f"bad-pixel map shape {good.shape} differs from the radius map {radius.shape}")
        self._radius = radius
        self._radius.flags.writeable = False
        self._good = good
        self.hit_rule = hit_rule if hit_rule is not None else HitRule()
        self._prepared = _prepare(radius, self._params, good)

    @classmethod
    def from_geometry(
        cls,
        geometry: DetectorGeometry,
        params: Peakfinder8Params | None = None,
        hit_rule: HitRule | None = None,
        *,
        bad_pixel_map: NDArray[Any] | None = None,
    ) -> Peakfinder8Finder:
        """A finder for a CrystFEL geometry: its ASIC grid, or, when the panels do not tile the slab as a
        regular grid (Pilatus and Eiger modules with their gaps in one slab), the slab as one ASIC, as
        OM treats those detectors (gap pixels are masked)."""
        try:
            layout = geometry.layout_info()
        except ConfigError:
            layout = None  # one ASIC covering the radius map's slab
        return cls(params, radius_map=geometry.radius_map(), layout=layout, bad_pixel_map=bad_pixel_map,
                   hit_rule=hit_rule)

    @classmethod
    def for_detector(
        cls,
        params: Peakfinder8Params | Mapping[str, Any] | None = None,
        *,
        detector: DetectorGeometry,
        mask: NDArray[np.bool_] | None = None,
        **options: Any,
    ) -> Peakfinder8Finder:
        """The uniform factory (:func:`~sfx_cnnhit.finders.base.create_finder`): :meth:`from_geometry`
        of ``detector`` with ``params`` (or a mapping of their field values) and ``mask`` (True = good,
        ``(ss, fs)``) as the bad-pixel map; option: ``hit_rule``.

        Raises:
            ConfigError: unknown parameter or option, invalid value, or a mask of another shape.
        """
        check_options(cls.name, options, ("hit_rule",))
        params = finder_params(cls.name, Peakfinder8Params, params)
        return cls.from_geometry(detector, params, bad_pixel_map=detector_mask(cls.name, mask, detector), **options)

    @classmethod
    def from_beam_center(
        cls,
        slab_shape: tuple[int, int],
        params: Peakfinder8Params | None = None,
        hit_rule: HitRule | None = None,
        *,
        beam_center: tuple[float, float] | None = None,
        asic_shape: tuple[int, int] | None = None,
        bad_pixel_map: NDArray[Any] | None = None,
    ) -> Peakfinder8Finder:
        """A finder for a flat detector: beam ``(fs, ss)`` (default the slab centre), ASICs of
        ``(asic_ny, asic_nx)`` pixels (default one ASIC)."""
        layout = PanelLayout.from_asic_shape(slab_shape, asic_shape or slab_shape)
        return cls(params, radius_map=radius_map_from_beam_center(slab_shape, beam_center), layout=layout,
                   bad_pixel_map=bad_pixel_map, hit_rule=hit_rule)

    @property
    def params(self) -> Peakfinder8Params:
        return self._params

    @property
    def layout(self) -> PanelLayout:
        """The ASIC grid (no gain)."""
        return self._layout

    @property
    def radius_map(self) -> NDArray[np.float32]:
        """The ``(ss, fs)`` float32 radius map (read-only)."""
        return self._radius

    @property
    def radial_sample(self) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """Pixels used for the radial statistics as ``(flat pixel index, radial bin)`` int32 arrays,
        grouped by bin: OM's ``rstats_pidx`` / ``rstats_radius`` for its fast mode."""
        order = self._prepared.order
        return order, self._prepared.bins.ravel()[order]

    def with_params(self, params: Peakfinder8Params) -> Peakfinder8Finder:
        """The same detector with other parameters (re-using the prepared arrays when possible)."""
        other = copy.copy(self)
        other._params = params
        if _prepared_key(params) != _prepared_key(self._params):
            other._prepared = _prepare(self._radius, params, self._good)
        return other

    def _frame(
        self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None
    ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        """The frame as C-contiguous float32 and its usable map (finder's mask & ``mask``)."""
        frame = np.ascontiguousarray(data, dtype=np.float32)
        if frame.shape != self._radius.shape:
            raise InputError(f"peakfinder8: frame shape {frame.shape} differs from the detector's {self._radius.shape}")
        usable = self._prepared.usable
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != frame.shape:
                raise InputError(f"peakfinder8: mask shape {mask.shape} differs from the frame's {frame.shape}")
            usable = usable & (mask != 0)
        return frame, np.ascontiguousarray(usable, dtype=np.uint8)

    def _thresholds(
        self, frame: NDArray[np.float32], usable: NDArray[np.uint8], masked: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        p = self._params
        return core.radial_thresholds(frame.ravel(), usable.ravel(), self._prepared.order,
                                      self._prepared.bin_starts, np.float32(p.minimum_snr),
                                      np.float32(p.adc_threshold), masked)

    def radial_thresholds(
        self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Per radial bin ``rint(r)``: background offset and detection threshold (ADU), float32."""
        frame, usable = self._frame(data, mask)
        return self._thresholds(frame, usable, mask is not None)

    def find_peaks_masked(self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None) -> PeakList:
        """Peaks on one ``(ss, fs)`` frame; ``mask`` (True = good) adds to the finder's own mask."""
        frame, usable = self._frame(data, mask)
        offset, threshold = self._thresholds(frame, usable, mask is not None)
        p = self._params
        lay = self._layout
        table = core.search_peaks(
            frame, usable, self._prepared.bins, offset, threshold,
            lay.asic_nx, lay.asic_ny, lay.nasics_x, lay.nasics_y,
            p.min_pixel_count, p.max_pixel_count, p.local_bg_radius,
            np.float32(p.minimum_snr), p.max_num_peaks, p.om_stale_probe,
        )
        return PeakList(
            fs=table[:, core.COL_FS],
            ss=table[:, core.COL_SS],
            intensity=table[:, core.COL_INTENSITY],
            num_pixels=table[:, core.COL_NPIX],
            max_pixel_intensity=table[:, core.COL_MAX_I],
            snr=table[:, core.COL_SNR],
        )

