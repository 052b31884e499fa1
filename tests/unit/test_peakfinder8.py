"""Our peakfinder8: measurements of known spots, the algorithm's rules, the OM-compatible class."""

from dataclasses import replace

import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry, PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.finders.base import HitFinder, HitRule, create_finder
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder, radius_map_from_beam_center
from sfx_cnnhit.plugins.om import Peakfinder8PeakDetection
from tests.synthetic import make_frame

PARAMS = Peakfinder8Params(adc_threshold=50.0, minimum_snr=5.0, min_pixel_count=1, max_pixel_count=100,
                           local_bg_radius=3)
SPOT = np.array([[100.0, 200.0, 100.0], [200.0, 600.0, 300.0], [100.0, 200.0, 100.0]])


def noisy_background(shape, seed=0):
    return (10.0 + np.random.default_rng(seed).normal(0.0, 1.0, shape)).astype(np.float32)


def coarse_radius(shape):
    """Radius / 4: coarse radial bins, so that each holds hundreds of pixels even on a tiny frame."""
    return radius_map_from_beam_center(shape) / 4


def finder(shape, params=PARAMS, layout=None, radius=None, **kwargs):
    radius = coarse_radius(shape) if radius is None else radius
    return Peakfinder8Finder(params, radius_map=radius, layout=layout, **kwargs)


def test_known_spot_centroid_intensity_npix_and_true_snr():
    data = noisy_background((64, 64))
    data[30:33, 20:23] += SPOT.astype(np.float32)
    peaks = finder(data.shape).find_peaks(data)
    assert peaks.num_peaks == 1
    # Centroid: weighted by the raw pixel values (as in the reference programs).
    block = data[30:33, 20:23].astype(np.float64)
    ss, fs = np.mgrid[30:33, 20:23]
    assert peaks.fs[0] == pytest.approx((block * fs).sum() / block.sum(), abs=1e-4)
    assert peaks.ss[0] == pytest.approx((block * ss).sum() / block.sum(), abs=1e-4)
    assert peaks.num_pixels[0] == 9
    # Local background: below-threshold pixels within 2 * local_bg_radius of the rounded centroid.
    c_fs, c_ss = int(np.rint(peaks.fs[0])), int(np.rint(peaks.ss[0]))
    dss, dfs = np.mgrid[-6:6, -6:6]
    ring = (dss**2 + dfs**2 <= 36) & ~((np.abs(dss + c_ss - 31) <= 1) & (np.abs(dfs + c_fs - 21) <= 1))
    bg = data[c_ss - 6:c_ss + 6, c_fs - 6:c_fs + 6][ring].astype(np.float64)
    intensity = (block - bg.mean()).sum()
    assert peaks.intensity[0] == pytest.approx(intensity, rel=1e-4)
    assert peaks.max_pixel_intensity[0] == pytest.approx(block.max() - bg.mean(), rel=1e-4)
    assert peaks.snr[0] == pytest.approx(intensity / bg.std(), rel=1e-3)  # the true SNR, not sigma


def test_border_pixels_never_seed_but_join_a_peak():
    data = noisy_background((32, 32))
    data[0, 10:12] = 500.0  # on the border row only: never a peak
    data[0:2, 20:22] = 500.0  # touches the interior: found, border pixels included
    peaks = finder(data.shape).find_peaks(data)
    assert peaks.num_peaks == 1
    assert peaks.num_pixels[0] == 4
    assert peaks.fs[0] == pytest.approx(20.5, abs=0.01)


def test_components_are_confined_to_their_asic():
    data = noisy_background((64, 128))
    data[10:14, 62:66] = 500.0  # straddles the border between two 64-pixel-wide ASICs
    whole = finder(data.shape).find_peaks(data)
    split = finder(data.shape, layout=PanelLayout.asic_grid(asic_nx=64, asic_ny=64, nasics_x=2)).find_peaks(data)
    assert whole.num_peaks == 1 and whole.num_pixels[0] == 16
    assert split.num_peaks == 2
    assert sorted(split.num_pixels) == [8, 8]
    assert sorted(np.round(split.fs, 3)) == [62.5, 64.5]


def test_pixel_count_limits():
    data = noisy_background((64, 64))
    for size, fs in ((1, 5), (4, 15), (9, 30), (25, 45)):
        side = int(np.sqrt(size))
        data[8:8 + side, fs:fs + side] = 400.0
    params = Peakfinder8Params(adc_threshold=50.0, min_pixel_count=2, max_pixel_count=10, local_bg_radius=3)
    peaks = finder(data.shape, params).find_peaks(data)
    assert sorted(peaks.num_pixels) == [4, 9]


