"""Detector geometry in CrystFEL's terms: panels of a raw "slab" placed in the lab frame.

A panel covers the inclusive slab rectangle ``min_fs..max_fs`` x ``min_ss..max_ss``. Its pixel
``(fs, ss)`` (panel-relative, pixel corner at integers) sits at lab position, in pixels,
``corner + fs * fs_vec + ss * ss_vec``; the beam hits the lab origin. ``res`` is pixels per metre,
``clen`` the camera length in metres (or an HDF5 path holding it) and ``coffset`` a per-panel offset
added to it. The pixel *centre* of slab pixel ``(fs, ss)`` is therefore at ``fs + 0.5, ss + 0.5``
in panel-relative pixel coordinates, the same convention CrystFEL uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError

Vector = tuple[float, float, float]

HC_EV_ANGSTROM = 12398.419843320026  # h*c in eV*Angstrom


def wavelength_angstrom(photon_energy_ev: float) -> float:
    """X-ray wavelength (Å) for a photon energy (eV)."""
    return HC_EV_ANGSTROM / photon_energy_ev


def median_adu_per_photon(panels: Iterable[Any]) -> float | None:
    """The detector's gain: the median ``adu_per_photon`` of the panels that give one, else None."""
    gains = [p.adu_per_photon for p in panels if getattr(p, "adu_per_photon", None)]
    return float(np.median(gains)) if gains else None


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
        from sfx_cnnhit.io.crystfel_geom import parse_length

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
        first = self.panels[0]
        nx, ny = first.width, first.height
        ss_total, fs_total = self.slab_shape
        if any(p.width != nx or p.height != ny for p in self.panels) or fs_total % nx or ss_total % ny:
            raise ConfigError("panels do not form a regular grid of equal ASICs in the slab")
        nasics_x, nasics_y = fs_total // nx, ss_total // ny
        origins = {(p.min_fs, p.min_ss) for p in self.panels}
        expected = {(i * nx, j * ny) for i in range(nasics_x) for j in range(nasics_y)}
        if origins != expected:
            raise ConfigError("panels do not form a regular grid of equal ASICs in the slab")
        return {"asic_nx": nx, "asic_ny": ny, "nasics_x": nasics_x, "nasics_y": nasics_y}

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
    def from_text(cls, text: str, *, source: str = "<geometry>") -> DetectorGeometry:
        """Parse CrystFEL geometry text (see :mod:`sfx_cnnhit.io.crystfel_geom` for what is supported).

        Raises:
            ConfigError: with ``source`` and the line number of the first problem.
        """
        from sfx_cnnhit.io.crystfel_geom import parse_geometry

        return parse_geometry(text, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DetectorGeometry:
        """Read a CrystFEL ``.geom`` file."""
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read geometry file ({err.strerror or err})") from None
        return cls.from_text(text, source=str(path))

    def to_text(
        self,
        *,
        data_path: str | None = None,
        stacked: bool = True,
        peak_list: str | None = "/entry_1/result_1",
        photon_energy: float | str | None = None,
        clen: float | str | None = None,
        mask_path: str | None = None,
        mask_file: str | None = None,
    ) -> str:
        """CrystFEL geometry text; see :func:`sfx_cnnhit.io.crystfel_geom.format_geometry` for the arguments.

        The default describes a reduced CXI file: ``data = <data_path>``, ``dim0 = %``, ``dim1 = ss``,
        ``dim2 = fs``, ``peak_list = /entry_1/result_1``, ``peak_list_type = cxi``.
        """
        from sfx_cnnhit.io.crystfel_geom import format_geometry

        return format_geometry(
            self,
            data_path=data_path,
            stacked=stacked,
            peak_list=peak_list,
            photon_energy=photon_energy,
            clen=clen,
            mask_path=mask_path,
            mask_file=mask_file,
        )

    def write(
        self, path: str | os.PathLike[str], *, protect: tuple[str | os.PathLike[str], ...] = (), **to_text_args: object
    ) -> Path:
        """Write :meth:`to_text` to ``path`` atomically (never onto an input file)."""
        from sfx_cnnhit.io.atomic import write_text_atomic

        return write_text_atomic(path, self.to_text(**to_text_args), protect=protect)  # type: ignore[arg-type]

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
