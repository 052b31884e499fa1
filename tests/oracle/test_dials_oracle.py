"""Built-in dispersion finder against real DIALS (run as a subprocess); skipped without DIALS."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.finders.dials import DialsSpotFinder, dials_available
from sfx_cnnhit.finders.dispersion import BIG, DialsParams, DispersionSpotFinder, dials_preset
from sfx_cnnhit.types import PEAK_FIELDS

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(
        not (shutil.which("dials.find_spots") or Path("/usr/bin/dials.find_spots").exists()) or not dials_available(),
        reason="real DIALS is not installed (apt-get install -y dials)",
    ),
]


def frames_with_spots(shape, n, seed, gain=1.0):
    """Poisson backgrounds (0.2 to 40 photons) with 5-40 spots per frame, in ADU (``gain`` ADU/photon).

    Also: random dead pixels and a masked block, negative pixels (over-subtracted pedestal) and a
    pixel above DIALS's 2**24 cut-off.
    """
    rng = np.random.default_rng(seed)
    ss, fs = np.mgrid[0 : shape[0], 0 : shape[1]]
    frames = np.empty((n, *shape), np.float32)
    for i in range(n):
        expected = np.full(shape, rng.uniform(0.2, 40.0)) * (1 + 0.3 * fs / shape[1])
        for _ in range(rng.integers(5, 40)):
            fs0, ss0 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
            g = np.exp(-((fs - fs0) ** 2 + (ss - ss0) ** 2) / (2 * rng.uniform(0.5, 1.5) ** 2))
            expected += rng.uniform(30, 3000) * g / g.sum()
        frames[i] = rng.poisson(expected) * gain
    frames[:, 3, :4] = -2.0
    frames[0, shape[0] // 2, shape[1] // 3] = BIG + 1
    masks = rng.random(frames.shape) > 0.01
    masks[:, 8:14, 20:30] = False
    return frames, masks


CONFIGS = {
    "dispersion": (DialsParams(algorithm="dispersion"), 1.0),
    "dispersion-gain-min_local0": (DialsParams(algorithm="dispersion", gain=2.0, min_local=0, kernel_size=(2, 4)), 2.0),
    "ke2018_ln83": (dials_preset("ke2018_ln83")[0], 0.27 * 10),  # threshold 200 ADU: bright frames
    "dispersion_extended": (DialsParams(), 1.0),
    "dispersion_extended-gain": (DialsParams(gain=0.5, global_threshold=5.0, kernel_size=(2, 3)), 0.5),
}
SHAPES = [(64, 96), (200, 256)]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_strong_pixel_masks_equal_real_dials(config, shape):
    params, gain = CONFIGS[config]
    seed = 10 * list(CONFIGS).index(config) + SHAPES.index(shape)
    frames, masks = frames_with_spots(shape, 3, seed=seed, gain=gain)
    real = DialsSpotFinder(params).strong_pixels(frames, masks)
    built_in = DispersionSpotFinder(params).strong_pixels(frames, masks)
    assert real.sum() > 10
    np.testing.assert_array_equal(built_in, real)


@pytest.mark.parametrize("algorithm", ["dispersion", "dispersion_extended"])
def test_real_backend_finds_the_same_spots_end_to_end(algorithm):
    frames, masks = frames_with_spots((96, 128), 5, seed=11)
    geometry = DetectorGeometry.simple((96, 128), asic_shape=(48, 64), beam_center=(60.0, 50.0),
                                       pixel_size_m=1e-4, clen_m=0.01, photon_energy_ev=9500.0)
    params = DialsParams(algorithm=algorithm, d_min=1.8, gain=1.0)
    # two DIALS runs (3 + 2 frames) for one algorithm, to cover the batching
    frames_per_call = 3 if algorithm == "dispersion" else 256
    real = DialsSpotFinder(params, geometry=geometry, frames_per_call=frames_per_call).classify(frames, masks)
    ours = DispersionSpotFinder(params, geometry=geometry).classify(frames, masks)
    assert real.scores.sum() > 20
    np.testing.assert_array_equal(ours.scores, real.scores)
    np.testing.assert_array_equal(ours.hits, real.hits)
    for mine, theirs in zip(ours.peaks, real.peaks, strict=True):
        for field in PEAK_FIELDS:
            np.testing.assert_allclose(getattr(mine, field), getattr(theirs, field), rtol=1e-5, atol=1e-4)