def test_bad_pixel_map_and_per_frame_mask():
    data = noisy_background((64, 64))
    data[30:33, 20:23] += SPOT.astype(np.float32)
    data[10:13, 40:43] += SPOT.astype(np.float32)
    good = np.ones(data.shape, bool)
    good[30:33, 20:23] = False
    assert finder(data.shape, bad_pixel_map=good).find_peaks(data).num_peaks == 1
    frame_mask = np.ones(data.shape, bool)
    frame_mask[11, 41] = False
    peaks = finder(data.shape).find_peaks_masked(data, frame_mask)
    assert sorted(peaks.num_pixels) == [8, 9]


def test_resolution_limits():
    shape = (401, 401)
    data = noisy_background(shape)
    for r in (50, 150, 190):
        data[199:202, 200 + r - 1:200 + r + 2] += SPOT.astype(np.float32)
    params = Peakfinder8Params(adc_threshold=50.0, min_pixel_count=1, local_bg_radius=3, min_res=100, max_res=180)
    peaks = finder(shape, params, radius=radius_map_from_beam_center(shape)).find_peaks(data)
    assert peaks.num_peaks == 1
    assert peaks.fs[0] == pytest.approx(350, abs=0.5)


def test_max_num_peaks_keeps_the_first_in_scan_order():
    frame = make_frame(np.random.default_rng(3), (128, 128), n_spots=20)
    params = Peakfinder8Params(adc_threshold=60.0, min_pixel_count=2, local_bg_radius=3)
    full = finder(frame.data.shape, params).find_peaks(frame.data)
    limited = finder(frame.data.shape, replace(params, max_num_peaks=5)).find_peaks(frame.data)
    assert full.num_peaks > 5 and limited.num_peaks == 5
    np.testing.assert_array_equal(limited.fs, full.fs[:5])


def test_empty_or_constant_bins_never_yield_candidates():
    zeros = np.zeros((32, 32), np.float32)
    f = finder(zeros.shape)
    offset, threshold = f.radial_thresholds(zeros)
    assert np.all(threshold == np.finfo(np.float32).max) and np.all(offset == 0)
    radius = radius_map_from_beam_center((32, 32))
    data = noisy_background((32, 32))
    offset, threshold = finder(data.shape, radius=radius, bad_pixel_map=radius > 5).radial_thresholds(data)
    assert np.all(threshold[:5] == np.finfo(np.float32).max) and np.all(offset[:5] == 0)
    assert np.all(threshold[8:20] == PARAMS.adc_threshold)


def test_stale_work_list_quirk_is_reproduced_and_can_be_switched_off():
    # A one-pixel component in ASIC 1 probes a stale work-list entry left by ASIC 0's 3x3 peak
    # (its second pixel, local fs 10 ss 9) and absorbs the unconnected spot near that position.
    data = noisy_background((32, 64), seed=1)
    data[9:12, 9:12] = 1000.0
    data[3, 35] = 1000.0
    data[10:12, 43:45] = 1000.0
    radius = radius_map_from_beam_center(data.shape) / 20
    layout = PanelLayout.asic_grid(asic_nx=32, asic_ny=32, nasics_x=2)
    params = Peakfinder8Params(adc_threshold=50.0, min_pixel_count=1, local_bg_radius=2)
    quirky = Peakfinder8Finder(params, radius_map=radius, layout=layout).find_peaks(data)
    clean = Peakfinder8Finder(replace(params, om_stale_probe=False), radius_map=radius, layout=layout).find_peaks(data)
    assert sorted(quirky.num_pixels) == [5, 9]
    assert sorted(clean.num_pixels) == [1, 4, 9]


