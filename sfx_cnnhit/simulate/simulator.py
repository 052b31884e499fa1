"""The frame simulator: draw a frame's parameters for a requested class, then render it.

Reproducibility: every frame has its own random stream, ``SeedSequence(seed, spawn_key=(split_id,
0, frame_index))``; detector instances use ``(split_id, 1, instance)`` and label sequences
``(split_id, 2, first_frame)``. ``train``, ``val`` and ``test`` have split ids 0, 1, 2 (other names a
32-bit hash plus 3), so the three splits never share a stream, a frame depends only on
``(seed, split, index, label)``, and frames can be made in any order or in parallel.

Classes: ``blank`` frames have no X-rays; ``no_crystal`` frames have X-rays on the sample carrier
only; hits hold one or more lattices. A hit's class is *measured*: ``n_spots`` counts reflections
whose expected signal reaches ``classes.spot_snr`` (see :class:`~sfx_cnnhit.simulate.config.ClassConfig`).
To make a frame of a requested hit class, the simulator draws every parameter from its prior and then
the crystal volume from its prior *conditioned* on the class: the volume interval that yields the
class is exact (``n_spots`` only grows with the volume), a crystal is accepted with the prior
probability of that interval and the volume is drawn inside it. This is rejection sampling from the
prior restricted to the class.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sfx_cnnhit.detector import HC_EV_ANGSTROM, DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.simulate.cells import CELLS, random_rotation
from sfx_cnnhit.simulate.config import CLASS_NAMES, HIT_MIN_LABEL, Range, SimulationConfig
from sfx_cnnhit.simulate.crystal import Beam, Lattice, predict
from sfx_cnnhit.simulate.detectors import DetectorModel, build_detector, corner_resolution_limit
from sfx_cnnhit.simulate.projection import BackgroundMaps, LabFrame, Projection
from sfx_cnnhit.simulate.render import APERTURE_FRACTION, aperture_area, roughen, spot_covariance, spot_patches
from sfx_cnnhit.simulate.response import DetectorInstance, draw_instance, photon_counts, to_adu

SPLITS = ("train", "val", "test")
_STREAM_FRAME, _STREAM_DETECTOR, _STREAM_LABELS = 0, 1, 2
#: Reflections with fewer expected photons are left out of the ground-truth reflection list.
MIN_LISTED_PHOTONS = 1.0
#: Streak brightness is quoted 50 pixels from the beam, per 1e11 photons per pulse.
_STREAK_RADIUS_PX, _STREAK_PHOTONS_REF = 50.0, 1e11
_UM3_TO_A3 = 1e12
#: Worker processes fork where possible (no re-import of the caller's main module); spawn elsewhere.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def split_id(split: str) -> int:
    """Stream id of a split name: 0, 1, 2 for train, val, test; other names hash above 2."""
    if split in SPLITS:
        return SPLITS.index(split)
    if not split or not split.isprintable():
        raise ConfigError(f"invalid split name {split!r}")
    h = 2166136261
    for byte in split.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return 3 + h


def frame_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of frame ``index`` of ``split``."""
    return np.random.SeedSequence(seed, spawn_key=(split_id(split), _STREAM_FRAME, int(index)))


def class_fractions_for(
    class_fractions: Sequence[float] | None = None, hit_rate: float | None = None
) -> NDArray[np.float64]:
    """Fractions of the five classes (sum 1).

    Default equal shares (DiffraNet). ``hit_rate`` R gives misses ``(1-R)/2`` each to blank and
    no_crystal and hits ``R/3`` each to weak, good and strong (R = 0.6 is the default).
    """
    if class_fractions is not None and hit_rate is not None:
        raise ConfigError("give either class fractions or a hit rate, not both")
    if hit_rate is not None:
        if not 0.0 <= hit_rate <= 1.0:
            raise ConfigError(f"hit rate must lie in [0, 1], got {hit_rate}")
        return np.array([(1 - hit_rate) / 2] * 2 + [hit_rate / 3] * 3)
    if class_fractions is None:
        return np.full(len(CLASS_NAMES), 1.0 / len(CLASS_NAMES))
    frac = np.asarray(class_fractions, np.float64)
    if frac.shape != (len(CLASS_NAMES),) or np.any(frac < 0) or not np.isfinite(frac).all() or frac.sum() <= 0:
        raise ConfigError(f"class fractions must be {len(CLASS_NAMES)} non-negative numbers ({', '.join(CLASS_NAMES)})")
    return cast("NDArray[np.float64]", frac / frac.sum())


