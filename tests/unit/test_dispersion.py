"""Built-in DIALS dispersion spot finder: criteria, spots, parameters, masks, resolution limits."""

import dataclasses
import sys

import numpy as np
import pytest

from sfx_cnnhit.detector import BadRegion, DetectorGeometry
from sfx_cnnhit.errors import ConfigError, InputError, NotAvailableError
from sfx_cnnhit.finders.base import HitRule, create_finder
from sfx_cnnhit.finders.dials import DIALS_PYTHON_ENV, DialsSpotFinder, dials_available
from sfx_cnnhit.finders.dispersion import (
    BIG,
    DEFAULT_HIT_RULE,
    DialsParams,
    DispersionSpotFinder,
    _box_sums,
    dials_preset,
    strong_pixels,
)

ALGORITHMS = ("dispersion", "dispersion_extended")


def poisson_frame(shape, background, spots=(), seed=0):
    """Poisson background plus Gaussian spots ``(fs, ss, photons)`` (sigma 0.7 px), float32 counts."""
    rng = np.random.default_rng(seed)
    ss, fs = np.mgrid[0 : shape[0], 0 : shape[1]]
    expected = np.full(shape, float(background))
    for fs0, ss0, photons in spots:
        g = np.exp(-((fs - fs0) ** 2 + (ss - ss0) ** 2) / (2 * 0.7**2))
        expected += photons * g / g.sum()
    return rng.poisson(expected).astype(np.float32)


def reference_strong(data, mask, params):
    """Literal per-pixel transcription of DIALS's criteria (loops; tiny frames only)."""
    v = data.astype(np.float64)
    n_ss, n_fs = v.shape
    ky, kx = params.kernel_size
    g = 1.0 if params.gain is None else params.gain

    def box(use, j, i, hy, hx):
        sl = (slice(max(j - hy, 0), min(j + hy, n_ss - 1) + 1), slice(max(i - hx, 0), min(i + hx, n_fs - 1) + 1))
        u = use[sl] & (v[sl] < BIG)
        return u.sum(), v[sl][u].sum(), (v[sl][u] ** 2).sum()

    dispersed = np.zeros(v.shape, bool)
    strong = np.zeros(v.shape, bool)
    for j in range(n_ss):
        for i in range(n_fs):
            m, x, y = box(mask, j, i, ky, kx)
            if mask[j, i] and m >= params.min_count and x >= 0:
                # index of dispersion above 1 + n_b sqrt(2 / (m - 1)), scaled by the gain
                dispersed[j, i] = m * y - x * x > g * x * (m - 1 + params.sigma_background * np.sqrt(2 * (m - 1)))
                above = m * v[j, i] - x > params.sigma_strong * np.sqrt(g * x * m)
                strong[j, i] = dispersed[j, i] and above and v[j, i] > params.global_threshold
    if params.algorithm == "dispersion":
        return strong
    e = min(ky, kx)
    core = np.zeros(v.shape, bool)
    for j in range(n_ss):
        for i in range(n_fs):
            near = dispersed[max(j - e + 1, 0) : j + e, max(i - e + 1, 0) : i + e]
            core[j, i] = near.all()
    background = mask & ~core
    final = np.zeros(v.shape, bool)
    for j in range(n_ss):
        for i in range(n_fs):
            m, x, _ = box(background, j, i, ky + 2, kx + 2)
            mean = x / m if m >= 2 else 0.0
            final[j, i] = (
                mask[j, i] and x >= 0 and core[j, i] and v[j, i] > params.global_threshold
                and v[j, i] >= mean + params.sigma_strong * np.sqrt(g * mean)
            )
    return final


