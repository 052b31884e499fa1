"""The CNN hit finder: OM-compatible construction, veto semantics, peaks on hits only, `reduce`."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.finders.peakfinder8 import radius_map_from_beam_center
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce
from sfx_cnnhit.plugins.om import Peakfinder8PeakDetection
from tests.synthetic import make_frame

SHAPE = (64, 96)
OM_PARAMS = {
    "max_num_peaks": 2048,
    "adc_threshold": 100.0,
    "minimum_snr": 5.0,
    "min_pixel_count": 1,
    "max_pixel_count": 30,
    "local_bg_radius": 3,
    "min_res": 0,
    "max_res": 1000,
}
LAYOUT = {"asic_nx": 48, "asic_ny": 32, "nasics_x": 2, "nasics_y": 2}


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    return np.stack([make_frame(rng, SHAPE, n_spots=12 if i % 2 else 0).data for i in range(6)]).astype(np.float32)


def _om_style_script(detection_class, frames, **extra):
    """A reduction loop written against OM's Peakfinder8PeakDetection (min < n < max, as OM)."""
    detection = detection_class(
        radius_pixel_map=radius_map_from_beam_center(SHAPE),
        layout_info=LAYOUT,
        crystallography_parameters=OM_PARAMS,
        **extra,
    )
    hits = []
    for i, frame in enumerate(frames):
        peak_list = detection.find_peaks(data=frame)
        if 3 < len(peak_list["intensity"]) < 5000:
            hits.append((i, peak_list["num_peaks"], peak_list["fs"]))
    return hits


def test_om_script_runs_with_one_import_and_one_config_change(model_path, frames):
    om_hits = _om_style_script(Peakfinder8PeakDetection, frames)
    assert om_hits, "the test frames must contain peakfinder8 hits"
    # threshold 0 lets every frame through the veto, so the peaks are peakfinder8's
    cnn_hits = _om_style_script(CnnHitFinder, frames, model=model_path, threshold=0.0)
    assert cnn_hits == om_hits
    # threshold above any probability vetoes everything: empty peak lists, no hits
    assert _om_style_script(CnnHitFinder, frames, model=model_path, threshold=1.0) == []


def test_classify_scores_and_peaks_only_on_hits(model_path, frames):
    finder = CnnHitFinder(model=model_path, threshold=0.5, hot_pixel_map=False)  # same masks in batch and alone
    result = finder.classify(frames)
    assert result.scores.shape == (6,) and np.all((result.scores >= 0) & (result.scores <= 1))
    np.testing.assert_array_equal(result.hits, result.scores >= 0.5)
    for hit, peaks in zip(result.hits, result.peaks, strict=True):
        if not hit:
            assert peaks.num_peaks == 0
    # the same frames one by one give the same probabilities as the batch
    single = np.array([finder.hit_probability(f)[0] for f in frames])
    np.testing.assert_allclose(single, result.scores, rtol=1e-5, atol=1e-6)
    peaks = finder.with_threshold(0.0).find_peaks(frames[1])
    assert peaks.hit_score == pytest.approx(result.scores[1], rel=1e-5)
    assert peaks.as_om_dict()["hit_score"] == peaks.hit_score
    with pytest.raises(ConfigError):
        CnnHitFinder(model=model_path, threshold=1.5)


@pytest.mark.parametrize("hot_pixel_map", [True, False])
def test_hot_pixels_learned_from_the_frames_shown_are_masked(model_path, frames, hot_pixel_map):
    """Two static one-pixel spikes in every frame are peaks of every frame unless the finder learns
    them (from the batch itself: four frames are enough); one frame at a time, from the fourth on."""
    hot = [(10, 20), (50, 70)]
    spiked = frames.copy()
    for ss, fs in hot:
        spiked[:, ss, fs] += 2000.0
    om_args = {"radius_pixel_map": radius_map_from_beam_center(SHAPE), "layout_info": LAYOUT,
               "crystallography_parameters": OM_PARAMS}

    def at_hot(peaks) -> set[tuple[int, int]]:
        return {(round(ss), round(fs)) for ss, fs in zip(peaks.ss, peaks.fs, strict=True)} & set(hot)

    batch = CnnHitFinder(**om_args, model=model_path, threshold=0.0, hot_pixel_map=hot_pixel_map)
    for peaks in batch.classify(spiked).peaks:
        assert at_hot(peaks) == (set() if hot_pixel_map else set(hot))
    assert (batch.hot_pixels is not None) == hot_pixel_map
    one_by_one = CnnHitFinder(**om_args, model=model_path, threshold=0.0, hot_pixel_map=hot_pixel_map)
    found = [at_hot(one_by_one.find_peaks(frame)) for frame in spiked]
    assert found == [set(hot)] * 3 + [set() if hot_pixel_map else set(hot)] * 3


