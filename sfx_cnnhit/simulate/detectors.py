"""Detector layouts as :class:`~sfx_cnnhit.detector.DetectorGeometry` objects, with response presets.

Each layout places the panels of a raw slab in the lab frame (beam along +z through the lab origin),
using each detector's real slab layout and approximate lab positions. Response values (gain, read
noise, saturation, point spread) are typical, order-of-magnitude figures; all are overridable through
:class:`~sfx_cnnhit.simulate.config.DetectorConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry, Panel
from sfx_cnnhit.errors import ConfigError


@dataclass(frozen=True)
class DetectorModel:
    """A detector layout and its response.

    Attributes:
        name: layout name.
        geometry: panels in the slab and the lab frame (``clen`` set).
        gap_value: value written to slab pixels no panel covers (Pilatus/Eiger files hold -1 there).
        adu_per_ev: gain of an integrating detector (ADU per eV deposited); None for photon counting
            (1 ADU per photon).
        read_noise_photons: read-noise sigma in photons at 9.5 keV equivalents (0 when counting).
        pedestal_adu: residual offset after dark subtraction (ADU).
        max_adu: saturation value (ADU).
        psf_px: point-spread sigma (pixels).
        masked_pixels: ``(ss, fs)`` bool, True where the layout itself marks pixels bad inside panels
            (Eiger chip borders); None if none.
        description: one line for the docs.
    """

    name: str
    geometry: DetectorGeometry
    gap_value: float
    adu_per_ev: float | None
    read_noise_photons: float
    pedestal_adu: float
    max_adu: float
    psf_px: float
    masked_pixels: NDArray[np.bool_] | None
    description: str

    def gain_at(self, photon_energy_ev: float) -> float:
        """ADU per photon at ``photon_energy_ev``."""
        return 1.0 if self.adu_per_ev is None else self.adu_per_ev * photon_energy_ev


def _panel(
    name: str,
    slab_fs: int,
    slab_ss: int,
    width: int,
    height: int,
    corner: tuple[float, float],
    fs_dir: tuple[float, float],
    ss_dir: tuple[float, float],
    pixel_size_m: float,
    clen_m: float,
) -> Panel:
    return Panel(
        name=name,
        min_fs=slab_fs,
        max_fs=slab_fs + width - 1,
        min_ss=slab_ss,
        max_ss=slab_ss + height - 1,
        corner_x=float(corner[0]),
        corner_y=float(corner[1]),
        fs_vec=(float(fs_dir[0]), float(fs_dir[1]), 0.0),
        ss_vec=(float(ss_dir[0]), float(ss_dir[1]), 0.0),
        res=1.0 / pixel_size_m,
        clen=clen_m,
    )


def _rot90(v: tuple[float, float], quarter_turns: int) -> tuple[float, float]:
    x, y = v
    for _ in range(quarter_turns % 4):
        x, y = -y, x
    return (x, y)


def _rect_corner(
    lo: tuple[float, float], size: tuple[float, float], fs_dir: tuple[float, float], ss_dir: tuple[float, float]
) -> tuple[float, float]:
    """Corner (pixel 0,0 outer corner) of an axis-aligned footprint ``lo + [0, size]`` for given axes."""
    x = lo[0] + (size[0] if fs_dir[0] < 0 or ss_dir[0] < 0 else 0.0)
    y = lo[1] + (size[1] if fs_dir[1] < 0 or ss_dir[1] < 0 else 0.0)
    return (x, y)


def _grid_with_gaps(
    n_cols: int,
    n_rows: int,
    module: tuple[int, int],
    gaps: tuple[int, int],
    pixel_size_m: float,
    clen_m: float,
    prefix: str,
) -> tuple[list[Panel], tuple[int, int]]:
    """Modules of ``(width, height)`` pixels in a flat grid whose slab includes the gaps (Pilatus/Eiger)."""
    width, height = module
    gap_fs, gap_ss = gaps
    n_fs = n_cols * width + (n_cols - 1) * gap_fs
    n_ss = n_rows * height + (n_rows - 1) * gap_ss
    bc_fs, bc_ss = n_fs / 2.0, n_ss / 2.0
    panels = []
    for row in range(n_rows):
        for col in range(n_cols):
            fs0, ss0 = col * (width + gap_fs), row * (height + gap_ss)
            corner = (fs0 - bc_fs, ss0 - bc_ss)
            panels.append(
                _panel(f"{prefix}{row}m{col}", fs0, ss0, width, height, corner, (1, 0), (0, 1), pixel_size_m, clen_m)
            )
    return panels, (n_ss, n_fs)


def _square(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    n = size or 512
    geom = DetectorGeometry.simple(
        (n, n), pixel_size_m=pixel_size_m, clen_m=clen_m, beam_center=(n / 2.0 - 0.5, n / 2.0 - 0.5)
    )
    return list(geom.panels), None


def _rayonix(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    return _square(size or 1920, pixel_size_m, clen_m)


def _cspad(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    """CrystFEL's CSPAD slab (ss 1480, fs 1552): 4 quadrants x 8 two-by-one sensors x 2 ASICs of 194x185.

    In the slab, quadrant ``q`` holds fs columns ``388q..388q+387`` and sensor ``s`` ss rows
    ``185s..185s+184``. In the lab each quadrant is four 2x2 sections of sensors in a pinwheel, rotated
    by ``q`` quarter turns around the beam; the two ASICs of a sensor are 3 pixels apart (the row of
    wide pixels between them).
    """
    asic_w, asic_h, asic_gap, pitch, hole = 194, 185, 3, 420.0, 18.0
    long_len = 2 * asic_w + asic_gap
    # Section origins in the quadrant frame and whether its sensors lie along x (True) or y.
    sections = (((0.0, 0.0), True), ((pitch, 0.0), False), ((pitch, pitch), True), ((0.0, pitch), False))
    panels = []
    for q in range(4):
        for s in range(8):
            (sx, sy), along_x = sections[s // 2]
            slot = s % 2
            offset_long = (pitch - long_len) / 2.0
            offset_short = 15.0 + slot * (asic_h + 20.0)
            step: tuple[float, float]
            if along_x:
                lo = (hole + sx + offset_long, hole + sy + offset_short)
                fs_dir, ss_dir, step = (1.0, 0.0), (0.0, 1.0), (asic_w + asic_gap, 0.0)
                size_xy = (asic_w, asic_h)
            else:
                lo = (hole + sx + offset_short, hole + sy + offset_long)
                fs_dir, ss_dir, step = (0.0, 1.0), (-1.0, 0.0), (0.0, asic_w + asic_gap)
                size_xy = (asic_h, asic_w)
            for a in range(2):
                lo_a = (lo[0] + a * step[0], lo[1] + a * step[1])
                corner = _rect_corner(lo_a, size_xy, fs_dir, ss_dir)
                panels.append(
                    _panel(
                        f"q{q}a{2 * s + a}",
                        388 * q + asic_w * a,
                        asic_h * s,
                        asic_w,
                        asic_h,
                        _rot90(corner, q),
                        _rot90(fs_dir, q),
                        _rot90(ss_dir, q),
                        pixel_size_m,
                        clen_m,
                    )
                )
    return panels, None


def _epix10k2m(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    """ePix10k-2M: 16 modules of 2x2 ASICs (176x192 each) stacked in the slab (ss 5632, fs 384).

    In the lab, four quadrants of 2x2 modules, rotated by quarter turns around the beam; ASICs of one
    module are 4 pixels apart.
    """
    asic_h, asic_w, asic_gap, module_gap, hole = 176, 192, 4.0, 24.0, 20.0
    mod_w, mod_h = 2 * asic_w + asic_gap, 2 * asic_h + asic_gap
    panels = []
    for m in range(16):
        q, k = divmod(m, 4)
        mx, my = k % 2, k // 2
        origin = (hole + mx * (mod_w + module_gap), hole + my * (mod_h + module_gap))
        for a in range(4):
            ay, ax = divmod(a, 2)
            lo = (origin[0] + ax * (asic_w + asic_gap), origin[1] + ay * (asic_h + asic_gap))
            panels.append(
                _panel(
                    f"p{m}a{a}",
                    ax * asic_w,
                    m * 2 * asic_h + ay * asic_h,
                    asic_w,
                    asic_h,
                    _rot90(lo, q),
                    _rot90((1.0, 0.0), q),
                    _rot90((0.0, 1.0), q),
                    pixel_size_m,
                    clen_m,
                )
            )
    return panels, None


def _agipd1m(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    """AGIPD-1M: 16 modules of 8 ASICs (64 ss x 128 fs each) stacked in the slab (ss 8192, fs 128).

    As in European XFEL's CrystFEL files, each ASIC's fs runs along -y and ss along +x; a module's
    ASICs sit 2 pixels apart along x; four modules (158-pixel pitch) make a quadrant; the quadrants
    surround the beam with a small central hole.
    """
    asic_ss, asic_fs, asic_gap, mod_pitch, hole = 64, 128, 2.0, 158.0, 20.0
    mod_len = 8 * asic_ss + 7 * asic_gap
    panels = []
    for m in range(16):
        q, k = divmod(m, 4)
        left, top = q in (0, 3), q in (0, 1)
        x0 = -hole - mod_len if left else hole
        y_top = (hole + asic_fs + (3 - k) * mod_pitch) if top else (-hole - k * mod_pitch)
        for a in range(8):
            corner = (x0 + a * (asic_ss + asic_gap), y_top)
            panels.append(
                _panel(
                    f"p{m}a{a}",
                    0,
                    m * 8 * asic_ss + a * asic_ss,
                    asic_fs,
                    asic_ss,
                    corner,
                    (0, -1),
                    (1, 0),
                    pixel_size_m,
                    clen_m,
                )
            )
    return panels, None


_PILATUS_MODELS = {1: (2, 5), 2: (3, 8), 6: (5, 12)}
_EIGER_MODELS = {1: (1, 2), 4: (2, 4), 9: (3, 6), 16: (4, 8)}


def _nearest_model(
    models: dict[int, tuple[int, int]], size: int | None, default: int, module_w: int, gap: int
) -> tuple[int, int]:
    if size is None:
        return models[default]
    widths = {key: cols * module_w + (cols - 1) * gap for key, (cols, _) in models.items()}
    best = min(widths, key=lambda key: abs(widths[key] - size))
    return models[best]


def _pilatus(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    """Pilatus 1M/2M/6M: modules of 487x195 pixels, 7-pixel gaps along fs and 17 along ss in the slab."""
    cols, rows = _nearest_model(_PILATUS_MODELS, size, 6, 487, 7)
    panels, _ = _grid_with_gaps(cols, rows, (487, 195), (7, 17), pixel_size_m, clen_m, "r")
    return panels, None


def _eiger(size: int | None, pixel_size_m: float, clen_m: float) -> tuple[list[Panel], NDArray[np.bool_] | None]:
    """Eiger 1M/4M/9M/16M: modules of 1030x514 pixels (2x4 chips of 256x256 with 2-pixel chip borders).

    Gaps between modules are 10 pixels along fs and 37 along ss; the doubled pixels at chip borders are
    flagged in the mask, as Dectris' pixel mask does.
    """
    cols, rows = _nearest_model(_EIGER_MODELS, size, 4, 1030, 10)
    panels, shape = _grid_with_gaps(cols, rows, (1030, 514), (10, 37), pixel_size_m, clen_m, "r")
    masked = np.zeros(shape, bool)
    for p in panels:
        ss_sl, fs_sl = p.slab_slices()
        block = masked[ss_sl, fs_sl]
        for i in (1, 2, 3):
            block[:, i * 258 - 2 : i * 258] = True
        block[256:258, :] = True
    return panels, masked


@dataclass(frozen=True)
class _Preset:
    builder: Callable[[int | None, float, float], tuple[list[Panel], NDArray[np.bool_] | None]]
    pixel_size_m: float
    clen_m: float
    gap_value: float
    adu_per_ev: float | None
    read_noise_photons: float
    pedestal_adu: float
    max_adu: float
    psf_px: float
    resizable: bool
    description: str


PRESETS: dict[str, _Preset] = {
    "square512": _Preset(
        _square,
        172e-6,
        0.075,
        0.0,
        1.0 / 9500.0,
        3.0,
        40.0,
        65535.0,
        0.5,
        True,
        "512x512 single panel like DiffraNet (nanoBragg-style: 1 ADU/photon, 3 ADU read noise, offset 40)",
    ),
    "cspad": _Preset(
        _cspad,
        110e-6,
        0.10,
        0.0,
        0.00338,
        0.15,
        0.0,
        14000.0,
        0.5,
        False,
        "CSPAD 2.3 Mpx: 64 ASICs of 194x185 in CrystFEL's 1480x1552 slab",
    ),
    "epix10k2m": _Preset(
        _epix10k2m,
        100e-6,
        0.10,
        0.0,
        0.0068,
        0.08,
        0.0,
        15000.0,
        0.4,
        False,
        "ePix10k-2M: 16 modules of 4 ASICs 176x192 (slab 5632x384)",
    ),
    "agipd1m": _Preset(
        _agipd1m,
        200e-6,
        0.15,
        0.0,
        0.0075,
        0.1,
        0.0,
        1.0e6,
        0.3,
        False,
        "AGIPD-1M: 16 modules of 8 ASICs 64x128 (slab 8192x128)",
    ),
    "pilatus6m": _Preset(
        _pilatus,
        172e-6,
        0.20,
        -1.0,
        None,
        0.0,
        0.0,
        1048575.0,
        0.3,
        True,
        "Pilatus 1M/2M/6M photon counter, modules 487x195, gaps hold -1",
    ),
    "eiger": _Preset(
        _eiger,
        75e-6,
        0.12,
        -1.0,
        None,
        0.0,
        0.0,
        65535.0,
        0.3,
        True,
        "Eiger 1M/4M/9M/16M photon counter, modules 1030x514, gaps hold -1",
    ),
    "rayonix": _Preset(
        _rayonix,
        177e-6,
        0.12,
        0.0,
        1.0 / 8000.0,
        1.5,
        10.0,
        65535.0,
        1.0,
        True,
        "Rayonix MX340-HS CCD (single panel, 4x4 binned by default, pixel 340 mm / size)",
    ),
}
DETECTORS = tuple(PRESETS)


def build_detector(
    name: str,
    *,
    size: int | None = None,
    clen_m: float | None = None,
    pixel_size_m: float | None = None,
    photon_energy_ev: float = 9500.0,
    beam_offset_px: tuple[float, float] = (0.0, 0.0),
) -> DetectorModel:
    """Build a detector layout.

    Args:
        name: one of :data:`DETECTORS`.
        size: square side (``square512``, ``rayonix``) or the nearest model width of a module family
            (``pilatus6m``, ``eiger``); fixed layouts reject it.
        clen_m: sample-detector distance (m); default the preset's.
        pixel_size_m: pixel pitch (m); default the preset's (Rayonix: 340 mm / size).
        photon_energy_ev: stored in the geometry.
        beam_offset_px: ``(x, y)`` shift of the beam from the nominal centre (pixels).

    Raises:
        ConfigError: for an unknown name or a size on a fixed layout.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    preset = PRESETS[name]
    if size is not None and not preset.resizable:
        resizable = ", ".join(k for k, p in PRESETS.items() if p.resizable)
        raise ConfigError(f"detector {name} has a fixed layout; a size applies to {resizable}")
    if pixel_size_m is None:
        pixel_size_m = 0.340 / size if (name == "rayonix" and size) else preset.pixel_size_m
    clen = preset.clen_m if clen_m is None else float(clen_m)
    panels, masked = preset.builder(size, pixel_size_m, clen)
    dx, dy = beam_offset_px
    if dx or dy:
        panels = [replace(p, corner_x=p.corner_x - dx, corner_y=p.corner_y - dy) for p in panels]
    max_adu = preset.max_adu
    for i, p in enumerate(panels):
        panels[i] = replace(
            p,
            adu_per_photon=1.0 if preset.adu_per_ev is None else preset.adu_per_ev * photon_energy_ev,
            max_adu=max_adu,
        )
    geometry = DetectorGeometry(panels=tuple(panels), photon_energy_ev=float(photon_energy_ev))
    return DetectorModel(
        name=name,
        geometry=geometry,
        gap_value=preset.gap_value,
        adu_per_ev=preset.adu_per_ev,
        read_noise_photons=preset.read_noise_photons,
        pedestal_adu=preset.pedestal_adu,
        max_adu=max_adu,
        psf_px=preset.psf_px,
        masked_pixels=masked,
        description=preset.description,
    )


def corner_resolution_limit(model: DetectorModel, clen_m: float, wavelength_a: float) -> float:
    """Highest resolution ``d`` (Å) any pixel of ``model`` reaches at ``clen_m`` and ``wavelength_a``."""
    r_max = 0.0
    for p in model.geometry.panels:
        for fs in (0, p.width):
            for ss in (0, p.height):
                x = p.corner_x + fs * p.fs_vec[0] + ss * p.ss_vec[0]
                y = p.corner_y + fs * p.fs_vec[1] + ss * p.ss_vec[1]
                r_max = max(r_max, math.hypot(x, y) / p.res)
    two_theta = math.atan2(r_max, clen_m)
    return wavelength_a / (2.0 * math.sin(two_theta / 2.0))