def test_box_sums_clip_the_kernel_at_the_frame_edges():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 50, (7, 9)).astype(np.float64)
    got = _box_sums([a], 2, 3)[:, 0]
    for j in range(7):
        for i in range(9):
            assert got[j, i] == a[max(j - 2, 0) : j + 3, max(i - 3, 0) : i + 4].sum()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "overrides",
    [{}, {"gain": 0.5, "global_threshold": 12.0}, {"min_local": 0, "kernel_size": (1, 2)}, {"gain": 2.0}],
)
def test_vectorised_criteria_equal_a_literal_transcription(algorithm, overrides):
    spots = [(5.2, 6.1, 300), (17.0, 3.0, 80), (1.0, 14.5, 200), (20.3, 16.8, 40)]
    data = poisson_frame((20, 24), 4.0, spots, seed=2)
    data[10, 10] = BIG + 3  # excluded from the local sums, still thresholded itself
    data[0, :5] = -2.0
    mask = np.ones(data.shape, bool)
    mask[12:15, 3:6] = False
    params = DialsParams(algorithm=algorithm, **overrides)
    expected = reference_strong(data, mask, params)
    assert expected.any()
    np.testing.assert_array_equal(strong_pixels(data, mask, params), expected)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bright_spot_is_found_with_centroid_and_sums(algorithm):
    data = poisson_frame((64, 64), 2.0, [(40.3, 21.6, 2000)], seed=3)
    finder = DispersionSpotFinder(DialsParams(algorithm=algorithm, gain=2.0))
    peaks = finder.find_peaks(data)
    assert peaks.num_peaks == 1
    assert peaks.fs[0] == pytest.approx(40.3, abs=0.15)
    assert peaks.ss[0] == pytest.approx(21.6, abs=0.15)
    strong = finder.strong_pixels(data)
    assert peaks.num_pixels[0] == strong.sum()
    assert peaks.intensity[0] == pytest.approx(data[strong].sum())
    assert peaks.max_pixel_intensity[0] == data[strong].max()
    assert peaks.snr[0] == pytest.approx(np.sqrt(data[strong].sum() / 2.0), rel=1e-6)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("background", [0.3, 5.0, 80.0])
def test_flat_poisson_background_gives_no_spots(algorithm, background):
    frames = np.stack([poisson_frame((96, 96), background, seed=s) for s in range(3)])
    result = DispersionSpotFinder(DialsParams(algorithm=algorithm)).classify(frames)
    assert result.scores.sum() == 0
    assert not result.hits.any()


def test_global_threshold_removes_pixels_at_or_below_it():
    data = poisson_frame((48, 48), 1.0, [(24, 24, 900)], seed=4)
    third_brightest = float(np.sort(data.ravel())[-3])
    finder = DispersionSpotFinder(DialsParams(global_threshold=third_brightest - 1))
    assert finder.find_peaks(data).num_peaks == 1
    # only two pixels stay above the threshold: fewer than min_spot_size = 3
    assert DispersionSpotFinder(DialsParams(global_threshold=third_brightest)).find_peaks(data).num_peaks == 0


def test_spot_size_limits():
    data = np.ones((40, 40), np.float32)
    data[10:13, 10:13] = 100.0  # a 9-pixel spot
    data[30, 30] = 100.0  # a 1-pixel spot
    counts = {
        (1, 1000): 2,
        (3, 1000): 1,
        (10, 1000): 0,
        (1, 8): 1,
    }
    for (lo, hi), n in counts.items():
        params = DialsParams(algorithm="dispersion", min_spot_size=lo, max_spot_size=hi)
        assert DispersionSpotFinder(params).find_peaks(data).num_peaks == n, (lo, hi)


def test_spots_are_4_connected_like_dials():
    data = np.ones((30, 30), np.float32)
    data[10:12, 10:12] = 100.0
    data[12:14, 12:14] = 100.0  # touches the first square only at a corner
    params = DialsParams(algorithm="dispersion", min_spot_size=4)
    assert DispersionSpotFinder(params).find_peaks(data).num_peaks == 2


def test_kernel_size_and_min_local_at_the_frame_edge():
    data = poisson_frame((40, 40), 3.0, [(1.5, 20, 3000)], seed=5)  # a spot at the left edge
    default = DialsParams(algorithm="dispersion")
    strong_fs = np.nonzero(DispersionSpotFinder(default).strong_pixels(data))[1]
    assert strong_fs.min() < 3
    # min_local <= 0 needs the whole kernel inside the frame: nothing within nx = 3 pixels of the edge
    full = default.with_overrides(min_local=0)
    assert np.nonzero(DispersionSpotFinder(full).strong_pixels(data))[1].min() >= 3
    narrow = full.with_overrides(kernel_size=(3, 1))  # (ny, nx): only 1 pixel along fs
    strong_fs = np.nonzero(DispersionSpotFinder(narrow).strong_pixels(data))[1]
    assert strong_fs.min() == 1
    assert DispersionSpotFinder(narrow).find_peaks(data).num_peaks == 1