def label_of(n_spots: int, thresholds: tuple[int, int, int]) -> int:
    """Class of a frame with a crystal from its spot count (fewer than ``thresholds[0]``: no_crystal)."""
    return 1 + int(np.searchsorted(np.asarray(thresholds), n_spots, side="right"))


@dataclass(frozen=True)
class Streak:
    """A jet streak: brightness (photons/pixel at 50 px per 1e11 photons), rms width (px), angle, sides."""

    photons: float
    width_px: float
    angle_deg: float
    two_sided: bool


@dataclass(frozen=True)
class FrameParams:
    """Everything drawn for one frame (see the config classes for units and ranges).

    ``photons_per_pulse`` is 0 for blank frames; ``lattices`` is empty unless the frame is a hit;
    ``crystal_size_um`` is the edge of the illuminated crystal volume.
    """

    label: int
    photon_energy_ev: float
    bragg_photon_energy_ev: float
    clen_m: float
    bandwidth: float
    divergence_rad: float
    photons_per_pulse: float
    beam_fwhm_um: float
    polarisation: float
    water_thickness_um: float
    air_path_mm: float
    streak: Streak | None
    adu_per_photon: float
    read_noise_adu: float
    pedestal_adu: float
    crystal_size_um: float | None = None
    lattices: tuple[Lattice, ...] = ()
    #: point-spread sigma (pixels) when the config draws it per frame; None: the detector's fixed one
    psf_px: float | None = None

    @property
    def wavelength_a(self) -> float:
        return HC_EV_ANGSTROM / self.photon_energy_ev

    @property
    def fluence_per_a2(self) -> float:
        """Peak fluence of the Gaussian focus (photons/Å²)."""
        sigma_a = self.beam_fwhm_um * 1e4 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        return self.photons_per_pulse / (2.0 * math.pi * sigma_a**2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "label": self.label,
            "class_name": CLASS_NAMES[self.label],
            "photon_energy_ev": self.photon_energy_ev,
            "bragg_photon_energy_ev": self.bragg_photon_energy_ev,
            "wavelength_a": self.wavelength_a,
            "clen_m": self.clen_m,
            "bandwidth": self.bandwidth,
            "divergence_rad": self.divergence_rad,
            "photons_per_pulse": self.photons_per_pulse,
            "beam_fwhm_um": self.beam_fwhm_um,
            "polarisation": self.polarisation,
            "water_thickness_um": self.water_thickness_um,
            "air_path_mm": self.air_path_mm,
            "streak": None if self.streak is None else vars(self.streak).copy(),
            "adu_per_photon": self.adu_per_photon,
            "read_noise_adu": self.read_noise_adu,
            "pedestal_adu": self.pedestal_adu,
            "crystal_size_um": self.crystal_size_um,
            "lattices": [lat.as_dict() for lat in self.lattices],
            **({} if self.psf_px is None else {"psf_px": self.psf_px}),
        }


@dataclass(frozen=True)
class _Spots:
    """Reflections of a frame that land on a panel, per unit illuminated volume."""

    hkl: NDArray[np.int64]
    lattice: NDArray[np.int64]
    d: NDArray[np.float64]
    partiality: NDArray[np.float64]
    photons_per_um3: NDArray[np.float64]
    proj: Projection
    cov: NDArray[np.float64]
    noise: NDArray[np.float64]
    threshold_um3: NDArray[np.float64]

    def snr(self, volume_um3: float) -> NDArray[np.float64]:
        signal = APERTURE_FRACTION * self.photons_per_um3 * volume_um3
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(signal > 0, signal / np.sqrt(signal + self.noise), 0.0)


