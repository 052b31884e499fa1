"""Our peakfinder8 against OM 23.8.3's compiled one (``pip install --no-deps ondamonitor==23.8.3``).

Over 100+ generated frames on four ASIC layouts, with masks, resolution limits, fast mode and five
parameter sets: equal peak counts on >= 99 % of frames; on those, centroids within 0.05 px and
intensities, maximum pixels and SNRs within 0.1 % (our ``snr`` against index 7 of OM's tuple,
the true SNR; OM's Python class reports index 6, the local sigma, under that name).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.plugins.om import Peakfinder8PeakDetection
from tests.synthetic import make_frame

pytestmark = pytest.mark.oracle
om_core = pytest.importorskip("om.algorithms._crystallography", reason="OM's compiled peakfinder8 not installed")

CENTROID_TOL_PX = 0.05
RELATIVE_TOL = 1e-3
MIN_COUNT_AGREEMENT = 0.99

PARAMETER_SETS = {
    "crystfel-like": Peakfinder8Params(adc_threshold=100.0, minimum_snr=5.0, min_pixel_count=2,
                                       max_pixel_count=200, local_bg_radius=3),
    "om-example": Peakfinder8Params(adc_threshold=50.0, minimum_snr=4.0, min_pixel_count=1,
                                    max_pixel_count=30, local_bg_radius=4),
    "tight": Peakfinder8Params(adc_threshold=30.0, minimum_snr=6.0, min_pixel_count=3, max_pixel_count=12,
                               local_bg_radius=2),
    "noise-level": Peakfinder8Params(adc_threshold=0.0, minimum_snr=3.0, min_pixel_count=1,
                                     max_pixel_count=50, local_bg_radius=3),
    "truncated": Peakfinder8Params(adc_threshold=60.0, minimum_snr=5.0, min_pixel_count=2,
                                   max_pixel_count=100, local_bg_radius=3, max_num_peaks=10),
}

LAYOUTS = {
    "1x1 of 512x512": (PanelLayout.asic_grid(512, 512, 1, 1), 40),
    "2x2 of 128x128": (PanelLayout.asic_grid(128, 128, 2, 2), 40),
    "CSPAD-like 8x4 of 194x185": (PanelLayout.asic_grid(194, 185, 8, 4), 12),
    "16 modules of 512x128": (PanelLayout.asic_grid(512, 128, 1, 16), 12),
}


@dataclass
class Agreement:
    frames: int = 0
    equal_counts: int = 0
    peaks: int = 0
    max_centroid_px: float = 0.0
    max_relative: float = 0.0

    def add(self, ours, theirs) -> None:
        """Compare our PeakList with OM's tuple for one frame."""
        self.frames += 1
        if ours.num_peaks != len(theirs[0]):
            return
        self.equal_counts += 1
        self.peaks += ours.num_peaks
        if not ours.num_peaks:
            return
        fs, ss, intensity, _, npix, max_i, _, snr = (np.asarray(x, np.float64) for x in theirs)
        np.testing.assert_array_equal(ours.num_pixels, npix)
        centroid = max(np.abs(ours.fs - fs).max(), np.abs(ours.ss - ss).max())
        relative = max(
            (np.abs(mine - ref) / np.maximum(np.abs(ref), 1.0)).max()
            for mine, ref in ((ours.intensity, intensity), (ours.max_pixel_intensity, max_i), (ours.snr, snr))
        )
        self.max_centroid_px = max(self.max_centroid_px, float(centroid))
        self.max_relative = max(self.max_relative, float(relative))


def om_peakfinder8(finder: Peakfinder8Finder, data: np.ndarray, good: np.ndarray | None) -> tuple:
    """OM's compiled peakfinder8 with the mask OM's class would build (and our fast-mode sample)."""
    p, lay, radius = finder.params, finder.layout, finder.radius_map
    mask = np.ones(radius.shape, bool) if good is None else good.copy()
    mask &= ~(radius < p.min_res)
    if p.max_res is not None:
        mask &= ~(radius > p.max_res)
    pidx, rbin = finder.radial_sample if p.fast_mode else (None, None)
    return om_core.peakfinder_8(
        p.max_num_peaks, np.ascontiguousarray(data, np.float32), mask.astype(np.int8), radius.copy(),
        0 if pidx is None else int(pidx.size), pidx, rbin, int(p.fast_mode),
        lay.asic_nx, lay.asic_ny, lay.nasics_x, lay.nasics_y, p.adc_threshold, p.minimum_snr,
        p.min_pixel_count, p.max_pixel_count, p.local_bg_radius,
    )


