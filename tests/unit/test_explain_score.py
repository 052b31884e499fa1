"""Explanation scores on synthetic maps with known answers, and the figures."""

from __future__ import annotations

import numpy as np
import pytest

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.explain.figures import (
    FramePanels,
    display_image,
    save_explanation_figure,
    save_histogram_figure,
    save_inversion_figure,
)
from sfx_cnnhit.explain.score import (
    CELLS_PER_RADIUS,
    STRICT_DILATION_PX,
    ExplanationScorer,
    fair_dilation_px,
    score_explanations,
)
from sfx_cnnhit.types import PeakList

SHAPE = (48, 64)


def truth_with_spots(spots: list[list[tuple[int, int]]]) -> np.ndarray:
    truth = np.zeros((len(spots), *SHAPE), bool)
    for i, centres in enumerate(spots):
        for ss, fs in centres:
            truth[i, ss - 1 : ss + 2, fs - 1 : fs + 2] = True
    return truth


def test_a_map_on_the_spots_scores_one_and_a_uniform_map_scores_chance():
    truth = truth_with_spots([[(10, 10)], [(30, 50), (20, 20)]])
    on_spots = score_explanations(truth.astype(np.float32), truth, dilation_px=3)
    assert on_spots["n_hits"] == 2
    assert on_spots["mass_in_spots_mean"] == pytest.approx(1.0)
    assert on_spots["mass_in_spots_median"] == pytest.approx(1.0)
    assert on_spots["pointing_game"] == 1.0
    assert on_spots["mass_above_chance_mean"] == pytest.approx(1.0)
    uniform = score_explanations(np.ones(truth.shape, np.float32), truth, dilation_px=3)
    assert uniform["mass_in_spots_mean"] == pytest.approx(uniform["chance_mass_in_spots"])
    assert uniform["mass_above_chance_mean"] == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < uniform["chance_mass_in_spots"] < 0.1
    assert uniform["pointing_game"] == 0.0  # its first maximum is pixel (0, 0)


def test_chance_level_is_the_area_fraction_of_the_dilated_spots():
    truth = truth_with_spots([[(24, 32)]])
    for radius in (0.0, 2.0, 5.0):
        score = score_explanations(np.ones(truth.shape), truth, dilation_px=radius)
        ss, fs = np.indices(SHAPE)
        # Distance from the 3x3 square: the dilated region by brute force.
        d = np.hypot(np.clip(np.abs(ss - 24) - 1, 0, None), np.clip(np.abs(fs - 32) - 1, 0, None))
        assert score["chance_mass_in_spots"] == pytest.approx((d <= radius).mean())


def test_dilation_radius_and_pointing():
    truth = truth_with_spots([[(24, 32)]])
    ss, fs = np.indices(SHAPE)
    halo = (np.hypot(ss - 24, fs - 32) <= 5).astype(np.float32)[None]  # a blob 4 px beyond the spot
    tight = score_explanations(halo, truth, dilation_px=1)
    loose = score_explanations(halo, truth, dilation_px=6)
    assert tight["mass_in_spots_mean"] < 0.6 and loose["mass_in_spots_mean"] == pytest.approx(1.0)
    # Ties: the first maximum in (ss, fs) order counts, here the blob's top pixel, 4 px from the spot.
    assert tight["pointing_game"] == 0.0
    assert score_explanations(halo, truth, dilation_px=4)["pointing_game"] == 1.0
    elsewhere = np.zeros(truth.shape, np.float32)
    elsewhere[0, 5, 5] = 1.0
    far = score_explanations(elsewhere, truth, dilation_px=3)
    assert far["pointing_game"] == 0.0 and far["mass_in_spots_mean"] == 0.0


def test_masked_pixels_and_empty_maps():
    truth = truth_with_spots([[(24, 32)], [(10, 10)]])
    maps = truth.astype(np.float32)
    maps[0, 0, :] = 100.0  # bright but bad pixels: ignored
    good = np.ones(SHAPE, bool)
    good[0, :] = False
    maps[1] = 0.0
    score = score_explanations(maps, truth, dilation_px=3, mask=good)
    assert score["n_zero_maps"] == 1
    assert score["mass_in_spots_mean"] == pytest.approx(0.5)  # 1 for the first, 0 for the empty map
    assert score["pointing_game"] == 0.5
    with pytest.raises(InputError):
        score_explanations(maps[:1], truth, dilation_px=3)