def test_static_and_per_frame_masks():
    data = poisson_frame((48, 48), 2.0, [(12, 12, 900), (35, 30, 900)], seed=6)
    static = np.ones(data.shape, bool)
    static[8:17, 8:17] = False
    finder = DispersionSpotFinder(mask=static)
    assert finder.find_peaks(data).num_peaks == 1
    frame_mask = np.ones((2, *data.shape), bool)
    frame_mask[0, 26:35, 31:40] = False
    frames = np.stack([data, data])
    assert finder.classify(frames, frame_mask).scores.tolist() == [0.0, 1.0]
    batch = finder.strong_pixels(frames, frame_mask)
    np.testing.assert_array_equal(batch[0], finder.strong_pixels(data, frame_mask[0]))
    assert not batch[0].any() and batch[1].any()
    with pytest.raises(InputError, match="does not match"):
        finder.find_peaks(data[:40])


def test_resolution_limits_from_geometry_and_from_a_map():
    geom = DetectorGeometry.simple((64, 64), beam_center=(31.5, 31.5), pixel_size_m=1e-4,
                                   clen_m=0.005, photon_energy_ev=12398.419843320026)  # 1 Å
    data = poisson_frame((64, 64), 1.0, [(31.5 + 28, 31.5, 900), (37.0, 31.5, 900)], seed=7)
    d = geom.resolution_map().astype(np.float64)
    d_outer, d_inner = d[31, 59], d[31, 37]  # about 2.0 Å and 9.1 Å
    counts = {}
    for d_min, d_max in [(None, None), (3.0, None), (None, 5.0), (1.0, 50.0)]:
        params = DialsParams(d_min=d_min, d_max=d_max)
        counts[d_min, d_max] = DispersionSpotFinder(params, geometry=geom).find_peaks(data).num_peaks
        assert DispersionSpotFinder(params, resolution_map=d).find_peaks(data).num_peaks == counts[d_min, d_max]
    assert d_outer < 3.0 and d_inner > 5.0
    assert counts == {(None, None): 2, (3.0, None): 1, (None, 5.0): 1, (1.0, 50.0): 2}
    with pytest.raises(ConfigError, match="resolution map"):
        DispersionSpotFinder(DialsParams(d_min=2.0))


def test_panels_are_thresholded_and_labelled_separately():
    data = np.ones((40, 40), np.float32)
    data[18:21, 17:23] = 50.0  # a 3x6 spot across the fs = 20 panel edge, brightest at fs 18 and 21
    data[19, [18, 21]] = 100.0
    params = DialsParams(algorithm="dispersion", min_spot_size=3)
    assert DispersionSpotFinder(params).find_peaks(data).num_peaks == 1
    two_panels = DetectorGeometry.simple((40, 40), asic_shape=(40, 20))
    peaks = DispersionSpotFinder(params, geometry=two_panels).find_peaks(data)
    assert sorted(peaks.fs.tolist()) == [18.0, 21.0]
    assert peaks.num_pixels.tolist() == [9.0, 9.0]


def test_geometry_bad_regions_are_masked():
    data = poisson_frame((48, 48), 2.0, [(12, 12, 900), (35, 30, 900)], seed=6)
    geom = DetectorGeometry.simple((48, 48))
    assert DispersionSpotFinder(geometry=geom).find_peaks(data).num_peaks == 2
    bad = dataclasses.replace(geom, bad_regions=(BadRegion("bad0", min_fs=8, max_fs=16, min_ss=8, max_ss=16),))
    peaks = DispersionSpotFinder(geometry=bad).find_peaks(data)
    assert peaks.num_peaks == 1 and peaks.fs[0] == pytest.approx(35, abs=0.3)


def test_big_pixels_stay_out_of_the_local_statistics():
    data = poisson_frame((40, 40), 2.0, [(20, 20, 900)], seed=8)
    data[20, 23] = BIG  # a saturated/flagged pixel next to the spot
    strong = DispersionSpotFinder(DialsParams(algorithm="dispersion")).strong_pixels(data)
    assert strong[19:22, 19:22].any()


