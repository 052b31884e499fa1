"""Physics of the frame simulator, checked against independent calculations."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from sfx_cnnhit.simulate import CLASS_NAMES, SimulationConfig, Simulator
from sfx_cnnhit.simulate.cells import CELLS
from sfx_cnnhit.simulate.crystal import Beam, Lattice, predict

HC = 12398.419843320026  # eV Å
PIXEL = 172e-6


def rotation(axis: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    """Rodrigues rotation matrix (written here, independent of the simulator's own)."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(angle_deg)
    return np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx


def reciprocal_by_cross_products(a, b, c, alpha, beta, gamma) -> np.ndarray:
    """Columns a*, b*, c* (Å⁻¹) with a along x and b in the xy plane, from cross products."""
    al, be, ga = (math.radians(x) for x in (alpha, beta, gamma))
    va = np.array([a, 0.0, 0.0])
    vb = np.array([b * math.cos(ga), b * math.sin(ga), 0.0])
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    vc = np.array([cx, cy, math.sqrt(c * c - cx * cx - cy * cy)])
    volume = va @ np.cross(vb, vc)
    return np.stack([np.cross(vb, vc), np.cross(vc, va), np.cross(va, vb)], axis=1) / volume


def still_config(**overrides) -> SimulationConfig:
    base = {
        "detector__pixel_size_m": PIXEL,
        "detector__clen_m": (0.075, 0.075),
        "beam__photon_energy_ev": (9500.0, 9500.0),
        "beam__energy_jitter": 0.0,
        "background__streak_probability": 0.0,
    }
    base.update(overrides)
    return SimulationConfig().with_overrides(**base)


def lysozyme_params(sim: Simulator, orientation: np.ndarray, size_um: float = 3.0):
    lattice = Lattice(
        CELLS["lysozyme"], orientation, domain_size_um=0.2, mosaicity_rad=math.radians(0.05), b_factor=20.0
    )
    base = sim.draw_params(1, 0)
    return replace(base, label=3, lattices=(lattice,), crystal_size_um=size_um, streak=None)


def test_spot_positions_follow_the_ewald_construction():
    sim = Simulator(still_config(), seed=11)
    u = rotation((0.3, -0.5, 0.8), 37.0)
    params = lysozyme_params(sim, u)
    frame = sim.render(params, 0, keep_expected=True)
    refl = frame.reflections
    assert refl["fs"].size > 30

    # Independent prediction: g = U B h, k_out = k_in + g, ray to the plane z = clen.
    lam = HC / params.bragg_photon_energy_ev
    cell = CELLS["lysozyme"]
    b_mat = reciprocal_by_cross_products(cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
    hkl = np.stack([refl["h"], refl["k"], refl["l"]], axis=1).astype(float)
    k_out = hkl @ (u @ b_mat).T + np.array([0.0, 0.0, 1.0 / lam])
    # On (or within a few profile widths of) the Ewald sphere.
    assert np.all(np.abs(np.linalg.norm(k_out, axis=1) - 1.0 / lam) < 5e-3)
    n_side = sim.frame_shape[1]
    fs = 0.075 * k_out[:, 0] / k_out[:, 2] / PIXEL + n_side / 2 - 0.5
    ss = 0.075 * k_out[:, 1] / k_out[:, 2] / PIXEL + n_side / 2 - 0.5
    assert np.max(np.hypot(refl["fs"] - fs, refl["ss"] - ss)) < 0.5

    # The rendered spots are centred there too: centroid of the noise-free Bragg photons.
    bragg = frame.expected_photons - frame.expected_background
    checked = 0
    for i in np.argsort(-refl["intensity"])[:40]:
        others = np.hypot(refl["fs"] - fs[i], refl["ss"] - ss[i])
        if np.sort(others)[1] < 8 or not (6 < fs[i] < n_side - 7 and 6 < ss[i] < n_side - 7):
            continue
        r0, c0 = round(ss[i]), round(fs[i])
        win = bragg[r0 - 4 : r0 + 5, c0 - 4 : c0 + 5]
        rows, cols = np.mgrid[r0 - 4 : r0 + 5, c0 - 4 : c0 + 5]
        assert abs((win * cols).sum() / win.sum() - fs[i]) < 0.5
        assert abs((win * rows).sum() / win.sum() - ss[i]) < 0.5
        checked += 1
    assert checked >= 5


def test_prediction_finds_every_reflection_near_the_sphere():
    cell = CELLS["myoglobin"]  # monoclinic: a non-orthogonal basis
    u = rotation((1.0, 2.0, -0.5), 71.0)
    lam, bandwidth, divergence, domain_um, mosaic = 1.3, 1e-3, 1e-4, 0.1, math.radians(0.1)
    d_min = 2.5
    lattice = Lattice(cell, u, domain_um, mosaic, 30.0)
    got = predict(lattice, Beam(lam, bandwidth, divergence), d_min, 1.0)

    a_mat = u @ reciprocal_by_cross_products(cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
    lim = [int(x / d_min) + 1 for x in (cell.a, cell.b, cell.c)]
    grid = np.stack(np.meshgrid(*(np.arange(-n, n + 1) for n in lim), indexing="ij"), -1).reshape(-1, 3)
    g_vec = grid @ a_mat.T
    g = np.linalg.norm(g_vec, axis=1)
    eps = np.linalg.norm(g_vec + np.array([0.0, 0.0, 1 / lam]), axis=1) - 1 / lam
    cos_t = np.sqrt(1 - (g * lam / 2) ** 2)
    sigma = np.sqrt(
        (1 / (domain_um * 1e4 * math.sqrt(2 * math.pi))) ** 2
        + (g * cos_t) ** 2 * (mosaic**2 + divergence**2)
        + (g * g * lam / 2 * bandwidth) ** 2
    )
    keep = (g > 0) & (g <= 1 / d_min) & (np.abs(eps) <= 3 * sigma)
    expected = {tuple(row) for row in grid[keep]}
    assert len(expected) > 50
    assert {tuple(row) for row in got.hkl} == expected


def radial_maximum(image: np.ndarray, radius: np.ndarray) -> float:
    bins = np.rint(radius).astype(int)
    total = np.bincount(bins.ravel(), weights=image.ravel())
    count = np.bincount(bins.ravel())
    profile = np.where(count > 0, total / np.maximum(count, 1), 0)
    profile[:20] = 0
    return float(np.argmax(profile))


@pytest.mark.parametrize(("clen", "energy"), [(0.075, 9500.0), (0.06, 12000.0)])
def test_water_ring_sits_at_the_water_scattering_angle(clen, energy):
    cfg = still_config(
        detector__clen_m=(clen, clen),
        beam__photon_energy_ev=(energy, energy),
        beam__polarisation=0.5,
        background__air_path_mm=(0.0, 0.0),
        detector__beamstop_radius_mm=0.0,
    )
    sim = Simulator(cfg, seed=3)
    frame = sim.simulate_frame(1, 0, keep_expected=True)
    n = sim.frame_shape[0]
    ss, fs = np.mgrid[0:n, 0:n]
    r_px = np.hypot(fs - (n / 2 - 0.5), ss - (n / 2 - 0.5))
    two_theta = np.arctan(r_px * PIXEL / clen)
    # Divide out solid angle (cos^3 2θ) and the unpolarised factor (1 + cos² 2θ)/2.
    flat = frame.expected_background / (np.cos(two_theta) ** 3 * (1 + np.cos(two_theta) ** 2) / 2)
    lam = HC / energy
    expected_two_theta = 2 * math.asin(2.0 * lam / (4 * math.pi))  # liquid water: q = 2.0 Å⁻¹ (d = 3.14 Å)
    expected_r = clen * math.tan(expected_two_theta) / PIXEL
    assert abs(radial_maximum(flat, r_px) - expected_r) <= 1.5


def flat_detector_config(**overrides) -> SimulationConfig:
    base = {
        "detector__size": 48,
        "detector__adu_per_photon": (1.0, 1.0),
        "detector__read_noise_adu": (0.0, 0.0),
        "detector__pedestal_adu": (0.0, 0.0),
        "detector__pedestal_panel_rms": 0.0,
        "detector__panel_gain_rms": 0.0,
        "detector__pixel_gain_rms": 0.0,
        "detector__hot_pixel_fraction": 0.0,
        "detector__dead_pixel_fraction": 0.0,
        "detector__beamstop_radius_mm": 0.0,
        "beam__photons_per_pulse": (2e11, 2e11),
        "background__streak_probability": 0.0,
    }
    base.update(overrides)
    return SimulationConfig().with_overrides(**base)


def test_photon_noise_variance_equals_mean():
    sim = Simulator(flat_detector_config(), seed=5)
    params = sim.draw_params(1, 0)
    frames = np.stack([sim.render(params, i).data for i in range(400)])
    expected = sim.render(params, 0, keep_expected=True).expected_photons
    assert 2.0 < expected.mean() < 200.0
    mean, var = frames.mean(axis=0), frames.var(axis=0, ddof=1)
    # Per-pixel mean matches the expectation, and the variance/mean ratio is 1 (Poisson).
    assert np.median(np.abs(mean - expected) / np.sqrt(expected / 400)) < 1.0
    ratio = var.sum() / mean.sum()
    assert abs(ratio - 1.0) < 0.03
    assert abs(np.median(var / mean) - 1.0) < 0.1


def test_gain_pedestal_and_saturation_are_applied():
    sim = Simulator(flat_detector_config(detector__max_adu=300.0), seed=6)
    params = sim.draw_params(1, 0)
    one = sim.render(params, 7).data
    assert 0 < one.max() < 300 / 3.5  # photons, far from saturation at gain 1
    three = sim.render(replace(params, adu_per_photon=3.5, pedestal_adu=12.0), 7).data
    unsat = one * 3.5 + 12.0 < 300
    np.testing.assert_allclose(three[unsat], np.rint(one[unsat] * 3.5 + 12.0))
    high = sim.render(replace(params, adu_per_photon=40.0), 7).data
    assert high.max() == 300.0
    np.testing.assert_array_equal(high[one * 40 >= 300], 300.0)


def test_spot_count_grows_with_crystal_size_and_fluence():
    sim = Simulator(still_config(), seed=13)
    params = lysozyme_params(sim, rotation((0.1, 0.9, 0.4), 12.0), size_um=1.0)
    by_size = [sim.render(replace(params, crystal_size_um=s), 0).n_spots for s in (0.4, 0.8, 1.6, 3.2)]
    by_fluence = [
        sim.render(replace(params, photons_per_pulse=params.photons_per_pulse * f), 0).n_spots
        for f in (0.1, 0.3, 1.0, 3.0)
    ]
    for counts in (by_size, by_fluence):
        assert all(a <= b for a, b in itertools.pairwise(counts))
        assert counts[-1] > counts[0] + 10


def test_requested_classes_and_bragg_signal_ordering():
    sim = Simulator(SimulationConfig(), seed=21, split="val")
    labels = [c for c in range(len(CLASS_NAMES)) for _ in range(4)]
    batch = sim.generate(labels)
    np.testing.assert_array_equal(batch.labels, labels)
    np.testing.assert_array_equal(batch.hit, np.asarray(labels) >= 2)
    lo, mid, hi = sim.config.classes.thresholds
    for label, n, bragg in zip(batch.labels, batch.n_spots, batch.bragg_mask, strict=True):
        assert (n == 0) if label < 2 else (lo <= n < {2: mid, 3: hi, 4: 10**9}[label])
        assert bragg.any() == (label >= 2)

    gain = np.array([p["adu_per_photon"] for p in batch.params])
    pedestal = np.array([p["pedestal_adu"] for p in batch.params])
    photons = np.array(
        [np.mean((d[m] - p0) / g) for d, m, p0, g in zip(batch.data, batch.mask, pedestal, gain, strict=True)]
    )
    # Measured on the images: X-ray signal separates blank from no_crystal, bright compact pixels
    # above the local background order the hits.
    spot_pixels = []
    for d, m in zip(batch.data, batch.mask, strict=True):
        resid = d - ndimage.uniform_filter(d, size=9)
        sigma = 1.4826 * np.median(np.abs(resid[m]))
        spot_pixels.append(int(((resid > 6 * sigma) & m).sum()))
    per_class = np.asarray(spot_pixels).reshape(len(CLASS_NAMES), -1).mean(axis=1)
    signal = photons.reshape(len(CLASS_NAMES), -1).mean(axis=1)
    bragg_photons = np.array([p["bragg_photons"] for p in batch.params])
    assert signal[0] < signal[1]
    assert per_class[1] < per_class[2] < per_class[3] < per_class[4]
    np.testing.assert_array_equal(bragg_photons > 0, batch.hit)


def test_rough_spot_profiles_keep_each_spots_photons():
    from sfx_cnnhit.simulate.render import SpotPatches, roughen

    owner = np.repeat(np.arange(3), 9)
    weight = np.tile(np.full(9, 1 / 9), 3)
    patches = SpotPatches(index=np.arange(27), weight=weight, owner=owner, peak_fraction=np.ones(27))
    rough = roughen(patches, 1.0, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(rough.owner, weights=rough.weight), 1.0)
    assert rough.weight.std() > 0.5 * rough.weight.mean()  # irregular, not flat any more
    np.testing.assert_allclose([rough.peak_fraction[owner == i].max() for i in range(3)], 1.0)
    assert roughen(patches, 0.0, np.random.default_rng(0)) is patches


def test_rough_profiles_change_spots_only_when_configured():
    smooth = SimulationConfig().with_overrides(detector__size=128)
    rough = smooth.with_overrides(crystal__profile_roughness=(1.0, 1.0))
    a, b, c = (Simulator(cfg, seed=3).generate([4]) for cfg in (smooth, smooth, rough))
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