def test_inputs_are_validated_and_not_modified():
    data = noisy_background((32, 32))
    radius = coarse_radius(data.shape)
    copy = data.copy()
    f = Peakfinder8Finder(PARAMS, radius_map=radius)
    f.find_peaks(data)
    np.testing.assert_array_equal(data, copy)
    assert radius.flags.writeable
    with pytest.raises(InputError, match="frame shape"):
        f.find_peaks(np.zeros((16, 32), np.float32))
    with pytest.raises(InputError, match="mask shape"):
        f.find_peaks_masked(data, np.ones((16, 32), bool))
    with pytest.raises(ConfigError, match="radius map"):
        Peakfinder8Finder(PARAMS, radius_map=radius, layout=PanelLayout.asic_grid(asic_nx=16, asic_ny=16))
    with pytest.raises(ConfigError, match="distances in pixels"):
        Peakfinder8Finder(PARAMS, radius_map=radius * 1e9)
    with pytest.raises(ConfigError, match="do not tile"):
        PanelLayout.from_asic_shape((32, 32), (10, 16))
    with pytest.raises(ConfigError, match="missing 'nasics_y'"):
        PanelLayout.from_layout_info({"asic_nx": 32, "asic_ny": 32, "nasics_x": 1})
    with pytest.raises(ConfigError, match="nasics_x must be a positive integer"):
        PanelLayout.asic_grid(asic_nx=32, asic_ny=32, nasics_x=True)
    with pytest.raises(ConfigError, match="too small"):
        PanelLayout.asic_grid(asic_nx=2, asic_ny=32)


def test_panel_layout_is_the_asic_grid_of_om_layout_info():
    """One layout type: OM's ``layout_info`` in and out, the CNN's panel rectangles, a geometry's panels."""
    info = {"asic_nx": 48, "asic_ny": 32, "nasics_x": 2, "nasics_y": 3}
    layout = PanelLayout.from_layout_info(info, adu_per_photon=7.0)
    assert layout == PanelLayout.regular(3, 2, 32, 48, adu_per_photon=7.0)
    assert layout.layout_info() == info and layout.slab_shape == (96, 96)
    assert (layout.asic_nx, layout.asic_ny, layout.nasics_x, layout.nasics_y) == (48, 32, 2, 3)
    assert PanelLayout.from_layout_info(layout) == PanelLayout.asic_grid(48, 32, 2, 3)  # the grid, no gain
    geometry = DetectorGeometry.simple((96, 96), asic_shape=(32, 48))
    assert PanelLayout.from_geometry(geometry).layout_info() == geometry.layout_info() == info
    with pytest.raises(ConfigError, match="regular grid"):
        PanelLayout(((0, 32, 0, 48), (32, 64, 0, 40))).layout_info()


def test_params_validation_messages():
    with pytest.raises(ConfigError, match="hitfinderMaxPixCount=0"):
        Peakfinder8Params(max_pixel_count=0)
    with pytest.raises(ConfigError, match="max_res"):
        Peakfinder8Params(min_res=100, max_res=50)
    with pytest.raises(ConfigError, match="local_bg_radius"):
        Peakfinder8Params(local_bg_radius=0)
    with pytest.raises(ConfigError, match="go together"):
        Peakfinder8Params(bad_pixel_map_filename="mask.h5")


def test_registry_classify_and_hit_rule():
    frames = np.stack([make_frame(np.random.default_rng(i), (96, 96), n_spots=n).data for i, n in enumerate((0, 12))])
    f = create_finder("peakfinder8", params=PARAMS, detector=DetectorGeometry.simple((96, 96)),
                      hit_rule=HitRule(min_peaks=5))
    assert isinstance(f, HitFinder)
    result = f.classify(frames)
    assert result.scores[0] < 5 <= result.scores[1]
    assert result.hits.tolist() == [False, True]
    assert [p.num_peaks for p in result.peaks] == result.scores.tolist()


