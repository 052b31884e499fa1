"""Configuration of the frame simulator: frozen dataclasses of per-frame sampling ranges.

A :data:`Range` ``(low, high)`` is sampled independently for every frame; ``low == high`` fixes the
value. Scale-like quantities (photons, sizes, thicknesses, mosaicity) are drawn log-uniformly, the
others uniformly; each field's docstring says which. Every default is documented in
``docs/simulator.md`` together with the equations that use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sfx_cnnhit.errors import ConfigError

Range = tuple[float, float]

#: Shipped simulation configs by name (``simulate --config NAME``, ``train --simulate-config NAME``).
NAMED_CONFIGS = {name: Path(__file__).with_name(f"{name}.yaml") for name in ("randomised", "compact")}

#: DiffraNet's five classes, by id. ``hit = label >= HIT_MIN_LABEL``.
CLASS_NAMES = ("blank", "no_crystal", "weak", "good", "strong")
HIT_MIN_LABEL = 2


def _check_range(
    owner: str, name: str, value: Range | None, *, positive: bool = False, low: float | None = None
) -> None:
    if value is None:
        return
    if len(value) != 2:
        raise ConfigError(f"{owner}.{name} must be a (low, high) pair, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(f"{owner}.{name} must be a finite range with low <= high, got {value!r}")
    if positive and lo <= 0:
        raise ConfigError(f"{owner}.{name} must be positive, got {value!r}")
    if low is not None and lo < low:
        raise ConfigError(f"{owner}.{name} must not go below {low}, got {value!r}")


def _check_fraction(owner: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}.{name} must lie in [0, 1], got {value!r}")


@dataclass(frozen=True)
class DetectorConfig:
    """Detector layout, distance and response.

    ``None`` takes the detector preset's value (see :mod:`sfx_cnnhit.simulate.detectors`).

    Attributes:
        name: layout: ``square512``, ``cspad``, ``epix10k2m``, ``agipd1m``, ``pilatus6m``, ``eiger``,
            ``rayonix``.
        size: layout size: square side (``square512``, ``rayonix``) or the nearest model of a module
            family (``pilatus6m``: 1M/2M/6M, ``eiger``: 1M/4M/9M/16M); fixed layouts reject it.
        clen_m: sample-detector distance (m), uniform per frame.
        pixel_size_m: pixel pitch (m) replacing the preset's.
        beam_offset_px: ``(x, y)`` shift of the beam from the layout's nominal centre (pixels).
        adu_per_photon: gain (ADU/photon), uniform per frame; preset: ``adu_per_ev * E`` (1 for photon
            counting detectors).
        read_noise_adu: Gaussian read noise sigma (ADU), uniform per frame.
        pedestal_adu: residual offset after dark subtraction (ADU), uniform per frame.
        max_adu: saturation: values are clipped here (ADU).
        quantize_adu: round integrating detectors' values to whole ADU, as their ADCs do (also makes
            files 4-5x smaller).
        panel_gain_rms: relative rms of the per-panel gain error (fixed per detector instance).
        pixel_gain_rms: relative rms of the per-pixel gain error (fixed per detector instance).
        pedestal_panel_rms: rms of per-panel pedestal offsets (ADU, fixed per detector instance).
        hot_pixel_fraction, dead_pixel_fraction: defective pixels per pixel.
        hot_pixels_masked: fraction of the hot pixels the bad-pixel mask knows about (real masks miss some).
        psf_px: detector point-spread sigma (pixels): one value, or a ``(low, high)`` range drawn
            uniformly per frame (sharp 1-2 pixel spots to blurred ones).
        beamstop_radius_mm: radius of the beamstop shadow on the detector (0 = none).
        beamstop_arm: draw the beamstop holder arm (towards +x) as well.
        instance_frames: frames per detector instance: hot/dead pixels and gain maps are redrawn every
            this many frames (like a new run).
    """

    name: str = "square512"
    size: int | None = None
    clen_m: Range | None = None
    pixel_size_m: float | None = None
    beam_offset_px: tuple[float, float] = (0.0, 0.0)
    adu_per_photon: Range | None = None
    read_noise_adu: Range | None = None
    pedestal_adu: Range | None = None
    max_adu: float | None = None
    quantize_adu: bool = True
    panel_gain_rms: float = 0.03
    pixel_gain_rms: float = 0.01
    pedestal_panel_rms: float = 1.0
    hot_pixel_fraction: float = 1e-4
    dead_pixel_fraction: float = 1e-4
    hot_pixels_masked: float = 0.5
    psf_px: float | Range | None = None
    beamstop_radius_mm: float = 1.5
    beamstop_arm: bool = True
    instance_frames: int = 1000

    def __post_init__(self) -> None:
        from sfx_cnnhit.simulate.detectors import PRESETS

        o = "detector"
        if self.name not in PRESETS:
            raise ConfigError(f"unknown detector {self.name!r}; choose from {', '.join(PRESETS)}")
        if self.size is not None and not PRESETS[self.name].resizable:
            resizable = ", ".join(k for k, p in PRESETS.items() if p.resizable)
            raise ConfigError(f"detector {self.name} has a fixed layout; a size applies to {resizable}")
        _check_range(o, "clen_m", self.clen_m, positive=True)
        _check_range(o, "adu_per_photon", self.adu_per_photon, positive=True)
        _check_range(o, "read_noise_adu", self.read_noise_adu, low=0.0)
        _check_range(o, "pedestal_adu", self.pedestal_adu)
        if self.size is not None and self.size < 16:
            raise ConfigError(f"detector.size must be at least 16 pixels, got {self.size}")
        if self.pixel_size_m is not None and self.pixel_size_m <= 0:
            raise ConfigError("detector.pixel_size_m must be positive")
        if self.max_adu is not None and self.max_adu <= 0:
            raise ConfigError("detector.max_adu must be positive")
        for name in ("panel_gain_rms", "pixel_gain_rms", "pedestal_panel_rms", "beamstop_radius_mm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"detector.{name} must not be negative")
        if isinstance(self.psf_px, tuple):
            _check_range(o, "psf_px", self.psf_px, low=0.0)
        elif self.psf_px is not None and self.psf_px < 0:
            raise ConfigError("detector.psf_px must not be negative")
        for name in ("hot_pixel_fraction", "dead_pixel_fraction", "hot_pixels_masked"):
            _check_fraction(o, name, getattr(self, name))
        if self.instance_frames < 1:
            raise ConfigError("detector.instance_frames must be at least 1")


@dataclass(frozen=True)
class BeamConfig:
    """X-ray pulse.

    Attributes:
        photon_energy_ev: nominal photon energy (eV), uniform per frame.
        energy_jitter: relative rms shot-to-shot energy jitter applied to the Bragg geometry.
        bandwidth: relative rms spectral width ``sigma_lambda / lambda``, log-uniform.
        divergence_rad: rms beam divergence (rad), log-uniform.
        photons_per_pulse: photons through the sample per pulse, log-uniform.
        beam_fwhm_um: focal-spot FWHM (µm), uniform; sets the fluence on the crystal.
        polarisation: fraction of the beam polarised along lab x.
    """

    photon_energy_ev: Range = (9500.0, 9500.0)
    energy_jitter: float = 0.002
    bandwidth: Range = (5e-4, 1.5e-3)
    divergence_rad: Range = (2e-5, 2e-4)
    photons_per_pulse: Range = (3e10, 3e11)
    beam_fwhm_um: Range = (1.0, 3.0)
    polarisation: float = 0.99

    def __post_init__(self) -> None:
        o = "beam"
        _check_range(o, "photon_energy_ev", self.photon_energy_ev, low=1000.0)
        if self.photon_energy_ev[1] > 100000.0:
            raise ConfigError("beam.photon_energy_ev must not exceed 100 keV")
        _check_range(o, "bandwidth", self.bandwidth, positive=True)
        _check_range(o, "divergence_rad", self.divergence_rad, positive=True)
        _check_range(o, "photons_per_pulse", self.photons_per_pulse, positive=True)
        _check_range(o, "beam_fwhm_um", self.beam_fwhm_um, positive=True)
        if not 0.0 <= self.energy_jitter < 0.1:
            raise ConfigError("beam.energy_jitter must lie in [0, 0.1)")
        _check_fraction(o, "polarisation", self.polarisation)


@dataclass(frozen=True)
class CrystalConfig:
    """Crystals and their lattices.

    Attributes:
        cells: unit-cell presets drawn uniformly per frame (see :data:`~sfx_cnnhit.simulate.cells.CELLS`);
            the large ``photosystem`` cell (~10^4 reflections per still) is available but not a default,
            as it costs ~0.1-0.3 s per frame.
        cell_jitter: relative rms variation of the cell edges between crystals.
        crystal_size_um: edge of the illuminated crystal volume (µm), log-uniform; the class of a hit
            is reached by conditioning this draw (see :mod:`sfx_cnnhit.simulate.simulator`).
        domain_size_um: mosaic-block size (µm), log-uniform; sets the excitation-error width ``1/D``.
        mosaicity_deg: rms mosaic spread (degrees), log-uniform.
        b_factor: Wilson B factor (Å²), uniform.
        extra_lattice_probability: chance that a hit holds another lattice (repeated up to
            ``max_lattices``).
        max_lattices: most lattices in one frame.
        profile_roughness: rms of the log of a random factor on every pixel of every spot profile,
            uniform per frame from this range (photons per spot kept): irregular spots, often one or
            two bright pixels, the way mosaic domains and partiality break up real and nanoBragg spots.
            None (default): smooth Gaussian profiles.
    """

    cells: tuple[str, ...] = ("lysozyme", "thermolysin", "insulin", "myoglobin")
    cell_jitter: float = 0.003
    crystal_size_um: Range = (0.3, 10.0)
    domain_size_um: Range = (0.05, 0.3)
    mosaicity_deg: Range = (0.01, 0.2)
    b_factor: Range = (15.0, 60.0)
    extra_lattice_probability: float = 0.1
    max_lattices: int = 3
    profile_roughness: Range | None = None

    def __post_init__(self) -> None:
        from sfx_cnnhit.simulate.cells import CELLS

        o = "crystal"
        if not self.cells:
            raise ConfigError("crystal.cells must name at least one unit cell")
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown:
            raise ConfigError(f"unknown unit cell(s) {', '.join(unknown)}; choose from {', '.join(CELLS)}")
        _check_range(o, "crystal_size_um", self.crystal_size_um, positive=True)
        _check_range(o, "domain_size_um", self.domain_size_um, positive=True)
        _check_range(o, "mosaicity_deg", self.mosaicity_deg, positive=True)
        _check_range(o, "b_factor", self.b_factor, low=0.0)
        if self.profile_roughness is not None:
            _check_range(o, "profile_roughness", self.profile_roughness, low=0.0)
        if not 0.0 <= self.cell_jitter < 0.05:
            raise ConfigError("crystal.cell_jitter must lie in [0, 0.05)")
        _check_fraction(o, "extra_lattice_probability", self.extra_lattice_probability)
        if self.max_lattices < 1:
            raise ConfigError("crystal.max_lattices must be at least 1")


@dataclass(frozen=True)
class BackgroundConfig:
    """Amorphous scattering from the sample carrier and the air, and jet streaks.

    Attributes:
        water_thickness_um: water path through the beam (liquid-jet diameter or tape thickness, µm),
            log-uniform.
        air_path_mm: equivalent air path at the sample (mm), uniform (0 = vacuum or helium).
        streak_probability: chance of a jet streak on a frame with X-rays.
        streak_photons: streak brightness: photons/pixel 50 pixels from the beam per 1e11 photons
            per pulse, log-uniform.
        streak_width_px: streak rms width (pixels), uniform.
        streak_angle_deg: streak direction from the lab x axis (degrees), uniform (jet along y).
    """

    water_thickness_um: Range = (2.0, 15.0)
    air_path_mm: Range = (0.0, 1.0)
    streak_probability: float = 0.3
    streak_photons: Range = (0.5, 20.0)
    streak_width_px: Range = (0.6, 2.0)
    streak_angle_deg: Range = (-8.0, 8.0)

    def __post_init__(self) -> None:
        o = "background"
        _check_range(o, "water_thickness_um", self.water_thickness_um, positive=True)
        _check_range(o, "air_path_mm", self.air_path_mm, low=0.0)
        _check_fraction(o, "streak_probability", self.streak_probability)
        _check_range(o, "streak_photons", self.streak_photons, positive=True)
        _check_range(o, "streak_width_px", self.streak_width_px, positive=True)
        _check_range(o, "streak_angle_deg", self.streak_angle_deg)


@dataclass(frozen=True)
class ClassConfig:
    """How weak, good and strong hits are told apart.

    A reflection is a *spot* when its expected integrated signal, inside the ellipse of Mahalanobis
    radius 2 around its centre, is at least ``spot_snr`` times the noise of that signal plus the
    background under it (photon noise and read noise). ``n_spots`` counts spots; a hit is ``weak``
    for ``thresholds[0] <= n_spots < thresholds[1]``, ``good`` up to ``thresholds[2]`` and ``strong``
    above.

    Attributes:
        spot_snr: signal-to-noise ratio that makes a reflection a spot.
        thresholds: ``(weak_min, good_min, strong_min)`` spot counts.
        bragg_mask_fraction: a spot's pixels whose expected Bragg photons reach this fraction of the
            spot's brightest pixel form the Bragg mask.
        acceptance_cap: per hit class (weak, good, strong), the prior probability of a crystal's class
            interval that is accepted for sure; smaller ones are accepted proportionally (exact rejection
            sampling for every crystal whose interval probability is below the cap).
        max_attempts: crystals drawn per frame before giving up on reaching the requested class.
    """

    spot_snr: float = 10.0
    thresholds: tuple[int, int, int] = (5, 25, 100)
    bragg_mask_fraction: float = 0.25
    acceptance_cap: tuple[float, float, float] = (0.35, 0.6, 1.0)
    max_attempts: int = 400

    def __post_init__(self) -> None:
        if self.spot_snr <= 0:
            raise ConfigError("classes.spot_snr must be positive")
        t = self.thresholds
        if len(t) != 3 or not 1 <= t[0] < t[1] < t[2]:
            raise ConfigError(f"classes.thresholds must be 1 <= weak_min < good_min < strong_min, got {t!r}")
        if not 0.0 < self.bragg_mask_fraction < 1.0:
            raise ConfigError("classes.bragg_mask_fraction must lie in (0, 1)")
        if len(self.acceptance_cap) != 3 or not all(0.0 < c <= 1.0 for c in self.acceptance_cap):
            raise ConfigError("classes.acceptance_cap must be three numbers in (0, 1]")
        if self.max_attempts < 1:
            raise ConfigError("classes.max_attempts must be at least 1")


_SECTIONS: dict[str, type] = {
    "detector": DetectorConfig,
    "beam": BeamConfig,
    "crystal": CrystalConfig,
    "background": BackgroundConfig,
    "classes": ClassConfig,
}


@dataclass(frozen=True)
class SimulationConfig:
    """Everything the simulator samples from; one frozen value per data set (JSON round-trips)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    crystal: CrystalConfig = field(default_factory=CrystalConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    classes: ClassConfig = field(default_factory=ClassConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able nested dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SimulationConfig:
        """Build from a nested dict such as :meth:`to_dict` returns; unknown keys are errors."""
        sections: dict[str, Any] = {}
        for section, content in values.items():
            if section not in _SECTIONS:
                raise ConfigError(f"unknown simulation config section {section!r}")
            sections[section] = _build_section(section, content)
        return cls(**sections)

    def with_overrides(self, **overrides: Any) -> SimulationConfig:
        """A copy with ``section__field=value`` overrides, e.g. ``detector__name="cspad"``."""
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, sep, name = key.partition("__")
            if not sep or section not in _SECTIONS:
                raise ConfigError(f"override {key!r} must look like <section>__<field>")
            grouped.setdefault(section, {})[name] = value
        changed = {}
        for section, values in grouped.items():
            current = dataclasses.asdict(getattr(self, section))
            unknown = set(values) - set(current)
            if unknown:
                raise ConfigError(f"unknown {section} setting(s): {', '.join(sorted(unknown))}")
            current.update(values)
            changed[section] = _build_section(section, current)
        return dataclasses.replace(self, **changed)


def _build_section(section: str, content: Mapping[str, Any]) -> Any:
    klass = _SECTIONS[section]
    names = {f.name: f for f in fields(klass)}
    unknown = set(content) - set(names)
    if unknown:
        raise ConfigError(f"unknown {section} setting(s): {', '.join(sorted(unknown))}")
    kwargs = {key: tuple(value) if isinstance(value, list) else value for key, value in content.items()}
    try:
        return klass(**kwargs)
    except TypeError as err:
        raise ConfigError(f"invalid {section} settings: {err}") from None
