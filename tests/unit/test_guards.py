"""Frames the CNN cannot judge are flagged per frame and in the run summary, not decided silently."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.models.guards import VETOED_FLAGS, frame_flags
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (64, 64)


def _noise(n: int = 1, seed: int = 0) -> np.ndarray:
    return (100.0 + 5.0 * np.random.default_rng(seed).standard_normal((n, *SHAPE))).astype(np.float32)


def test_a_normal_frame_is_not_flagged() -> None:
    assert frame_flags(_noise(2)) == ["", ""]
    assert frame_flags(_noise(1)[0], np.ones(SHAPE, bool)) == [""]


def test_nearly_fully_masked_frame_is_flagged_masked() -> None:
    mask = np.zeros(SHAPE, bool)
    mask[0, :4] = True  # 4 good pixels of 4096
    assert frame_flags(_noise(), mask) == ["masked"]


def test_nan_frame_is_flagged_non_finite() -> None:
    frames = _noise(2)
    frames[0] = np.nan
    frames[1, :40] = np.inf  # more than half of the unmasked pixels
    assert frame_flags(frames) == ["non_finite", "non_finite"]


def test_constant_frame_is_flagged_constant_but_not_a_frame_constant_only_on_the_sample_grid() -> None:
    frames = np.full((2, *SHAPE), 7.0, np.float32)
    frames[1, 1::4, 1::4] = 9.0  # off the 1-in-4 sample grid: the full check sees it
    assert frame_flags(frames) == ["constant", ""]


def test_saturated_and_negative_frames() -> None:
    frames = _noise(2)
    frames[0, :8] = 65535.0  # 12.5 % of the pixels at the maximum
    frames[1] -= 200.0  # median -100 ADU = -100 photons at 1 ADU/photon
    assert frame_flags(frames) == ["saturated", "negative"]
    # At 32 ADU/photon, -100 ADU is -3 photons: within noise of a subtracted pedestal.
    assert frame_flags(frames[1:], adu_per_photon=32.0) == [""]


def test_saturated_and_negative_follow_the_median_rule() -> None:
    """The counting rules equal "maximum above the median" and "median below -5 photons" (odd samples)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        frame = rng.normal(rng.uniform(-8.0, 2.0), 3.0, (33, 33)).round().astype(np.float32)
        frame[rng.random(frame.shape) < rng.uniform(0.0, 0.8)] = 50.0  # a plateau at the maximum
        sample = frame[::4, ::4]  # the 81 pixels the flags look at
        median = np.median(sample)
        expected = ("saturated" if sample.max() > median and (sample == sample.max()).mean() >= 0.05
                    else "negative" if median < -5.0 else "")
        assert frame_flags(frame) == [expected]


def test_finder_vetoes_frames_it_cannot_judge_and_says_why(model_path) -> None:
    finder = CnnHitFinder(model=model_path, threshold=0.0, device="cpu")  # every judged frame is a hit
    frames = _noise(4)
    frames[1] = 3.0
    frames[2] = np.nan
    frames[3, :8] = 65535.0
    result = finder.classify(frames)
    assert result.flags == ["", "constant", "non_finite", "saturated"]
    assert result.hits.tolist() == [True, False, False, True]  # saturated: flagged, still judged
    assert {"constant", "non_finite"} <= VETOED_FLAGS


def test_reduce_lists_unjudged_frames_in_the_csv_and_the_summary(model_path, tmp_path) -> None:
    frames = _noise(6, seed=4)
    frames[2] = 0.0
    frames[4] = np.nan
    path = tmp_path / "in.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = frames
    summary = cnn_reduce(open_frames([path]), tmp_path / "out", model=model_path, threshold=0.0, explain="none",
                         device="cpu")
    # The reader masks non-finite pixels, so the NaN frame arrives fully masked.
    assert summary.unjudged_frames == {"constant": 1, "masked": 1}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["unjudged_frames"] == summary.unjudged_frames
    with open(tmp_path / "out" / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["flag"] for r in rows] == ["", "", "constant", "", "masked", ""]
    assert [r["hit"] for r in rows] == ["1", "1", "0", "1", "0", "1"]
