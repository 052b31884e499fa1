"""The detector model: panels of a raw "slab" placed in the lab frame, in CrystFEL's terms, and the
panel layout the finders cut frames into. No file I/O here (CrystFEL ``.geom`` text and files:
:mod:`sfx_cnnhit.io.crystfel_geom`, :mod:`sfx_cnnhit.io.geometry`).

A panel covers the inclusive slab rectangle ``min_fs..max_fs`` x ``min_ss..max_ss``. Its pixel
``(fs, ss)`` (panel-relative, pixel corner at integers) sits at lab position, in pixels,
``corner + fs * fs_vec + ss * ss_vec``; the beam hits the lab origin. ``res`` is pixels per metre,
``clen`` the camera length in metres (or an HDF5 path holding it) and ``coffset`` a per-panel offset
added to it. The pixel *centre* of slab pixel ``(fs, ss)`` is therefore at ``fs + 0.5, ss + 0.5``
in panel-relative pixel coordinates, the same convention CrystFEL uses.

Values that may be per frame (photon energy, ``clen``, detector shift) are kept as written: a number,
or an HDF5 path with an optional unit (:func:`split_value`, :func:`parse_length`,
:func:`parse_photon_energy` read them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError, InputError

Vector = tuple[float, float, float]
#: a panel's ``(ss_start, ss_stop, fs_start, fs_stop)`` in slab pixels, stop exclusive
Rectangle = tuple[int, int, int, int]

HC_EV_ANGSTROM = 12398.419843320026  # h*c in eV*Angstrom
_NUMBER_UNIT = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)")
_LAYOUT_KEYS = ("asic_nx", "asic_ny", "nasics_x", "nasics_y")


def wavelength_angstrom(photon_energy_ev: float) -> float:
    """X-ray wavelength (Å) for a photon energy (eV)."""
    return HC_EV_ANGSTROM / photon_energy_ev


def median_adu_per_photon(panels: Iterable[Any]) -> float | None:
    """The detector's gain: the median ``adu_per_photon`` of the panels that give one, else None."""
    gains = [p.adu_per_photon for p in panels if getattr(p, "adu_per_photon", None)]
    return float(np.median(gains)) if gains else None


def split_value(spec: str) -> tuple[float | None, str | None, str | None]:
    """Split a CrystFEL value into ``(number, hdf5_path, unit)``: ``4570eV``, ``95.3 mm``, ``/a/b m``.

    Exactly one of ``number`` and ``hdf5_path`` is not None; ``unit`` is None when none is given.
    """
    text = spec.strip()
    if text.startswith("/"):
        parts = text.split()
        if len(parts) > 2:
            raise ValueError(f"invalid value {spec!r}: an HDF5 path and at most one unit")
        return None, parts[0], parts[1] if len(parts) == 2 else None
    m = _NUMBER_UNIT.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid value {spec!r}: neither a number (with an optional unit) nor an HDF5 path")
    return float(m.group(1)), None, m.group(2) or None


def parse_length(spec: str) -> tuple[float | None, str | None, float]:
    """Split a CrystFEL length (``clen``, ``detector_shift_x``) into ``(value_m, hdf5_path, scale_to_m)``.

    Units ``m`` or ``mm``; a number without units is metres, an HDF5 path without units millimetres
    (CrystFEL's historical rule). Exactly one of ``value_m`` and ``hdf5_path`` is not None.
    """
    value, path, unit = split_value(spec)
    if unit not in (None, "m", "mm"):
        raise ValueError(f"invalid length unit {unit!r} in {spec!r} (use m or mm)")
    scale = 1e-3 if unit == "mm" or (unit is None and path is not None) else 1.0
    return (None if value is None else value * scale), path, scale


def parse_photon_energy(spec: str) -> tuple[float | None, str | None, float]:
    """Split ``photon_energy`` into ``(value_ev, hdf5_path, scale_to_ev)`` (units eV, the default, or keV)."""
    value, path, unit = split_value(spec)
    if unit not in (None, "eV", "keV"):
        raise ValueError(f"invalid photon energy unit {unit!r} in {spec!r} (use eV or keV)")
    scale = 1e3 if unit == "keV" else 1.0
    return (None if value is None else value * scale), path, scale


