"""peakfinder8 tuned on its scoring frames (the CNN's classical baseline)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from sfx_cnnhit.comparisons.tuning import best_min_peaks, main, tune_peakfinder8
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.sources import open_frames
from tests.synthetic import make_frame

SHAPE = (64, 96)
SPOTS = np.array([(fs, ss, 2500.0) for ss in (10, 24, 40, 54) for fs in (10, 28, 66, 84)])
N_SPOTS = [0, 0, 0, 1, 3, 8, 12, 16]  # truth: a hit has at least 3 spots
IS_HIT = [n >= 3 for n in N_SPOTS]


def test_best_min_peaks_picks_the_most_accurate_cut():
    n_peaks = np.array([0, 0, 1, 2, 4, 6, 9])
    is_hit = np.array([False, False, False, False, True, True, True])
    assert best_min_peaks(n_peaks, is_hit) == (4, 1.0)
    # one miss with many peaks cannot be separated: the best cut misclassifies it only
    k, accuracy = best_min_peaks(np.array([0, 9, 5, 7, 1]), np.array([False, False, True, True, False]))
    assert (k, accuracy) == (5, 0.8)


@pytest.fixture()
def run_file(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.stack([make_frame(rng, SHAPE, spots=SPOTS[:n]).data for n in N_SPOTS])
        f["/truth/hit"] = np.array(IS_HIT)
    return path


def test_tuning_finds_settings_that_separate_the_frames(run_file, tmp_path, capsys):
    grid = {"adc_threshold": (100.0, 1e6), "minimum_snr": (5.0,)}
    result = tune_peakfinder8(open_frames([run_file]), "/truth/hit", grid=grid)
    assert result.n_frames == len(N_SPOTS) and len(result.grid) == 2
    assert result.metrics["accuracy"] == 1.0 and result.params.adc_threshold == 100.0
    assert 1 < result.min_peaks <= 3
    # an ADC threshold above every pixel finds nothing: the best it can do is call everything a miss
    hopeless = next(cell for cell in result.grid if cell["adc_threshold"] == 1e6)
    assert hopeless["accuracy"] == pytest.approx(1 - np.mean(IS_HIT))
    out = tmp_path / "best.json"
    assert main([str(run_file), "--json", str(out), "--max-frames", "8", "--score", str(run_file)]) == 0
    assert "best of" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["scored"][str(run_file)]["accuracy"] == report["metrics"]["accuracy"]


def test_tuning_needs_labels(run_file):
    with pytest.raises(InputError):
        tune_peakfinder8(open_frames([run_file]), "/truth/nothing_here", grid={"adc_threshold": (100.0,)})


def test_settings_move_to_the_scored_detectors_gain():
    from types import SimpleNamespace

    from sfx_cnnhit.comparisons.tuning import detector_gain, in_gain_of
    from sfx_cnnhit.finders.config import Peakfinder8Params

    def source(*gains):
        return SimpleNamespace(geometry=SimpleNamespace(panels=[SimpleNamespace(adu_per_photon=g) for g in gains]))

    photon_counter, cspad = source(1.0), source(32.0, 32.0, None)
    assert detector_gain(SimpleNamespace(geometry=None)) == 1.0 and detector_gain(cspad) == 32.0
    moved = in_gain_of(Peakfinder8Params(adc_threshold=20.0, minimum_snr=3.0), photon_counter, cspad)
    assert moved.adc_threshold == 640.0 and moved.minimum_snr == 3.0
