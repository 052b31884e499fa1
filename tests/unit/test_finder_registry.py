"""The finder registry: installed finders come from entry points, and every one keeps the contract that
``reduce`` and ``compare`` rely on. A new finder is one module and one entry-point line (here a toy
finder, installed into a temporary folder on ``sys.path``, as pip would install a package declaring it)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitFinder, available_finders, create_finder
from sfx_cnnhit.finders.dials import dials_available
from sfx_cnnhit.finders.peakfinder8 import radius_map_from_beam_center
from sfx_cnnhit.types import Classification, PeakList
from tests.synthetic import make_frame

SHAPE = (64, 80)

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
    ``[project.entry-points."sfx_cnnhit.finders"] bright_pixels = "toy_finder:BrightPixels"``."""
    (tmp_path / "toy_finder.py").write_text(textwrap.dedent(TOY_MODULE))
    info = tmp_path / "toy_finder-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-finder\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sfx_cnnhit.finders]\nbright_pixels = toy_finder:BrightPixels\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def _frames() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    frames = np.stack([make_frame(rng, SHAPE, n_spots=n).data for n in (0, 15, 0, 25)]).astype(np.float32)
    masks = np.ones(frames.shape, bool)
    masks[:, :, :2] = False
    return frames, masks


#: How the contract test builds each of our finders for frames of SHAPE (a finder without an entry
#: here is built with its defaults).
BUILDERS: dict[str, Callable[[], HitFinder]] = {
    "peakfinder8": lambda: create_finder("peakfinder8", radius_map=radius_map_from_beam_center(SHAPE)),
    "cnn": lambda: create_finder("cnn", device="cpu"),
}


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
        create_finder("nope")


@pytest.mark.parametrize("name", sorted(available_finders()))
def test_every_installed_finder_keeps_the_contract(name: str):
    if name == "dials" and not dials_available():
        pytest.skip("real DIALS is not installed (apt-get install -y dials)")
    _check_contract(name, BUILDERS.get(name, lambda: create_finder(name))())


def test_a_new_finder_is_one_module_and_one_entry_point(toy_installed: None):
    assert "bright_pixels" in available_finders()
    finder = create_finder("bright_pixels", threshold=150.0)
    _check_contract("bright_pixels", finder)
    frames, masks = _frames()
    result = finder.classify(frames, masks)
    assert (result.scores[[1, 3]] > result.scores[[0, 2]].max()).all()  # the frames with spots


def test_a_broken_entry_point_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sfx_cnnhit.finders]\nbroken = no_such_module:Finder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"hit finder 'broken' \(no_such_module:Finder\) cannot be loaded"):
        create_finder("broken")