def test_batches_static_masks_and_bfloat16_agree(model_path, frames):
    finder = CnnHitFinder(model=model_path, batch_size=4)  # 6 frames: a full and a short batch
    masks = np.ones(frames.shape, bool)
    masks[:, :8] = False
    per_frame = finder.hit_probability(frames, masks)
    np.testing.assert_allclose(finder.hit_probability(frames, masks[0]), per_frame, rtol=1e-6)
    one_batch = CnnHitFinder(model=model_path, batch_size=8).hit_probability(frames, masks)
    np.testing.assert_allclose(one_batch, per_frame, rtol=1e-5, atol=1e-6)
    # the mask reaches the network: without it the scores change
    assert not np.allclose(finder.hit_probability(frames), per_frame)
    fast = CnnHitFinder(model=model_path, batch_size=4, precision="bfloat16").hit_probability(frames, masks)
    np.testing.assert_allclose(fast, per_frame, atol=0.05)
    with pytest.raises(ConfigError):
        CnnHitFinder(model=model_path, precision="float16")


@pytest.mark.parametrize(("explain", "panels"), [("none", None), ("gradcam", None), ("gradcam", (32, 48))])
def test_cnn_reduce_writes_hits_with_frame_shaped_heat_maps(model_path, frames, tmp_path, explain, panels):
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = frames
    # a multi-panel detector: four ASICs, tiled separately by the preprocessing
    geometry = DetectorGeometry.simple(SHAPE, asic_shape=panels) if panels else None
    source = open_frames([path], geometry=geometry)
    assert (source.geometry is not None) == (panels is not None)
    summary = cnn_reduce(source, tmp_path / "out", model=model_path, threshold=0.0, explain=explain, batch_size=4)
    assert summary.hits == 6
    with h5py.File(tmp_path / "out" / "hits.cxi", "r") as f:
        np.testing.assert_array_equal(f["/entry_1/data_1/data"][()], frames)
        assert f["/entry_1/result_1/hit_score"].shape == (6,)
        if explain == "gradcam":
            maps = f["/entry_1/result_1/gradcam"][()]
            assert maps.shape == (6, *SHAPE) and maps.dtype == np.float16  # stored compactly (MAP_DTYPE)
            assert np.all((maps >= 0) & (maps <= 1))
            assert f["/entry_1/result_1/gradcam_max"].shape == (6,)
            assert "data = /entry_1/result_1/gradcam" in (tmp_path / "out" / "gradcam.geom").read_text()


def test_reduce_maps_reuse_the_veto_inputs_and_match_fresh_ones(model_path, frames):
    from sfx_cnnhit.pipeline.cnn_reduce import make_explainers

    finder = CnnHitFinder(model=model_path, device="cpu", hot_pixel_map=False)
    mask = np.ones(frames.shape, bool)
    mask[:, 5, 7] = False
    finder.classify(frames, mask)
    assert finder.last_inputs is not None and finder.last_inputs.shape[0] == len(frames)
    rows = np.array([1, 3, 4])
    (maker,) = make_explainers(finder, "gradcam")
    maps, raw_max = maker(frames[rows], mask[rows], rows)
    fresh, fresh_max = finder.explainer("gradcam")(frames[rows], mask[rows])  # preprocessed again
    assert maps.dtype == np.float16 and np.array_equal(maps, fresh.astype(np.float16))
    assert np.array_equal(raw_max, fresh_max)
    finder.hit_probability(np.concatenate([frames] * 20))  # 120 frames: two forward passes of 64
    assert finder.last_inputs is None  # the buffer holds only the last pass: nothing to reuse
