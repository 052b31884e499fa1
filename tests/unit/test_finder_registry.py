"""The finder registry: installed finders come from entry points, every one is built the same way from
``(params, detector, mask)`` and keeps the contract that ``reduce`` and ``compare`` rely on. A new finder is
one module and one entry-point line (here a toy finder, installed into a temporary folder on ``sys.path``,
as pip would install a package declaring it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitFinder, available_finders, create_finder
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.dials import dials_available
from sfx_cnnhit.finders.dispersion import DialsParams
from sfx_cnnhit.types import Classification, PeakList
from tests.synthetic import make_frame

SHAPE = (64, 80)
DETECTOR = DetectorGeometry.simple(SHAPE)

TOY_MODULE = '''
"""A toy hit finder: every pixel above a threshold is a peak."""
import numpy as np

from sfx_cnnhit.finders.base import HitRule, PeakCountingHitFinder
from sfx_cnnhit.types import PeakList


class BrightPixels(PeakCountingHitFinder):
    name = "bright_pixels"

    def __init__(self, threshold=100.0, min_peaks=3):
        self.threshold = threshold
        self.hit_rule = HitRule(min_peaks=min_peaks)

    def find_peaks_masked(self, data, mask):
        good = data > self.threshold if mask is None else (data > self.threshold) & mask
        ss, fs = np.nonzero(good)
        values = data[ss, fs]
        return PeakList(fs=fs, ss=ss, intensity=values, num_pixels=np.ones(fs.size), max_pixel_intensity=values,
                        snr=np.zeros(fs.size))
'''


@pytest.fixture
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``toy_finder.py`` plus the dist-info pip writes for a package whose pyproject.toml says
    ``[project.entry-points."sfx_cnnhit.finders"] bright_pixels = "toy_finder:BrightPixels.for_detector"``."""
    (tmp_path / "toy_finder.py").write_text(textwrap.dedent(TOY_MODULE))
    info = tmp_path / "toy_finder-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-finder\nVersion: 0.1\n")
    entry = "bright_pixels = toy_finder:BrightPixels.for_detector"
    (info / "entry_points.txt").write_text(f"[sfx_cnnhit.finders]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def _frames() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    frames = np.stack([make_frame(rng, SHAPE, n_spots=n).data for n in (0, 15, 0, 25)]).astype(np.float32)
    masks = np.ones(frames.shape, bool)
    masks[:, :, :2] = False
    return frames, masks


def _static_mask() -> np.ndarray:
    """The detector's good pixels: all but the last two rows."""
    mask = np.ones(SHAPE, bool)
    mask[-2:] = False
    return mask


def _check_contract(name: str, finder: HitFinder) -> None:
    frames, masks = _frames()
    assert isinstance(finder, HitFinder), name
    for result in (finder.classify(frames, masks), finder.classify(frames)):
        assert isinstance(result, Classification)
        assert result.scores.shape == (4,) and np.isfinite(result.scores).all(), name
        assert result.hits.shape == (4,) and result.hits.dtype == bool, name
        assert len(result.peaks) == 4 and all(isinstance(p, PeakList) for p in result.peaks), name
    one = finder.classify(frames[1:2], masks[1:2])
    assert one.scores[0] == pytest.approx(finder.classify(frames, masks).scores[1], rel=1e-4, abs=1e-6), name
    assert isinstance(finder.find_peaks(frames[3]), PeakList), name


def test_our_finders_are_installed_entry_points():
    assert {"peakfinder8", "dispersion", "dials", "cnn"} <= set(available_finders())
    with pytest.raises(ConfigError, match=r"unknown hit finder .nope.; known: .*peakfinder8"):
        create_finder("nope", detector=DETECTOR)


@pytest.mark.parametrize("name", sorted(available_finders()))
def test_every_installed_finder_keeps_the_contract(name: str):
    if name == "dials" and not dials_available():
        pytest.skip("real DIALS is not installed (apt-get install -y dials)")
    _check_contract(name, create_finder(name, detector=DETECTOR, mask=_static_mask()))
    _check_contract(name, create_finder(name, detector=DETECTOR))


@pytest.mark.parametrize(
    ("name", "values", "field", "expected"),
    [
        ("peakfinder8", {"adc_threshold": "50", "min_pixel_count": "3", "fast_mode": "true"}, "params",
         Peakfinder8Params(adc_threshold=50.0, min_pixel_count=3, fast_mode=True)),
        ("dispersion", {"gain": "2.5", "kernel_size": "2,3", "max_separation": "none"}, "params",
         DialsParams(gain=2.5, kernel_size=(2, 3), max_separation=None)),
        ("cnn", {"threshold": "0.7", "device": "cpu"}, "threshold", 0.7),
    ],
)
def test_params_as_a_mapping_of_field_values(name: str, values: dict[str, str], field: str, expected: object):
    finder = create_finder(name, params=values, detector=DETECTOR)
    assert getattr(finder, field) == expected


@pytest.mark.parametrize("name", ["peakfinder8", "dispersion", "cnn"])
def test_an_unknown_parameter_or_option_is_a_one_line_config_error(name: str):
    with pytest.raises(ConfigError, match="no_such_key") as err:
        create_finder(name, params={"no_such_key": "1"}, detector=DETECTOR)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"unknown option.*no_such_option"):
        create_finder(name, detector=DETECTOR, no_such_option=1)
    with pytest.raises(ConfigError, match="mask shape"):
        create_finder(name, detector=DETECTOR, mask=np.ones((8, 8), bool))