@dataclass
class RenderedFrame:
    """One simulated frame.

    Attributes:
        data: ``(ss, fs)`` float32 detector values (ADU).
        mask: ``(ss, fs)`` bool, True = good pixel.
        bragg_mask: ``(ss, fs)`` bool, pixels of counted spots at or above ``classes.bragg_mask_fraction``
            of their spot's brightest pixel.
        label: class id; n_spots: spots counted for the class.
        params: JSON-able parameters and results.
        reflections: ``fs, ss`` (slab pixels, centre = integer), ``intensity`` (expected photons), ``h,
            k, l``, ``d`` (Å), ``partiality``, ``snr``, ``lattice``, ``spot`` (counted in n_spots) of
            every reflection with at least :data:`MIN_LISTED_PHOTONS` expected photons.
        expected_photons, expected_background: noise-free photons per pixel (only when asked for).
    """

    data: NDArray[np.float32]
    mask: NDArray[np.bool_]
    bragg_mask: NDArray[np.bool_]
    label: int
    n_spots: int
    params: dict[str, Any]
    reflections: dict[str, NDArray[Any]]
    expected_photons: NDArray[np.float32] | None = None
    expected_background: NDArray[np.float32] | None = None


@dataclass
class SimulatedBatch:
    """Frames with ground truth.

    Attributes:
        data: ``(n, ss, fs)`` float32 (ADU); mask: ``(n, ss, fs)`` bool, True = good.
        labels: ``(n,)`` int64 class ids (:data:`CLASS_NAMES`); hit: ``labels >= 2``.
        bragg_mask: ``(n, ss, fs)`` bool; n_spots: ``(n,)`` int64.
        params: per-frame JSON-able dicts; reflections: per-frame dicts of arrays.
        frame_index: ``(n,)`` int64 index of each frame in its split's stream.
    """

    data: NDArray[np.float32]
    mask: NDArray[np.bool_]
    labels: NDArray[np.int64]
    hit: NDArray[np.bool_]
    bragg_mask: NDArray[np.bool_]
    n_spots: NDArray[np.int64]
    params: list[dict[str, Any]]
    reflections: list[dict[str, NDArray[Any]]]
    frame_index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.labels.size)

    @classmethod
    def from_frames(cls, frames: Sequence[RenderedFrame], frame_index: ArrayLike) -> SimulatedBatch:
        labels = np.array([f.label for f in frames], np.int64)
        return cls(
            data=np.stack([f.data for f in frames]),
            mask=np.stack([f.mask for f in frames]),
            labels=labels,
            hit=labels >= HIT_MIN_LABEL,
            bragg_mask=np.stack([f.bragg_mask for f in frames]),
            n_spots=np.array([f.n_spots for f in frames], np.int64),
            params=[f.params for f in frames],
            reflections=[f.reflections for f in frames],
            frame_index=np.asarray(frame_index, np.int64).reshape(-1),
        )


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(r[0] + (r[1] - r[0]) * rng.random())


def _log_uniform(rng: np.random.Generator, r: Range) -> float:
    lo, hi = math.log(r[0]), math.log(r[1])
    return float(math.exp(lo + (hi - lo) * rng.random()))