def frame_variants(rng: np.random.Generator, layout: PanelLayout, index: int):
    """A frame, a bad-pixel map (or None) and resolution limits, varied with ``index``."""
    shape = layout.slab_shape
    beam = (shape[1] / 2 + rng.uniform(-20, 20), shape[0] / 2 + rng.uniform(-20, 20))
    n_spots = int(rng.choice([0, 15, 60, 150]))
    gain = float(rng.choice([1.0, 2.5]))
    frame = make_frame(rng, shape, n_spots=n_spots, background=float(rng.uniform(5, 40)),
                       read_noise=float(rng.uniform(1, 5)), adu_per_photon=gain, beam_center=beam,
                       spot_sigma=float(rng.uniform(0.6, 1.5)))
    data = frame.data.copy()
    hot = rng.integers(0, data.size, 20)
    data.flat[hot] += rng.uniform(200, 2000, hot.size).astype(np.float32)
    good = None
    limits: dict[str, float | None] = {}
    kind = index % 4
    if kind == 1:
        good = rng.random(shape) > 0.02
        good[:, int(rng.integers(0, shape[1]))] = False
    elif kind == 2:
        limits = {"min_res": 20.0, "max_res": float(0.8 * frame.radius.max())}
    elif kind == 3:
        good = np.ones(shape, bool)
        good[: layout.asic_ny, : layout.asic_nx] = False
    return data, frame.radius, good, limits


def test_peakfinder8_matches_om():
    rng = np.random.default_rng(2024)
    names = list(PARAMETER_SETS)
    total = Agreement()
    report = []
    for layout_name, (layout, n_frames) in LAYOUTS.items():
        agreement = Agreement()
        for i in range(n_frames):
            data, radius, good, limits = frame_variants(rng, layout, i)
            params = replace(PARAMETER_SETS[names[i % len(names)]], **limits)
            finder = Peakfinder8Finder(params, radius_map=radius, layout=layout, bad_pixel_map=good)
            ours, theirs = finder.find_peaks(data), om_peakfinder8(finder, data, good)
            agreement.add(ours, theirs)
            total.add(ours, theirs)
        report.append(f"{layout_name}: {agreement}")
        assert agreement.peaks > 5 * n_frames, report[-1]
    print("\n" + "\n".join([*report, f"all: {total}"]))
    assert total.frames >= 100
    assert total.equal_counts >= MIN_COUNT_AGREEMENT * total.frames, report
    assert total.max_centroid_px <= CENTROID_TOL_PX, report
    assert total.max_relative <= RELATIVE_TOL, report


def test_fast_mode_matches_om_given_the_same_sample():
    rng = np.random.default_rng(11)
    layout = PanelLayout.asic_grid(256, 256, 2, 1)
    agreement = Agreement()
    for i in range(12):
        data, radius, good, limits = frame_variants(rng, layout, i)
        params = replace(PARAMETER_SETS["crystfel-like"], fast_mode=True,
                         number_of_pixel_per_bin_in_radial_statistics=50, **limits)
        finder = Peakfinder8Finder(params, radius_map=radius, layout=layout, bad_pixel_map=good)
        agreement.add(finder.find_peaks(data), om_peakfinder8(finder, data, good))
    assert agreement.equal_counts >= MIN_COUNT_AGREEMENT * agreement.frames and agreement.peaks > 0
    assert agreement.max_centroid_px <= CENTROID_TOL_PX and agreement.max_relative <= RELATIVE_TOL


def test_om_class_is_a_drop_in_except_for_snr(monkeypatch):
    monkeypatch.setattr(np, "float_", np.float64, raising=False)  # OM 23.8.3 predates numpy 2
    om_crystallography = pytest.importorskip("om.algorithms.crystallography")
    frame = make_frame(np.random.default_rng(2), (256, 256), n_spots=40)
    kwargs = {
        "radius_pixel_map": frame.radius,
        "layout_info": {"asic_nx": 128, "asic_ny": 256, "nasics_x": 2, "nasics_y": 1},
        "crystallography_parameters": {
            "max_num_peaks": 2048, "adc_threshold": 60.0, "minimum_snr": 5.0, "min_pixel_count": 2,
            "max_pixel_count": 40, "local_bg_radius": 3, "min_res": 10, "max_res": 120,
            "bad_pixel_map_filename": None, "bad_pixel_map_hdf5_path": None,
        },
    }
    theirs = om_crystallography.Peakfinder8PeakDetection(**kwargs).find_peaks(data=frame.data)
    ours = Peakfinder8PeakDetection(**kwargs).find_peaks(data=frame.data)
    assert ours["num_peaks"] == theirs["num_peaks"] > 5
    for key in ("fs", "ss", "intensity", "num_pixels", "max_pixel_intensity"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=RELATIVE_TOL, atol=1e-6)
    true_snr = np.asarray(ours["intensity"]) / np.asarray(theirs["snr"])  # OM's "snr" is the local sigma
    np.testing.assert_allclose(ours["snr"], true_snr, rtol=RELATIVE_TOL)
