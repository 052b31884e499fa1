"""Tiny frame generator for tests: Gaussian spots on a Poisson background with read noise.

Not a diffraction simulator (that is :mod:`sfx_cnnhit.simulate`): spots land at random positions,
which is all the peak-finder tests need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import erf


@dataclass(frozen=True)
class SyntheticFrame:
    """A frame and its truth.

    Attributes:
        data: float32 ``(ss, fs)`` frame in ADU.
        radius: float32 ``(ss, fs)`` distance of each pixel from the beam (pixels).
        spots: float64 ``(n, 3)`` rows ``(fs, ss, photons)`` of the spots drawn.
    """

    data: NDArray[np.float32]
    radius: NDArray[np.float32]
    spots: NDArray[np.float64]


def _pixel_profile(centre: float, sigma: float, lo: int, hi: int) -> NDArray[np.float64]:
    """Fraction of a unit 1-D Gaussian falling in each pixel ``lo..hi-1`` (pixel centre = integer)."""
    edges = (np.arange(lo, hi + 1) - 0.5 - centre) / (sigma * np.sqrt(2.0))
    return 0.5 * np.diff(erf(edges))


def make_frame(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    n_spots: int = 30,
    background: float = 20.0,
    read_noise: float = 3.0,
    adu_per_photon: float = 1.0,
    spot_photons: tuple[float, float] = (300.0, 3000.0),
    spot_sigma: float = 0.9,
    beam_center: tuple[float, float] | None = None,
    spots: NDArray[np.float64] | None = None,
) -> SyntheticFrame:
    """Draw one frame.

    Args:
        rng: random generator.
        shape: ``(ss, fs)``.
        n_spots: number of random spots (ignored when ``spots`` is given).
        background: mean background photons per pixel at the beam, falling off as ``1/(1+r/500)``.
        read_noise: Gaussian noise sigma (ADU).
        adu_per_photon: gain.
        spot_photons: range of spot photon totals (uniform).
        spot_sigma: Gaussian spot width (pixels).
        beam_center: ``(fs, ss)`` of the beam; default the frame centre.
        spots: explicit ``(n, 3)`` rows ``(fs, ss, photons)``.
    """
    n_ss, n_fs = shape
    bc_fs, bc_ss = beam_center if beam_center is not None else ((n_fs - 1) / 2.0, (n_ss - 1) / 2.0)
    fs = np.arange(n_fs) - bc_fs
    ss = np.arange(n_ss) - bc_ss
    radius = np.hypot(fs[None, :], ss[:, None]).astype(np.float32)
    expected = background / (1.0 + radius / 500.0)
    if spots is None:
        spots = np.column_stack([
            rng.uniform(0, n_fs - 1, n_spots),
            rng.uniform(0, n_ss - 1, n_spots),
            rng.uniform(*spot_photons, n_spots),
        ])
    half = int(np.ceil(5 * spot_sigma))
    for x, y, photons in spots:
        f0, f1 = max(int(x) - half, 0), min(int(x) + half + 2, n_fs)
        s0, s1 = max(int(y) - half, 0), min(int(y) + half + 2, n_ss)
        expected[s0:s1, f0:f1] += photons * np.outer(
            _pixel_profile(y, spot_sigma, s0, s1), _pixel_profile(x, spot_sigma, f0, f1)
        )
    data = rng.poisson(expected) * adu_per_photon + rng.normal(0.0, read_noise, shape)
    return SyntheticFrame(data=data.astype(np.float32), radius=radius, spots=np.asarray(spots, np.float64))


def simulate_train_val(root, n_train: int, n_val: int = 20):
    """Two small labelled simulator files of 128x128 frames, ``train.cxi`` (seed 1) and ``val.cxi``
    (seed 2), in ``root``; returns ``(root, train, val)``."""
    from sfx_cnnhit.simulate import SimulationConfig, simulate_to_file

    config = SimulationConfig().with_overrides(detector__size=128)
    train = simulate_to_file(root / "train.cxi", n_train, seed=1, config=config, split="train")
    val = simulate_to_file(root / "val.cxi", n_val, seed=2, config=config, split="val")
    return root, train, val