class Simulator:
    """Simulates frames of the five classes for one detector, seed and split.

    Args:
        config: what to sample from (default :class:`SimulationConfig`).
        seed: base seed (non-negative integer).
        split: ``train``, ``val``, ``test`` (or another name); splits never share random streams.
        workers: processes used by :meth:`generate` (1 = in this process); results do not depend on it.

    Raises:
        ConfigError: for an invalid seed, split or configuration.
    """

    def __init__(
        self, config: SimulationConfig | None = None, seed: int = 0, split: str = "train", *, workers: int = 1
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if workers < 1:
            raise ConfigError("workers must be at least 1")
        self.config = config or SimulationConfig()
        self.seed = int(seed)
        self.split = split
        self._split_id = split_id(split)
        self.workers = int(workers)
        det = self.config.detector
        self._energy_range = self.config.beam.photon_energy_ev
        nominal_energy = 0.5 * sum(self._energy_range)
        self.model: DetectorModel = build_detector(
            det.name,
            size=det.size,
            clen_m=None if det.clen_m is None else 0.5 * sum(det.clen_m),
            pixel_size_m=det.pixel_size_m,
            photon_energy_ev=nominal_energy,
            beam_offset_px=det.beam_offset_px,
        )
        self.lab = LabFrame(self.model, det.beamstop_radius_mm, det.beamstop_arm)
        self._clen_range: Range = det.clen_m or (self.lab.nominal_clen, self.lab.nominal_clen)
        self._psf = self.model.psf_px if det.psf_px is None or isinstance(det.psf_px, tuple) else det.psf_px
        self._max_adu = self.model.max_adu if det.max_adu is None else det.max_adu
        self._counting = self.model.adu_per_ev is None and det.adu_per_photon is None and det.read_noise_adu is None
        self._instance: tuple[int, DetectorInstance] | None = None
        self._d_min_cache: dict[tuple[float, float], float] = {}
        self._next_index = 0
        self._pool: ProcessPoolExecutor | None = None

    # -- properties -------------------------------------------------------------------------------

    @property
    def geometry(self) -> DetectorGeometry:
        """The detector geometry (CrystFEL terms)."""
        return self.model.geometry

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(ss, fs)`` of every frame."""
        return self.lab.shape

    def instance(self, index: int) -> DetectorInstance:
        """The detector instance (gains, defects, mask) in force at frame ``index``."""
        number = int(index) // self.config.detector.instance_frames
        if self._instance is None or self._instance[0] != number:
            ss = np.random.SeedSequence(self.seed, spawn_key=(self._split_id, _STREAM_DETECTOR, number))
            self._instance = (number, draw_instance(self.lab, self.config.detector, np.random.default_rng(ss)))
        return self._instance[1]

    # -- parameters -------------------------------------------------------------------------------

    def _rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
        params_ss, noise_ss = frame_seed(self.seed, self.split, index).spawn(2)
        return np.random.default_rng(params_ss), np.random.default_rng(noise_ss)

    def _draw_base(self, label: int, rng: np.random.Generator) -> FrameParams:
        """Beam, background and detector parameters (a fixed number of draws for every class)."""
        cfg = self.config
        beam, bg, det = cfg.beam, cfg.background, cfg.detector
        energy = _uniform(rng, beam.photon_energy_ev)
        bragg_energy = energy * (1.0 + beam.energy_jitter * float(rng.standard_normal()))
        clen = _uniform(rng, self._clen_range)
        bandwidth = _log_uniform(rng, beam.bandwidth)
        divergence = _log_uniform(rng, beam.divergence_rad)
        photons = _log_uniform(rng, beam.photons_per_pulse)
        fwhm = _uniform(rng, beam.beam_fwhm_um)
        water = _log_uniform(rng, bg.water_thickness_um)
        air = _uniform(rng, bg.air_path_mm)
        streak_roll = rng.random()
        streak = Streak(
            photons=_log_uniform(rng, bg.streak_photons),
            width_px=_uniform(rng, bg.streak_width_px),
            angle_deg=_uniform(rng, bg.streak_angle_deg),
            two_sided=bool(rng.random() < 0.5),
        )
        preset_gain = self.model.gain_at(energy)
        gain = _uniform(rng, det.adu_per_photon or (preset_gain, preset_gain))
        preset_read = self.model.read_noise_photons * gain
        read = _uniform(rng, det.read_noise_adu or (preset_read, preset_read))
        pedestal = _uniform(rng, det.pedestal_adu or (self.model.pedestal_adu, self.model.pedestal_adu))
        psf = _uniform(rng, det.psf_px) if isinstance(det.psf_px, tuple) else None  # no draw for a fixed PSF
        return FrameParams(
            label=label,
            photon_energy_ev=energy,
            bragg_photon_energy_ev=bragg_energy,
            clen_m=clen,
            bandwidth=bandwidth,
            divergence_rad=divergence,
            photons_per_pulse=0.0 if label == 0 else photons,
            beam_fwhm_um=fwhm,
            polarisation=beam.polarisation,
            water_thickness_um=water,
            air_path_mm=air,
            streak=streak if label >= 1 and streak_roll < bg.streak_probability else None,
            adu_per_photon=gain,
            read_noise_adu=read,
            pedestal_adu=pedestal,
            psf_px=psf,
        )

    def _draw_lattices(self, rng: np.random.Generator) -> tuple[Lattice, ...]:
        cc = self.config.crystal
        cell = CELLS[cc.cells[int(rng.integers(len(cc.cells)))]]
        n = 1
        while n < cc.max_lattices and rng.random() < cc.extra_lattice_probability:
            n += 1
        lattices = []
        for i in range(n):
            factors = 1.0 + cc.cell_jitter * rng.standard_normal(3)
            lattices.append(
                Lattice(
                    cell=cell.scaled((float(factors[0]), float(factors[1]), float(factors[2]))),
                    orientation=random_rotation(rng),
                    domain_size_um=_log_uniform(rng, cc.domain_size_um),
                    mosaicity_rad=math.radians(_log_uniform(rng, cc.mosaicity_deg)),
                    b_factor=_uniform(rng, cc.b_factor),
                    weight=1.0 if i == 0 else _uniform(rng, (0.2, 1.0)),
                )
            )
        return tuple(lattices)

    def _background(self, params: FrameParams) -> NDArray[np.float32]:
        """Expected background photons per pixel, ``(ss, fs)`` float32."""
        if params.photons_per_pulse <= 0:
            return np.zeros(self.frame_shape, np.float32)
        maps: BackgroundMaps = self.lab.maps(params.clen_m, params.wavelength_a, params.polarisation)
        bg = maps.water * np.float32(params.photons_per_pulse * params.water_thickness_um)
        if params.air_path_mm > 0:
            bg += maps.air * np.float32(params.photons_per_pulse * params.air_path_mm)
        if params.streak is not None:
            bg += self._streak(params)
        return bg

    def _streak(self, params: FrameParams) -> NDArray[np.float32]:
        streak = params.streak
        assert streak is not None
        pixel = 1.0 / self.lab.p_res[0]
        angle = math.radians(streak.angle_deg)
        cx, cy = np.float32(math.cos(angle) / pixel), np.float32(math.sin(angle) / pixel)
        along = self.lab.x * cx + self.lab.y * cy
        across = self.lab.y * cx - self.lab.x * cy
        radius = np.maximum(np.abs(along), np.float32(_STREAK_RADIUS_PX))
        level = streak.photons * params.photons_per_pulse / _STREAK_PHOTONS_REF
        out = np.float32(level) * np.exp(np.float32(-0.5 / streak.width_px**2) * across * across)
        out *= (np.float32(_STREAK_RADIUS_PX) / radius) ** np.float32(1.5)
        if not streak.two_sided:
            out *= along > 0
        out *= self.lab.beamstop
        return out.astype(np.float32)

    def _d_min(self, clen_m: float, wavelength_a: float) -> float:
        key = (round(clen_m, 9), round(wavelength_a, 9))
        if key not in self._d_min_cache:
            self._d_min_cache[key] = corner_resolution_limit(self.model, clen_m, wavelength_a)
        return self._d_min_cache[key]

    def _spots(self, params: FrameParams, lattices: Sequence[Lattice], background: NDArray[np.float32]) -> _Spots:
        """Reflections of ``lattices`` on the detector, per µm³ of illuminated crystal."""
        lam = HC_EV_ANGSTROM / params.bragg_photon_energy_ev
        beam = Beam(lam, params.bandwidth, params.divergence_rad, params.polarisation)
        d_min = self._d_min(params.clen_m, lam * (1.0 - 3.0 * params.bandwidth))
        parts = [predict(lat, beam, d_min, params.fluence_per_a2) for lat in lattices]
        k_out = np.concatenate([p.k_out for p in parts])
        proj = self.lab.project(k_out, params.clen_m)
        on = proj.hit
        proj = Projection(proj.panel[on], proj.fs[on], proj.ss[on])
        lattice_idx = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])[on]
        photons = np.concatenate([p.photons_per_a3 for p in parts])[on] * _UM3_TO_A3
        photons *= self.lab.lookup(self.lab.beamstop, proj)
        cov = spot_covariance(
            self.lab,
            proj,
            k_out[on],
            np.concatenate([p.sigma_radial for p in parts])[on],
            np.concatenate([p.sigma_tangential for p in parts])[on],
            params.clen_m,
            self._psf if params.psf_px is None else params.psf_px,
        )
        read_photons = params.read_noise_adu / params.adu_per_photon
        noise = aperture_area(cov) * (self.lab.lookup(background, proj) + read_photons**2)
        k2 = self.config.classes.spot_snr**2
        needed = 0.5 * (k2 + np.sqrt(k2 * k2 + 4.0 * k2 * noise))
        with np.errstate(divide="ignore"):
            threshold = np.where(
                photons > 0, needed / (APERTURE_FRACTION * np.where(photons > 0, photons, 1.0)), np.inf
            )
        return _Spots(
            hkl=np.concatenate([p.hkl for p in parts])[on],
            lattice=lattice_idx,
            d=np.concatenate([p.d for p in parts])[on],
            partiality=np.concatenate([p.partiality for p in parts])[on],
            photons_per_um3=photons,
            proj=proj,
            cov=cov,
            noise=noise,
            threshold_um3=threshold,
        )

    def _draw_hit(
        self, params: FrameParams, rng: np.random.Generator, background: NDArray[np.float32]
    ) -> tuple[FrameParams, _Spots]:
        """Lattices and crystal volume of a hit of class ``params.label`` (see the module docstring).

        Falls back to the draw whose class interval had the largest prior probability when none is
        accepted within ``classes.max_attempts`` (a slight bias, only for very unlikely classes).
        """
        cc, classes = self.config.crystal, self.config.classes
        edges = (*classes.thresholds, None)
        # A hit label's lower edge is one of the thresholds (only the last upper edge is None).
        lo_count, hi_count = cast(int, edges[params.label - HIT_MIN_LABEL]), edges[params.label - HIT_MIN_LABEL + 1]
        log_lo, log_hi = (3.0 * math.log(v) for v in cc.crystal_size_um)
        accepted = best = None
        best_mass = -1.0
        for _ in range(classes.max_attempts):
            lattices = self._draw_lattices(rng)
            spots = self._spots(params, lattices, background)
            thresholds = np.sort(spots.threshold_um3)
            if thresholds.size < lo_count or not np.isfinite(thresholds[lo_count - 1]):
                continue
            a = max(log_lo, math.log(thresholds[lo_count - 1]) + 1e-9)
            b = log_hi
            if hi_count is not None and thresholds.size >= hi_count:
                b = min(b, math.log(thresholds[hi_count - 1]) - 1e-9)
            if b < a:
                continue
            mass = (b - a) / (log_hi - log_lo) if log_hi > log_lo else 1.0
            if mass > best_mass:
                best_mass, best = mass, (a, b, lattices, spots)
            if rng.random() * classes.acceptance_cap[params.label - HIT_MIN_LABEL] < mass:
                accepted = (a, b, lattices, spots)
                break
        accepted = accepted or best
        if accepted is None:
            raise ConfigError(
                f"no crystal within the configured ranges gives a {CLASS_NAMES[params.label]} frame "
                f"({classes.max_attempts} tried); widen crystal.crystal_size_um or beam.photons_per_pulse"
            )
        a, b, lattices, spots = accepted
        volume = math.exp(a + (b - a) * rng.random())
        return replace(params, crystal_size_um=volume ** (1.0 / 3.0), lattices=lattices), spots

    def draw_params(self, label: int, index: int) -> FrameParams:
        """The parameters of frame ``index`` if it is made with class ``label``."""
        return self._draw(label, index)[0]

    def _draw(self, label: int, index: int) -> tuple[FrameParams, NDArray[np.float32], _Spots | None]:
        if label not in range(len(CLASS_NAMES)):
            raise ConfigError(f"class label must be 0..{len(CLASS_NAMES) - 1}, got {label!r}")
        rng, _ = self._rngs(index)
        params = self._draw_base(int(label), rng)
        background = self._background(params)
        spots = None
        if label >= HIT_MIN_LABEL:
            params, spots = self._draw_hit(params, rng, background)
        return params, background, spots

    # -- rendering --------------------------------------------------------------------------------

    def simulate_frame(self, label: int, index: int, *, keep_expected: bool = False) -> RenderedFrame:
        """Frame ``index`` of this split made with class ``label``."""
        params, background, spots = self._draw(label, index)
        return self._render(params, background, spots, index, keep_expected)

    def render(self, params: FrameParams, index: int, *, keep_expected: bool = False) -> RenderedFrame:
        """Render given parameters with frame ``index``'s noise; the label is re-measured from the spots.

        A frame whose lattices give fewer than ``classes.thresholds[0]`` spots is labelled no_crystal.
        """
        background = self._background(params)
        spots = self._spots(params, params.lattices, background) if params.lattices else None
        return self._render(params, background, spots, index, keep_expected)

    def _render(
        self,
        params: FrameParams,
        background: NDArray[np.float32],
        spots: _Spots | None,
        index: int,
        keep_expected: bool,
    ) -> RenderedFrame:
        _, rng = self._rngs(index)
        inst = self.instance(index)
        classes = self.config.classes
        bragg_mask = np.zeros(self.frame_shape, bool)
        spot_index = np.zeros(0, np.int64)
        spot_expected = np.zeros(0)
        reflections = _empty_reflections()
        n_spots = 0
        label = params.label
        if spots is not None and params.crystal_size_um is not None:
            volume = params.crystal_size_um**3
            patches = spot_patches(self.lab, spots.proj, spots.cov)
            if self.config.crystal.profile_roughness is not None:  # no draw otherwise: old seeds reproduce
                patches = roughen(patches, _uniform(rng, self.config.crystal.profile_roughness), rng)
            photons = spots.photons_per_um3 * volume
            spot_index = patches.index
            spot_expected = photons[patches.owner] * patches.weight
            counted = spots.threshold_um3 <= volume
            n_spots = int(counted.sum())
            label = label_of(n_spots, classes.thresholds)
            in_mask = counted[patches.owner] & (patches.peak_fraction >= classes.bragg_mask_fraction)
            bragg_mask.reshape(-1)[spot_index[in_mask]] = True
            reflections = self._reflection_table(spots, photons, counted, volume)
        expected = None
        if keep_expected:
            bragg = np.bincount(spot_index, weights=spot_expected, minlength=background.size).astype(np.float32)
            expected = background + bragg.reshape(background.shape)
        counts = photon_counts(background, spot_index, spot_expected, rng)
        data = to_adu(
            counts,
            inst,
            self.lab,
            adu_per_photon=params.adu_per_photon,
            read_noise_adu=params.read_noise_adu,
            pedestal_adu=params.pedestal_adu,
            max_adu=self._max_adu,
            counting=self._counting,
            gap_value=self.model.gap_value,
            quantize=self.config.detector.quantize_adu,
            rng=rng,
        )
        info = params.to_dict()
        info.update(
            label=label,
            class_name=CLASS_NAMES[label],
            n_spots=n_spots,
            n_reflections=int(reflections["fs"].size),
            bragg_photons=float(spot_expected.sum()),
            frame_index=int(index),
            detector_instance=int(index) // self.config.detector.instance_frames,
        )
        return RenderedFrame(
            data=data,
            mask=inst.mask.copy(),
            bragg_mask=bragg_mask,
            label=label,
            n_spots=n_spots,
            params=info,
            reflections=reflections,
            expected_photons=expected,
            expected_background=background if keep_expected else None,
        )

    def _reflection_table(
        self, spots: _Spots, photons: NDArray[np.float64], counted: NDArray[np.bool_], volume: float
    ) -> dict[str, NDArray[Any]]:
        keep = photons >= MIN_LISTED_PHOTONS
        proj = Projection(spots.proj.panel[keep], spots.proj.fs[keep], spots.proj.ss[keep])
        fs, ss = self.lab.slab_position(proj)
        return {
            "fs": fs.astype(np.float32),
            "ss": ss.astype(np.float32),
            "intensity": photons[keep].astype(np.float32),
            "h": spots.hkl[keep, 0].astype(np.int32),
            "k": spots.hkl[keep, 1].astype(np.int32),
            "l": spots.hkl[keep, 2].astype(np.int32),
            "d": spots.d[keep].astype(np.float32),
            "partiality": spots.partiality[keep].astype(np.float32),
            "snr": spots.snr(volume)[keep].astype(np.float32),
            "lattice": spots.lattice[keep].astype(np.int16),
            "spot": counted[keep],
        }

    # -- batches ------------------------------------------------------------------------------------

    def generate(
        self, labels: Sequence[int] | NDArray[np.integer], *, start_index: int | None = None
    ) -> SimulatedBatch:
        """Frames of the given classes, continuing this simulator's frame counter (or from ``start_index``)."""
        labels_arr = np.asarray(labels, np.int64).reshape(-1)
        if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= len(CLASS_NAMES)):
            raise ConfigError(f"class labels must be 0..{len(CLASS_NAMES) - 1}")
        start = self._next_index if start_index is None else int(start_index)
        indices = start + np.arange(labels_arr.size, dtype=np.int64)
        self._next_index = max(self._next_index, start + labels_arr.size)
        jobs = list(zip(labels_arr.tolist(), indices.tolist(), strict=True))
        if self.workers > 1 and len(jobs) > 1:
            frames = self._parallel(jobs)
        else:
            frames = [self.simulate_frame(label, index) for label, index in jobs]
        if not frames:
            shape = (0, *self.frame_shape)
            return SimulatedBatch(
                np.zeros(shape, np.float32),
                np.zeros(shape, bool),
                labels_arr,
                labels_arr >= HIT_MIN_LABEL,
                np.zeros(shape, bool),
                np.zeros(0, np.int64),
                [],
                [],
                indices,
            )
        return SimulatedBatch.from_frames(frames, indices)

    def labels_for(
        self, n_frames: int, class_fractions: Sequence[float] | None = None, hit_rate: float | None = None
    ) -> NDArray[np.int64]:
        """A shuffled label sequence with exactly proportional class counts (largest remainder).

        Reproducible: the shuffle uses the stream ``(split_id, 2, next frame index)``.
        """
        if n_frames < 0:
            raise ConfigError("the number of frames must not be negative")
        frac = class_fractions_for(class_fractions, hit_rate)
        raw = frac * n_frames
        counts = np.floor(raw).astype(np.int64)
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[: n_frames - counts.sum()]] += 1
        labels = np.repeat(np.arange(len(CLASS_NAMES)), counts)
        ss = np.random.SeedSequence(self.seed, spawn_key=(self._split_id, _STREAM_LABELS, self._next_index))
        np.random.default_rng(ss).shuffle(labels)
        return labels

    def stream(
        self,
        n_frames: int,
        class_fractions: Sequence[float] | None = None,
        hit_rate: float | None = None,
        batch_size: int = 32,
    ) -> Iterator[SimulatedBatch]:
        """``n_frames`` frames in batches, classes in the given shares (default equal, as DiffraNet)."""
        if batch_size < 1:
            raise ConfigError("batch size must be at least 1")
        labels = self.labels_for(n_frames, class_fractions, hit_rate)
        for start in range(0, n_frames, batch_size):
            yield self.generate(labels[start : start + batch_size])

    # -- worker processes ---------------------------------------------------------------------------

    def _parallel(self, jobs: list[tuple[int, int]]) -> list[RenderedFrame]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(_START_METHOD),
                initializer=_init_worker,
                initargs=(self.config.to_dict(), self.seed, self.split),
            )
        size = max(1, math.ceil(len(jobs) / (4 * self.workers)))
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        return [frame for chunk in self._pool.map(_worker_frames, chunks) for frame in chunk]

    def close(self) -> None:
        """Stop worker processes (if any)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _empty_reflections() -> dict[str, NDArray[Any]]:
    dtypes = {
        "fs": np.float32,
        "ss": np.float32,
        "intensity": np.float32,
        "h": np.int32,
        "k": np.int32,
        "l": np.int32,
        "d": np.float32,
        "partiality": np.float32,
        "snr": np.float32,
        "lattice": np.int16,
        "spot": bool,
    }
    return {name: np.zeros(0, dtype) for name, dtype in dtypes.items()}


_WORKER: Simulator | None = None


def _init_worker(config: dict[str, Any], seed: int, split: str) -> None:
    global _WORKER
    _WORKER = Simulator(SimulationConfig.from_dict(config), seed, split)


def _worker_frames(jobs: list[tuple[int, int]]) -> list[RenderedFrame]:
    assert _WORKER is not None
    return [_WORKER.simulate_frame(label, index) for label, index in jobs]
