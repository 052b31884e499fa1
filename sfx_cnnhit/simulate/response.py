"""Detector response: photon counting noise, gain, pedestal, read noise, saturation, defects.

``ADU = min(round(g_pix · G · N + pedestal + p_panel + sigma_read · z), max_adu)`` with
``N ~ Poisson(expected photons)``, ``G`` the gain (ADU/photon), ``g_pix`` the panel-by-pixel relative
gain, ``p_panel`` per-panel pedestal offsets, ``z ~ N(0, 1)`` and rounding to whole ADU (ADC
digitisation). Photon-counting detectors (Pilatus, Eiger) report rounded ``g_pix · N`` with no
pedestal or read noise. Hot pixels read a constant high level plus 5 % jitter, dead pixels read 0,
and pixels no panel covers hold the layout's gap value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.simulate.config import DetectorConfig
from sfx_cnnhit.simulate.projection import LabFrame

F32 = np.float32


@dataclass(frozen=True)
class DetectorInstance:
    """Fixed imperfections of one detector "run" (redrawn every ``instance_frames`` frames).

    Attributes:
        gain: ``(ss, fs)`` float32 relative gain (panel factor x pixel factor, mean 1).
        pedestal: ``(ss, fs)`` float32 per-panel pedestal offsets (ADU).
        hot: flat indices of hot pixels; hot_level: their level in photons.
        dead: flat indices of dead pixels.
        mask: ``(ss, fs)`` bool, True = good: covered, outside the beamstop shadow, not dead, not a
            known hot pixel, not flagged by the layout.
    """

    gain: NDArray[np.float32]
    pedestal: NDArray[np.float32]
    hot: NDArray[np.int64]
    hot_level: NDArray[np.float32]
    dead: NDArray[np.int64]
    mask: NDArray[np.bool_]


def draw_instance(lab: LabFrame, cfg: DetectorConfig, rng: np.random.Generator) -> DetectorInstance:
    """Draw gains, pedestal offsets and defective pixels for ``lab``'s detector."""
    shape = lab.shape
    panels = lab.model.geometry.panels
    panel_gain = 1.0 + cfg.panel_gain_rms * rng.standard_normal(len(panels))
    panel_ped = cfg.pedestal_panel_rms * rng.standard_normal(len(panels))
    gain = (1.0 + cfg.pixel_gain_rms * rng.standard_normal(shape, dtype=F32)).astype(F32)
    pedestal = np.zeros(shape, F32)
    for i, p in enumerate(panels):
        sl = p.slab_slices()
        gain[sl] *= F32(panel_gain[i])
        pedestal[sl] = panel_ped[i]
    np.maximum(gain, F32(0.0), out=gain)
    covered = np.flatnonzero(lab.covered)
    n_hot = rng.binomial(covered.size, cfg.hot_pixel_fraction)
    n_dead = rng.binomial(covered.size, cfg.dead_pixel_fraction)
    chosen = rng.choice(covered, size=n_hot + n_dead, replace=False)
    hot, dead = chosen[:n_hot], chosen[n_hot:]
    hot_level = np.exp(rng.uniform(np.log(5.0), np.log(500.0), n_hot)).astype(F32)
    mask = lab.covered & (lab.beamstop >= 0.5)
    if lab.model.masked_pixels is not None:
        mask &= ~lab.model.masked_pixels
    flat = mask.reshape(-1)
    flat[dead] = False
    flat[hot[rng.random(n_hot) < cfg.hot_pixels_masked]] = False
    return DetectorInstance(gain=gain, pedestal=pedestal, hot=hot, hot_level=hot_level, dead=dead, mask=mask)


def photon_counts(
    expected: NDArray[np.float32],
    spot_index: NDArray[np.int64],
    spot_expected: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """Poisson photon counts, ``(ss, fs)`` float32.

    ``expected`` is the smooth background; spot photons arrive as per-pixel entries (a pixel may
    appear several times). A sum of independent Poisson variables is Poisson with the summed mean,
    so drawing the background and each spot entry separately gives the exact distribution.
    """
    counts = rng.poisson(expected).astype(F32) if expected.any() else np.zeros(expected.shape, F32)
    if spot_index.size:
        spot_counts = rng.poisson(spot_expected)
        counts.reshape(-1)[:] += np.bincount(spot_index, weights=spot_counts, minlength=counts.size).astype(F32)
    return counts


def to_adu(
    counts: NDArray[np.float32],
    inst: DetectorInstance,
    lab: LabFrame,
    *,
    adu_per_photon: float,
    read_noise_adu: float,
    pedestal_adu: float,
    max_adu: float,
    counting: bool,
    gap_value: float,
    quantize: bool,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """Convert photon counts to detector values in place and return them, ``(ss, fs)`` float32.

    ``quantize`` rounds integrating detectors' values to whole ADU, as their ADCs do.
    """
    data = counts
    data *= inst.gain
    if counting:
        np.rint(data, out=data)
    else:
        data *= F32(adu_per_photon)
        data += inst.pedestal
        data += F32(pedestal_adu)
        if read_noise_adu > 0:
            data += F32(read_noise_adu) * rng.standard_normal(data.shape, dtype=F32)
        if quantize:
            np.rint(data, out=data)
    flat = data.reshape(-1)
    if inst.hot.size:
        level = inst.hot_level * (1.0 + 0.05 * rng.standard_normal(inst.hot.size)).astype(F32)
        hot_values = level * F32(adu_per_photon) + F32(0.0 if counting else pedestal_adu)
        flat[inst.hot] = np.rint(hot_values) if counting or quantize else hot_values
    flat[inst.dead] = 0.0
    np.minimum(data, F32(max_adu), out=data)
    data[~lab.covered] = gap_value
    return data