def test_the_static_mask_reaches_every_finder():
    """With the right half of the detector masked, peaks are found on the left half only."""
    frame = _frames()[0][3]
    left = np.zeros(SHAPE, bool)
    left[:, : SHAPE[1] // 2] = True
    for name in ("peakfinder8", "dispersion"):
        params = {"adc_threshold": 100} if name == "peakfinder8" else {}
        everywhere = create_finder(name, params=params, detector=DETECTOR).find_peaks(frame)
        masked = create_finder(name, params=params, detector=DETECTOR, mask=left).find_peaks(frame)
        assert 0 < masked.num_peaks < everywhere.num_peaks, name
        assert (masked.fs < SHAPE[1] // 2).all(), name


def test_the_cnn_ands_the_static_mask_into_the_masks_it_sees():
    frames, masks = _frames()
    static = _static_mask()
    params = {"device": "cpu", "hot_pixel_map": "false"}
    masked = create_finder("cnn", params=params, detector=DETECTOR, mask=static)
    plain = create_finder("cnn", params=params, detector=DETECTOR)
    np.testing.assert_allclose(masked.classify(frames, masks).scores, plain.classify(frames, masks & static).scores)
    np.testing.assert_allclose(masked.classify(frames).scores, plain.classify(frames, static).scores)


def test_a_new_finder_is_one_module_and_one_entry_point(toy_installed: None):
    assert "bright_pixels" in available_finders()
    finder = create_finder("bright_pixels", params={"threshold": 150.0}, detector=DETECTOR)
    _check_contract("bright_pixels", finder)
    frames, masks = _frames()
    result = finder.classify(frames, masks)
    assert (result.scores[[1, 3]] > result.scores[[0, 2]].max()).all()  # the frames with spots
    masked = create_finder("bright_pixels", params={"threshold": 150.0}, detector=DETECTOR, mask=np.zeros(SHAPE, bool))
    assert masked.classify(frames, masks).scores.tolist() == [0.0] * 4  # the static mask is applied
    with pytest.raises(ConfigError, match=r"bright_pixels.*unexpected keyword argument 'nope'"):
        create_finder("bright_pixels", params={"nope": 1}, detector=DETECTOR)


def test_a_broken_entry_point_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sfx_cnnhit.finders]\nbroken = no_such_module:Finder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"hit finder 'broken' \(no_such_module:Finder\) cannot be loaded"):
        create_finder("broken", detector=DETECTOR)