def test_params_from_values():
    p = Peakfinder8Params.from_values({"adc_threshold": "50", "max_res": None, "local_bg_radius": 4.0,
                                       "om_stale_probe": "no"}, source="--finder-param")
    assert p == Peakfinder8Params(adc_threshold=50.0, local_bg_radius=4, om_stale_probe=False)
    for values, message in [
        ({"threshold": "50"}, r"--finder-param: unknown peakfinder8 parameter\(s\) threshold \(known: adc_threshold"),
        ({"min_pixel_count": "two"}, "--finder-param: invalid value 'two' for min_pixel_count"),
        ({"minimum_snr": "-1"}, "--finder-param: peakfinder8: minimum_snr must be >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Peakfinder8Params.from_values(values, source="--finder-param")


def test_for_detector_is_from_geometry_with_the_mask_as_bad_pixel_map():
    geometry = DetectorGeometry.simple((64, 128), asic_shape=(64, 64))
    mask = np.ones((64, 128), bool)
    mask[:, :3] = False
    f = create_finder("peakfinder8", params={"adc_threshold": 100}, detector=geometry, mask=mask)
    g = Peakfinder8Finder.from_geometry(geometry, Peakfinder8Params(adc_threshold=100.0), bad_pixel_map=mask)
    assert isinstance(f, Peakfinder8Finder)
    assert f.params == g.params and f.layout == g.layout
    assert np.array_equal(f.radius_map, g.radius_map) and np.array_equal(f.radial_sample[0], g.radial_sample[0])


def test_from_geometry_and_from_beam_center_describe_the_same_detector():
    geometry = DetectorGeometry.simple((64, 128), asic_shape=(64, 64), beam_center=(63.5, 31.5))
    f = Peakfinder8Finder.from_geometry(geometry, PARAMS)
    g = Peakfinder8Finder.from_beam_center((64, 128), PARAMS, beam_center=(63.5, 31.5), asic_shape=(64, 64))
    assert f.layout == g.layout == PanelLayout.asic_grid(asic_nx=64, asic_ny=64, nasics_x=2, nasics_y=1)
    np.testing.assert_allclose(f.radius_map, g.radius_map, atol=1e-4)
    assert g.radius_map[31, 63] == pytest.approx(np.sqrt(0.5), abs=1e-6)


OM_GROUP = {"max_num_peaks": 2048, "adc_threshold": 50.0, "minimum_snr": 5.0, "min_pixel_count": 1,
            "max_pixel_count": 100, "local_bg_radius": 3, "min_res": 0, "max_res": 1000,
            "bad_pixel_map_filename": None, "bad_pixel_map_hdf5_path": None}


def test_om_compatible_class_matches_finder_and_setters_take_effect():
    frame = make_frame(np.random.default_rng(5), (128, 128), n_spots=15)
    om_like = Peakfinder8PeakDetection(radius_pixel_map=frame.radius,
                                       layout_info={"asic_nx": 64, "asic_ny": 128, "nasics_x": 2, "nasics_y": 1},
                                       crystallography_parameters=OM_GROUP)
    ours = Peakfinder8Finder(PARAMS, radius_map=frame.radius, layout=PanelLayout.asic_grid(64, 128, 2, 1))
    peaks = om_like.find_peaks(data=frame.data)
    expected = ours.find_peaks(frame.data)
    assert peaks["num_peaks"] == expected.num_peaks > 0
    assert peaks["fs"] == expected["fs"] and peaks["snr"] == expected["snr"]

    om_like.set_min_pixel_count(min_pixel_count=3)
    assert om_like.get_min_pixel_count() == 3
    assert min(om_like.find_peaks(data=frame.data).num_pixels) >= 3
    om_like.set_max_res(30)
    assert om_like.get_max_res() == 30
    inner = om_like.find_peaks(data=frame.data)
    assert inner.num_peaks > 0 and np.all(np.hypot(inner.fs - 63.5, inner.ss - 63.5) < 31)
    om_like.set_max_res(1000)
    om_like.set_bad_pixel_map(np.zeros(frame.data.shape, np.int8))
    assert om_like.find_peaks(data=frame.data).num_peaks == 0
    om_like.set_bad_pixel_map(None)
    om_like.set_adc_thresh(adc_thresh=1e9)
    assert om_like.get_adc_thresh() == 1e9 and om_like.find_peaks(data=frame.data).num_peaks == 0
    om_like.set_layout_info({"asic_nx": 128, "asic_ny": 128, "nasics_x": 1, "nasics_y": 1})
    assert om_like.get_layout_info()["nasics_x"] == 1
    with pytest.raises(ConfigError, match="unknown key 'threshold'"):
        Peakfinder8PeakDetection(radius_pixel_map=frame.radius, layout_info=om_like.get_layout_info(),
                                 crystallography_parameters={**OM_GROUP, "threshold": 3})



def test_from_geometry_takes_a_gapped_module_slab_as_one_asic():
    """Pilatus modules with gaps in one slab are no regular ASIC grid: OM treats the slab as one ASIC."""
    from sfx_cnnhit.simulate.detectors import build_detector

    geometry = build_detector("pilatus6m", size=1000).geometry
    with pytest.raises(ConfigError, match="regular grid"):
        geometry.layout_info()
    f = Peakfinder8Finder.from_geometry(geometry, PARAMS)
    ss, fs = geometry.slab_shape
    assert f.layout == PanelLayout.asic_grid(asic_nx=fs, asic_ny=ss, nasics_x=1, nasics_y=1)
    assert f.radius_map.shape == (ss, fs)