def test_misses_entropy_and_radial_profile():
    ss, fs = np.indices(SHAPE)
    r = np.hypot(ss - (SHAPE[0] - 1) / 2, fs - (SHAPE[1] - 1) / 2)
    uniform = np.ones((1, *SHAPE), np.float32)
    no_spots, miss = np.zeros((1, *SHAPE), bool), np.zeros(1, bool)
    edges = np.asarray(score_explanations(uniform, no_spots, miss)["misses"]["radial_profile"]["edges_px"])
    ring_r = (edges[4] + edges[5]) / 2
    ring = (np.abs(r - ring_r) < 1.0).astype(np.float32)[None]  # a water ring inside radial bin 4
    maps = np.concatenate([uniform, ring, 0 * ring])  # the all-zero map counts, but has no mass to place
    score = score_explanations(maps, np.zeros((3, *SHAPE), bool), np.zeros(3, bool), raw_max=np.array([0.1, 0.3, 0]))
    misses = score["misses"]
    assert score["n_hits"] == 0 and score["mass_in_spots_mean"] is None and misses["n_misses"] == 3
    assert misses["n_zero_maps"] == 1
    mass = np.asarray(misses["radial_profile"]["mass_fraction"])
    area = np.asarray(misses["radial_profile"]["area_fraction"])
    assert mass.sum() == pytest.approx(1.0) and area.sum() == pytest.approx(1.0)
    assert mass[4] == pytest.approx((area[4] + 1.0) / 2)  # mean of the uniform map's and the ring's
    assert misses["raw_max_median"] == pytest.approx(0.1)
    assert score_explanations(uniform, no_spots, miss)["misses"]["entropy_mean"] == pytest.approx(1.0)
    four = (r == r.min()).astype(np.float32)[None]  # the 4 pixels around the centre of an even frame
    entropy = score_explanations(four, no_spots, miss)["misses"]["entropy_mean"]
    assert entropy == pytest.approx(np.log(4) / np.log(r.size))


def test_batches_accumulate_and_classes_break_down():
    truth = truth_with_spots([[(10, 10)], [(30, 50)], [(20, 20)], [(40, 40)]])
    truth[3] = False
    maps = truth.astype(np.float32)
    maps[1] = 1.0
    maps[3] = 1.0
    labels = np.array([4, 2, 4, 0])
    hits = np.array([True, True, True, False])
    names = ("blank", "no_crystal", "weak", "good", "strong")
    whole = score_explanations(maps, truth, hits, dilation_px=3, labels=labels, class_names=names)
    scorer = ExplanationScorer(3, class_names=names)
    for i in (slice(0, 1), slice(1, 4)):
        scorer.add(maps[i], truth[i], hits[i], labels=labels[i])
    assert scorer.result() == whole
    assert set(whole["per_class"]) == {"blank", "weak", "strong"}
    assert whole["per_class"]["strong"]["mass_in_spots_mean"] == pytest.approx(1.0)
    weak = whole["per_class"]["weak"]  # frame 1: a uniform map
    assert weak["pointing_game"] == 0.0 and weak["mass_in_spots_mean"] == pytest.approx(weak["chance_mass_in_spots"])
    assert whole["per_class"]["blank"]["n_hits"] == 0


def test_fair_dilation():
    assert fair_dilation_px(1.0) == STRICT_DILATION_PX
    assert fair_dilation_px(32.0) == CELLS_PER_RADIUS * 32.0


def test_figures_are_written_atomically(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.normal(10, 2, SHAPE).astype(np.float32)
    frame[20:23, 30:33] += 300
    mask = np.ones(SHAPE, bool)
    mask[0] = False
    shown = display_image(frame, mask, "asinh")
    assert np.isnan(shown[0]).all() and np.nanmax(shown) == 1.0 and np.nanmin(shown) >= 0.0
    assert (shown[20:23, 30:33] > 0.8).all() and np.nanmedian(shown) < 0.5
    peaks = PeakList(fs=[31.0], ss=[21.0], intensity=[1.0], num_pixels=[9], max_pixel_intensity=[300], snr=[50])
    heat = np.zeros(SHAPE, np.float32)
    heat[15:28, 25:38] = 1.0
    rows = [
        FramePanels(frame, mask, cam=heat, guided=heat, peaks=peaks, truth=heat > 0, title="hit"),
        FramePanels(frame, None, cam=heat, title="again"),
    ]
    path = save_explanation_figure(tmp_path / "explain.png", rows)
    inv = save_inversion_figure(tmp_path / "inv.png", [frame, frame], {"conv1": [frame, heat]}, column_titles="ab")
    edges = np.arange(4.0)
    hist = save_histogram_figure(tmp_path / "hist.png", {"miss": ([5, 1, 0], edges), "hit": ([1, 1, 3], edges)})
    for p in (path, inv, hist):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explain.png", "hist.png", "inv.png"]
