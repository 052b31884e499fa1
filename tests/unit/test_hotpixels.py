"""Run-level hot-pixel maps: static hot pixels are found and masked, moving spots and noise are not."""

import h5py
import numpy as np
import pytest

from sfx_cnnhit.io.hotpixels import HotPixelRule, strict_local_maxima
from sfx_cnnhit.io.sources import open_frames

SHAPE = (64, 80)
HOT = [(5, 7), (40, 60), (63, 0)]  # one at the frame's edge


def _frames(n: int, rng: np.random.Generator, *, hot_from: int = 0, zero_background: bool = False) -> np.ndarray:
    """Noise (Poisson 30, or 0 for a photon counter), three hot pixels from frame ``hot_from`` on, and
    a bright 2x2 spot at a new place in every frame."""
    lam = 0.0 if zero_background else 30.0
    data = rng.poisson(lam, (n, *SHAPE)).astype(np.float32)
    for i in range(n):
        ss, fs = rng.integers(2, SHAPE[0] - 3), rng.integers(2, SHAPE[1] - 3)
        data[i, ss : ss + 2, fs : fs + 2] += 500
        if i >= hot_from:
            for p in HOT:
                data[(i, *p)] += 5 if zero_background else 60  # 60 counts: about 11 noise sigmas
    return data


def _write(path, data: np.ndarray) -> str:
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = data
    return str(path)


def _hot_set(hot: np.ndarray) -> set[tuple[int, int]]:
    return {tuple(int(v) for v in p) for p in np.argwhere(hot)}


@pytest.mark.parametrize("zero_background", [False, True])
def test_static_hot_pixels_are_found_and_nothing_else(zero_background):
    rng = np.random.default_rng(1)
    data = _frames(24, rng, zero_background=zero_background)
    hot = HotPixelRule().hot_map((frame, np.ones(SHAPE, bool)) for frame in data)
    assert hot is not None
    assert _hot_set(hot) == set(HOT)


def test_too_few_frames_give_no_map():
    data = _frames(8, np.random.default_rng(2))
    assert HotPixelRule().hot_map((frame, np.ones(SHAPE, bool)) for frame in data) is None


def test_bad_neighbours_do_not_hide_a_pixel_and_bad_pixels_are_never_maxima():
    frame = np.zeros((3, 3), np.float32)
    frame[1, 1], frame[0, 0] = 1.0, 5.0
    good = np.ones((3, 3), bool)
    good[0, 0] = False  # a bad, bright neighbour
    peak = strict_local_maxima(frame, good)
    assert peak[1, 1] and not peak[0, 0] and peak.sum() == 1


def test_frame_source_masks_hot_pixels_per_window(tmp_path):
    rng = np.random.default_rng(3)
    # hot pixels appear at frame 40: window 0 (frames 0-39) has none, window 1 has all three
    path = _write(tmp_path / "run.h5", _frames(80, rng, hot_from=40))
    rule = HotPixelRule(window=40, samples=20, min_samples=16)
    source = open_frames([path], hot_pixels=rule)
    masks = np.concatenate([b.mask for b in source.batches(16)])
    assert masks[:40].all()
    for p in HOT:
        assert not masks[40:, p[0], p[1]].any()
    assert masks[40:].sum() == 40 * (SHAPE[0] * SHAPE[1] - len(HOT))
    assert source.hot_pixel_windows[0]["hot_pixels"] == 0
    assert source.hot_pixel_windows[1] == {"first_frame": 40, "sampled_frames": 20, "hot_pixels": 3}
    # same maps when reading starts in the middle (a resumed run), and masked pixels read 0
    again = open_frames([path], hot_pixels=rule)
    late = next(again.batches(8, start=60))
    np.testing.assert_array_equal(late.mask, masks[60:68])
    assert (late.data[:, 5, 7] == 0).all()
    # off: the plain mask
    assert all(b.mask.all() for b in open_frames([path]).batches(40))


def test_rule_rejects_nonsense():
    with pytest.raises(ValueError):
        HotPixelRule(window=0)
    with pytest.raises(ValueError):
        HotPixelRule(frequency=0.2)