def test_classify_scores_are_spot_counts_with_the_hit_rule():
    frames = np.stack(
        [poisson_frame((64, 64), 1.0, [(8 + 12 * (k % 5), 8 + 12 * (k // 5), 900) for k in range(n)], seed=n)
         for n in (0, 3, 15)]
    )
    result = DispersionSpotFinder().classify(frames)
    assert result.scores.tolist() == [0.0, 3.0, 15.0]
    assert result.hits.tolist() == [False, False, True]  # default rule: n_spots >= 14
    assert DEFAULT_HIT_RULE.min_peaks == 14
    strict = DispersionSpotFinder(hit_rule=HitRule(min_peaks=3)).classify(frames)
    assert strict.hits.tolist() == [False, True, True]
    assert [p.num_peaks for p in result.peaks] == [0, 3, 15]


def test_registered_as_dispersion():
    geometry = DetectorGeometry.simple((32, 48))
    mask = np.ones((32, 48), bool)
    mask[0] = False
    finder = create_finder("dispersion", params=DialsParams(algorithm="dispersion"), detector=geometry, mask=mask,
                           hit_rule=HitRule(min_peaks=3))
    assert isinstance(finder, DispersionSpotFinder)
    assert finder.name == "dispersion"
    assert finder.geometry is geometry and finder.hit_rule == HitRule(min_peaks=3)
    assert finder.mask is not None and finder.mask.tolist() == mask.tolist()


def test_params_from_values():
    p = DialsParams.from_values({"gain": "0.5", "kernel_size": "2,1", "min_local": "0", "d_min": "null",
                                 "algorithm": "dispersion"}, source="--finder-param")
    assert p == DialsParams(gain=0.5, kernel_size=(2, 1), min_local=0, d_min=None, algorithm="dispersion")
    assert DialsParams.from_values({"kernel_size": [3, 2], "sigma_strong": 4}, source="yaml").kernel_size == (3, 2)
    for values, message in [
        ({"n_sigma_s": "3"}, "--finder-param: unknown DIALS parameter.*n_sigma_s"),
        ({"gain": "lots"}, "--finder-param: invalid value 'lots' for gain"),
        ({"kernel_size": "3"}, "--finder-param: DIALS kernel_size must be two half-sizes"),
        ({"min_spot_size": "2.5"}, "--finder-param: invalid value '2.5' for min_spot_size"),
        ({"algorithm": "magic"}, "--finder-param: DIALS algorithm must be one of"),
    ]:
        with pytest.raises(ConfigError, match=f"^{message}"):
            DialsParams.from_values(values, source="--finder-param")


def test_params_defaults_validation_and_overrides():
    p = DialsParams()
    assert (p.gain, p.sigma_background, p.sigma_strong, p.kernel_size, p.min_local, p.global_threshold) == (
        None, 6.0, 3.0, (3, 3), 2, 0.0)
    assert (p.min_spot_size, p.max_spot_size, p.max_separation, p.algorithm) == (3, 1000, 2.0, "dispersion_extended")
    assert DialsParams(min_local=0).min_count == 49
    assert p.with_overrides(kernel_size=[2, 1]).kernel_size == (2, 1)
    for bad in [
        {"gain": 0.0}, {"sigma_strong": -1.0}, {"kernel_size": (0, 3)}, {"kernel_size": 3},
        {"min_local": 1}, {"min_local": 50},
        {"global_threshold": -1.0}, {"min_spot_size": 5, "max_spot_size": 5}, {"d_min": 3.0, "d_max": 2.0},
        {"algorithm": "radial_profile"}, {"max_separation": -1.0},
    ]:
        with pytest.raises(ConfigError):
            DialsParams(**bad)
    with pytest.raises(ConfigError, match="unknown DIALS parameter"):
        p.with_overrides(n_sigma_s=3)


def test_seed_table6_presets():
    params, rule = dials_preset("ke2018_ln83")
    assert (params.gain, params.global_threshold, params.sigma_strong, params.min_spot_size) == (0.27, 200.0, 3.0, 3)
    assert rule.min_peaks == 14
    params, rule = dials_preset("ke2018_ln84")
    assert (params.gain, rule.min_peaks) == (0.31, 29)
    with pytest.raises(ConfigError, match="unknown DIALS preset"):
        dials_preset("ln85")


@pytest.mark.parametrize("python", ["missing", "without-dials"])
def test_real_dials_backend_says_how_to_install_when_absent(monkeypatch, tmp_path, python):
    interpreter = str(tmp_path / "no-python") if python == "missing" else sys.executable
    monkeypatch.setenv(DIALS_PYTHON_ENV, interpreter)
    assert not dials_available()
    with pytest.raises(NotAvailableError, match=r"apt-get install -y dials.*'dispersion'"):
        DialsSpotFinder()