@dataclass(frozen=True)
class Panel:
    """One panel (ASIC or module) of a detector, as a CrystFEL geometry file describes it.

    ``clen`` is metres or a per-frame HDF5 path as written (``/path``: mm, ``/path m``: m).
    ``adu_per_photon`` is the gain (ADU/photon); a geometry giving ``adu_per_eV`` (kept in
    ``adu_per_ev``, ADU/eV, and written back) sets it to ``adu_per_eV`` x photon energy, or leaves it
    None until :meth:`DetectorGeometry.with_photon_energy` when the energy is a per-frame path.
    """

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    corner_y: float
    fs_vec: Vector = (1.0, 0.0, 0.0)
    ss_vec: Vector = (0.0, 1.0, 0.0)
    res: float = 1.0 / 75e-6
    clen: float | str = 0.1
    coffset: float = 0.0
    adu_per_photon: float | None = None
    max_adu: float | None = None
    data: str | None = None
    dim_structure: tuple[str, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    adu_per_ev: float | None = None

    def __post_init__(self) -> None:
        if self.max_fs < self.min_fs or self.max_ss < self.min_ss:
            raise ConfigError(f"panel {self.name}: max_fs/max_ss must not be below min_fs/min_ss")
        if self.res <= 0:
            raise ConfigError(f"panel {self.name}: res must be positive (pixels per metre)")

    @property
    def width(self) -> int:
        """Pixels along fs."""
        return self.max_fs - self.min_fs + 1

    @property
    def height(self) -> int:
        """Pixels along ss."""
        return self.max_ss - self.min_ss + 1

    @property
    def pixel_size_m(self) -> float:
        return 1.0 / self.res

    def slab_slices(self) -> tuple[slice, slice]:
        """``(ss, fs)`` slices of this panel in the slab."""
        return slice(self.min_ss, self.max_ss + 1), slice(self.min_fs, self.max_fs + 1)


@dataclass(frozen=True)
class BadRegion:
    """A rectangle of the slab to ignore (CrystFEL ``badN/min_fs`` ... form, in slab pixels)."""

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    panel: str | None = None


@dataclass(frozen=True)
class BadRegionXY:
    """A lab-frame rectangle to ignore (CrystFEL ``badN/min_x`` ... form, in pixels from the beam).

    A pixel is bad when its corner-indexed lab position ``corner + fs*fs_vec + ss*ss_vec`` (integer
    ``fs, ss``, as CrystFEL evaluates it) lies strictly inside the rectangle; ``panel`` limits it to one.
    """

    name: str
    min_x: float
    max_x: float
    min_y: float
    max_y: float
    panel: str | None = None


@dataclass(frozen=True)
class DetectorGeometry:
    """A detector: panels of one slab, photon energy and where masks come from.

    Attributes:
        panels: the panels; together they define the slab shape.
        photon_energy_ev: photon energy in eV, or an HDF5 path holding it, or None if unknown.
        bad_regions: slab rectangles to mask.
        bad_regions_xy: lab-frame rectangles to mask.
        mask_path, mask_file: where a per-pixel mask lives (CrystFEL ``mask``/``mask_file``).
        mask_good, mask_bad: CrystFEL good/bad bits (None = Cheetah's convention, 0 = good).
        data_path: the HDF5 path of the frames (CrystFEL ``data``), with ``%`` for the event.
        detector_shift_x, detector_shift_y: CrystFEL's detector shift as written: a length (``0.5 mm``;
            m without a unit) applied to every pixel position, or a per-frame HDF5 path (``/path m``;
            mm without a unit) that is kept and written back but not applied: positions are nominal.
    """

    panels: tuple[Panel, ...]
    photon_energy_ev: float | str | None = None
    bad_regions: tuple[BadRegion, ...] = ()
    mask_path: str | None = None
    mask_file: str | None = None
    mask_good: int | None = None
    mask_bad: int | None = None
    data_path: str = "/entry_1/data_1/data"
    bad_regions_xy: tuple[BadRegionXY, ...] = ()
    detector_shift_x: str | None = None
    detector_shift_y: str | None = None

    def __post_init__(self) -> None:
        if not self.panels:
            raise ConfigError("detector geometry has no panels")
        names = [p.name for p in self.panels]
        if len(set(names)) != len(names):
            raise ConfigError("detector geometry has duplicate panel names")

    def detector_shift_m(self) -> tuple[float, float]:
        """The constant ``(x, y)`` detector shift in metres; per-frame (HDF5 path) shifts count as 0."""

        def metres(spec: str | None) -> float:
            return (parse_length(spec)[0] or 0.0) if spec is not None else 0.0

        return metres(self.detector_shift_x), metres(self.detector_shift_y)

    def with_photon_energy(self, photon_energy_ev: float) -> DetectorGeometry:
        """This geometry with the gain of ``adu_per_eV`` panels resolved for ``photon_energy_ev`` (eV).

        Only panels whose ``adu_per_photon`` is still unknown (the geometry's photon energy is a
        per-frame path) change; frame readers pass the first frame's energy, as the gain is one value.
        """
        panels = tuple(
            replace(p, adu_per_photon=p.adu_per_ev * photon_energy_ev)
            if p.adu_per_photon is None and p.adu_per_ev is not None
            else p
            for p in self.panels
        )
        return replace(self, panels=panels)

    @property
    def slab_shape(self) -> tuple[int, int]:
        """``(ss, fs)`` shape of the raw slab holding every panel."""
        return (max(p.max_ss for p in self.panels) + 1, max(p.max_fs for p in self.panels) + 1)

    def pixel_positions(self) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Lab ``x, y`` (pixels) of every slab pixel centre and its distance ``z`` (metres).

        Returns three ``(ss, fs)`` float32 arrays; pixels no panel covers are NaN. A constant detector
        shift moves every panel (:meth:`detector_shift_m`); a per-frame one is not applied.
        """
        shift_x, shift_y = self.detector_shift_m()
        shape = self.slab_shape
        x = np.full(shape, np.nan, np.float32)
        y = np.full(shape, np.nan, np.float32)
        z = np.full(shape, np.nan, np.float32)
        for p in self.panels:
            ss_rel, fs_rel = np.mgrid[0 : p.height, 0 : p.width].astype(np.float64) + 0.5
            sl = p.slab_slices()
            x[sl] = p.corner_x + shift_x * p.res + fs_rel * p.fs_vec[0] + ss_rel * p.ss_vec[0]
            y[sl] = p.corner_y + shift_y * p.res + fs_rel * p.fs_vec[1] + ss_rel * p.ss_vec[1]
            clen = p.clen if isinstance(p.clen, float | int) else np.nan
            z[sl] = clen + p.coffset + (fs_rel * p.fs_vec[2] + ss_rel * p.ss_vec[2]) / p.res
        return x, y, z

    def radius_map(self) -> NDArray[np.float32]:
        """Distance of every slab pixel centre from the beam, in pixels, ``(ss, fs)`` float32.

        Pixels outside every panel get a radius of -1 (they are masked anyway).
        """
        x, y, _ = self.pixel_positions()
        r = np.hypot(x, y)
        return np.where(np.isfinite(r), r, -1.0).astype(np.float32)

    def resolution_map(self, photon_energy_ev: float | None = None) -> NDArray[np.float32]:
        """Resolution ``d`` (Å) of every slab pixel, ``(ss, fs)`` float32 (inf at the beam centre)."""
        energy = photon_energy_ev if photon_energy_ev is not None else self.photon_energy_ev
        if not isinstance(energy, float | int):
            raise ConfigError("a numeric photon energy is needed for a resolution map")
        x, y, z = self.pixel_positions()
        res = np.empty_like(x)
        for p in self.panels:
            sl = p.slab_slices()
            res[sl] = p.res
        r_m = np.hypot(x, y) / res
        two_theta = np.arctan2(r_m, z)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = wavelength_angstrom(float(energy)) / (2.0 * np.sin(two_theta / 2.0))
        return d.astype(np.float32)

    def layout_info(self) -> dict[str, int]:
        """OM's ``layout_info`` (``asic_nx, asic_ny, nasics_x, nasics_y``) for a regular ASIC grid.

        Raises:
            ConfigError: if the panels do not tile the slab as a regular grid of equal ASICs.
        """
        return PanelLayout(_rectangles(self.panels)).layout_info()

    def panel_index_map(self) -> NDArray[np.int32]:
        """``(ss, fs)`` int32 index into :attr:`panels` of every slab pixel (-1 where none)."""
        idx = np.full(self.slab_shape, -1, np.int32)
        for i, p in enumerate(self.panels):
            idx[p.slab_slices()] = i
        return idx

    def good_pixel_mask(self, shape: tuple[int, int] | None = None) -> NDArray[np.bool_]:
        """Pixels the geometry itself allows, ``(ss, fs)`` bool, True = good.

        Bad: pixels no panel covers (and everything outside the slab when ``shape`` is larger),
        panels with ``no_index``, ``mask_edge_pixels`` borders, and the bad regions.
        """
        slab = self.slab_shape
        shape = shape or slab
        if shape[0] < slab[0] or shape[1] < slab[1]:
            raise ConfigError(f"the geometry's slab {slab} does not fit in frames of shape {shape}")
        good = np.zeros(shape, bool)
        for p in self.panels:
            if p.extra.get("no_index", "0").strip().lower() in ("1", "true"):
                continue
            edge = int(p.extra.get("mask_edge_pixels", "0"))
            sl = p.slab_slices()
            good[sl] = True
            if edge > 0:
                panel = good[sl]
                panel[:edge] = panel[-edge:] = False
                panel[:, :edge] = panel[:, -edge:] = False
        for r in self.bad_regions:
            good[r.min_ss : r.max_ss + 1, r.min_fs : r.max_fs + 1] = False
        for rxy in self.bad_regions_xy:
            for p in self.panels:
                if rxy.panel is not None and rxy.panel != p.name:
                    continue
                ss, fs = np.mgrid[0 : p.height, 0 : p.width].astype(np.float64)
                x = p.corner_x + fs * p.fs_vec[0] + ss * p.ss_vec[0]
                y = p.corner_y + fs * p.fs_vec[1] + ss * p.ss_vec[1]
                inside = (x > rxy.min_x) & (x < rxy.max_x) & (y > rxy.min_y) & (y < rxy.max_y)
                good[p.slab_slices()] &= ~inside
        return good

    @classmethod
    def simple(
        cls,
        slab_shape: tuple[int, int],
        *,
        asic_shape: tuple[int, int] | None = None,
        beam_center: tuple[float, float] | None = None,
        pixel_size_m: float = 172e-6,
        clen_m: float = 0.1,
        photon_energy_ev: float | None = 9500.0,
        data_path: str = "/entry_1/data_1/data",
        adu_per_photon: float | None = None,
        max_adu: float | None = None,
    ) -> DetectorGeometry:
        """A flat detector whose slab is the image itself, cut into a regular grid of ASICs.

        Args:
            slab_shape: ``(ss, fs)`` of the frame.
            asic_shape: ``(asic_ny, asic_nx)``; default one ASIC covering the frame.
            beam_center: ``(fs, ss)`` of the beam in slab pixels (pixel centre = integer); default the
                frame centre.
            pixel_size_m, clen_m, photon_energy_ev: experiment geometry.
        """
        n_ss, n_fs = slab_shape
        asic_ny, asic_nx = asic_shape or slab_shape
        if n_ss % asic_ny or n_fs % asic_nx:
            raise ConfigError(f"ASIC shape {asic_shape} does not tile the frame {slab_shape}")
        bc_fs, bc_ss = beam_center if beam_center is not None else ((n_fs - 1) / 2.0, (n_ss - 1) / 2.0)
        panels = []
        for j in range(n_ss // asic_ny):
            for i in range(n_fs // asic_nx):
                min_fs, min_ss = i * asic_nx, j * asic_ny
                panels.append(
                    Panel(
                        name=f"p{j}a{i}" if asic_shape else "p0",
                        min_fs=min_fs,
                        max_fs=min_fs + asic_nx - 1,
                        min_ss=min_ss,
                        max_ss=min_ss + asic_ny - 1,
                        corner_x=min_fs - bc_fs - 0.5,
                        corner_y=min_ss - bc_ss - 0.5,
                        res=1.0 / pixel_size_m,
                        clen=clen_m,
                        adu_per_photon=adu_per_photon,
                        max_adu=max_adu,
                    )
                )
        return cls(panels=tuple(panels), photon_energy_ev=photon_energy_ev, data_path=data_path)


def _rectangles(panels: Iterable[Any]) -> tuple[Rectangle, ...]:
    """The slab rectangles of panels with CrystFEL's inclusive ``min_ss, max_ss, min_fs, max_fs``."""
    return tuple((p.min_ss, p.max_ss + 1, p.min_fs, p.max_fs + 1) for p in panels)


@dataclass(frozen=True)
class PanelLayout:
    """How a slab is cut into panels: the CNN's tiling and peakfinder8's ASIC grid (OM's ``layout_info``).

    Attributes:
        panels: one ``(ss_start, ss_stop, fs_start, fs_stop)`` rectangle per panel, in slab pixels
            (stop exclusive, unlike CrystFEL's inclusive ``max_ss``/``max_fs``).
        grid: ``(rows, cols)`` of the CNN's tiling; None chooses the grid that needs the least binning.
        adu_per_photon: the detector's gain (ADU per photon), the noise floor of the CNN's
            normalisation; None: ``PreprocessConfig.adu_per_photon``.
    """

    panels: tuple[Rectangle, ...]
    grid: tuple[int, int] | None = None
    adu_per_photon: float | None = None

    def __post_init__(self) -> None:
        panels = tuple(tuple(int(v) for v in p) for p in self.panels)
        object.__setattr__(self, "panels", panels)
        if not panels:
            raise ConfigError("panel layout: no panels")
        for p in panels:
            if len(p) != 4 or p[0] < 0 or p[2] < 0 or p[1] <= p[0] or p[3] <= p[2]:
                raise ConfigError(f"panel layout: invalid panel rectangle {p}")
        if self.grid is not None and self.grid[0] * self.grid[1] < len(panels):
            raise ConfigError(f"panel layout: grid {self.grid} has fewer cells than {len(panels)} panels")
        if self.adu_per_photon is not None and not (math.isfinite(self.adu_per_photon) and self.adu_per_photon > 0):
            raise ConfigError(f"panel layout: adu_per_photon must be a positive number, got {self.adu_per_photon}")

    @classmethod
    def regular(
        cls, n_ss: int, n_fs: int, panel_ss: int, panel_fs: int, adu_per_photon: float | None = None
    ) -> PanelLayout:
        """``n_ss x n_fs`` equal panels of ``panel_ss x panel_fs`` pixels filling the slab, row-major."""
        return cls(
            tuple(
                (i * panel_ss, (i + 1) * panel_ss, j * panel_fs, (j + 1) * panel_fs)
                for i in range(n_ss)
                for j in range(n_fs)
            ),
            adu_per_photon=adu_per_photon,
        )

    @classmethod
    def asic_grid(
        cls, asic_nx: int, asic_ny: int, nasics_x: int = 1, nasics_y: int = 1, adu_per_photon: float | None = None
    ) -> PanelLayout:
        """A regular grid of ``nasics_y x nasics_x`` ASICs of ``asic_ny x asic_nx`` pixels (OM's
        ``layout_info``), row-major; ASICs must be at least 3x3 pixels (peakfinder8 never seeds a peak
        on an ASIC's border)."""
        values = {"asic_nx": asic_nx, "asic_ny": asic_ny, "nasics_x": nasics_x, "nasics_y": nasics_y}
        for name, value in values.items():
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"detector layout: {name} must be a positive integer, got {value!r}")
        if asic_nx < 3 or asic_ny < 3:
            raise ConfigError(f"detector layout: ASICs of {asic_ny}x{asic_nx} pixels are too small")
        return cls.regular(nasics_y, nasics_x, asic_ny, asic_nx, adu_per_photon)

    @classmethod
    def single(cls, slab_shape: tuple[int, int]) -> PanelLayout:
        """One ASIC covering the whole ``(ss, fs)`` slab."""
        return cls.asic_grid(asic_nx=int(slab_shape[1]), asic_ny=int(slab_shape[0]))

    @classmethod
    def from_asic_shape(cls, slab_shape: tuple[int, int], asic_shape: tuple[int, int]) -> PanelLayout:
        """A ``(ss, fs)`` slab cut into ASICs of ``(asic_ny, asic_nx)`` pixels."""
        (n_ss, n_fs), (a_ss, a_fs) = slab_shape, asic_shape
        if a_ss < 1 or a_fs < 1 or n_ss % a_ss or n_fs % a_fs:
            raise ConfigError(f"ASICs of {asic_shape} do not tile a slab of {slab_shape}")
        return cls.asic_grid(asic_nx=int(a_fs), asic_ny=int(a_ss), nasics_x=n_fs // a_fs, nasics_y=n_ss // a_ss)

    @classmethod
    def from_layout_info(
        cls, layout_info: Mapping[str, Any] | PanelLayout, adu_per_photon: float | None = None
    ) -> PanelLayout:
        """The ASIC grid of OM's ``layout_info`` dict (``asic_nx, asic_ny, nasics_x, nasics_y``), or of a
        layout whose panels form one, with the gain ``adu_per_photon`` (ADU per photon).

        Raises:
            ConfigError: a key is missing, a value is invalid or the layout is not a regular ASIC grid.
        """
        info = layout_info.layout_info() if isinstance(layout_info, PanelLayout) else layout_info
        try:
            values = {k: info[k] for k in _LAYOUT_KEYS}
        except KeyError as exc:
            raise ConfigError(f"layout_info: missing {exc.args[0]!r}") from None
        return cls.asic_grid(**values, adu_per_photon=adu_per_photon)

    @classmethod
    def from_geometry(cls, geometry: Any) -> PanelLayout:
        """The panels and gain of a detector geometry (e.g. :class:`DetectorGeometry`).

        ``geometry.panels`` must have CrystFEL's inclusive ``min_ss, max_ss, min_fs, max_fs``; the
        gain is the median of the panels' ``adu_per_photon`` (None when no panel gives one).
        """
        return cls(_rectangles(geometry.panels), adu_per_photon=median_adu_per_photon(geometry.panels))

    @property
    def slab_shape(self) -> tuple[int, int]:
        """``(ss, fs)`` shape of the smallest slab holding every panel."""
        return max(p[1] for p in self.panels), max(p[3] for p in self.panels)

    def layout_info(self) -> dict[str, int]:
        """OM's ``layout_info`` (``asic_nx, asic_ny, nasics_x, nasics_y``) of a regular ASIC grid.

        Raises:
            ConfigError: if the panels do not tile the slab as a regular grid of equal ASICs.
        """
        return dict(self._grid)

    @cached_property
    def _grid(self) -> dict[str, int]:
        """:meth:`layout_info`, worked out once (peakfinder8 reads it for every frame)."""
        ss0, ss1, fs0, fs1 = self.panels[0]
        ny, nx = ss1 - ss0, fs1 - fs0
        ss_total, fs_total = self.slab_shape
        if any(p[1] - p[0] != ny or p[3] - p[2] != nx for p in self.panels) or fs_total % nx or ss_total % ny:
            raise ConfigError("panels do not form a regular grid of equal ASICs in the slab")
        nasics_x, nasics_y = fs_total // nx, ss_total // ny
        origins = {(p[2], p[0]) for p in self.panels}
        expected = {(i * nx, j * ny) for i in range(nasics_x) for j in range(nasics_y)}
        if origins != expected:
            raise ConfigError("panels do not form a regular grid of equal ASICs in the slab")
        return {"asic_nx": nx, "asic_ny": ny, "nasics_x": nasics_x, "nasics_y": nasics_y}

    @property
    def asic_nx(self) -> int:
        """ASIC width in pixels (along fs) of a regular ASIC grid (:meth:`layout_info`)."""
        return self._grid["asic_nx"]

    @property
    def asic_ny(self) -> int:
        """ASIC height in pixels (along ss) of a regular ASIC grid (:meth:`layout_info`)."""
        return self._grid["asic_ny"]

    @property
    def nasics_x(self) -> int:
        """Number of ASICs along fs of a regular ASIC grid (:meth:`layout_info`)."""
        return self._grid["nasics_x"]

    @property
    def nasics_y(self) -> int:
        """Number of ASICs along ss of a regular ASIC grid (:meth:`layout_info`)."""
        return self._grid["nasics_y"]

    def check_frame(self, frame_shape: tuple[int, int]) -> None:
        """Raise :class:`InputError` if a panel lies outside frames of ``(ss, fs)`` shape ``frame_shape``."""
        for p in self.panels:
            if p[1] > frame_shape[0] or p[3] > frame_shape[1]:
                raise InputError(f"panel layout: panel {p} lies outside the {frame_shape} frame")
