"""Simulator API: reproducibility, split streams, class shares, configuration, detector layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.simulate import (
    CLASS_NAMES,
    DETECTORS,
    SimulationConfig,
    Simulator,
    build_detector,
    class_fractions_for,
    frame_seed,
)
from sfx_cnnhit.simulate.projection import LabFrame

SMALL = SimulationConfig().with_overrides(detector__size=256)


def test_same_seed_same_frames_and_splits_differ():
    labels = [3, 1, 4, 0, 2]
    a = Simulator(SMALL, seed=4).generate(labels)
    b = Simulator(SMALL, seed=4).generate(labels)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.bragg_mask, b.bragg_mask)
    assert a.params == b.params
    for other in (Simulator(SMALL, seed=4, split="val"), Simulator(SMALL, seed=5)):
        c = other.generate(labels)
        assert all(not np.array_equal(x, y) for x, y in zip(a.data[:3], c.data[:3], strict=True))


def test_frames_depend_only_on_seed_split_index_and_label():
    sim = Simulator(SMALL, seed=9)
    first = sim.generate([2, 3, 1, 4])
    second = sim.generate([1])
    assert second.frame_index.tolist() == [4]
    again = Simulator(SMALL, seed=9).generate([4, 1], start_index=3)
    np.testing.assert_array_equal(again.data[0], first.data[3])
    np.testing.assert_array_equal(again.data[1], second.data[0])
    with Simulator(SMALL, seed=9, workers=2) as parallel:
        np.testing.assert_array_equal(parallel.generate([2, 3, 1, 4]).data, first.data)


def test_render_of_drawn_params_reproduces_the_frame():
    sim = Simulator(SMALL, seed=12)
    for label in (1, 3):
        frame = sim.simulate_frame(label, 5)
        again = sim.render(sim.draw_params(label, 5), 5)
        np.testing.assert_array_equal(frame.data, again.data)
        assert frame.params == again.params


def test_split_streams_are_disjoint():
    seqs = [frame_seed(1, split, 0).generate_state(4).tolist() for split in ("train", "val", "test", "extra")]
    assert len({tuple(s) for s in seqs}) == 4
    assert frame_seed(1, "train", 0).generate_state(4).tolist() != frame_seed(1, "train", 1).generate_state(4).tolist()


def test_class_shares_and_hit_rate():
    np.testing.assert_allclose(class_fractions_for(), [0.2] * 5)
    np.testing.assert_allclose(class_fractions_for(hit_rate=0.9), [0.05, 0.05, 0.3, 0.3, 0.3])
    with pytest.raises(ConfigError):
        class_fractions_for([0.5, 0.5, 0, 0, 0], hit_rate=0.5)
    with pytest.raises(ConfigError):
        class_fractions_for([0.5, 0.5])
    sim = Simulator(SMALL, seed=2)
    labels = sim.labels_for(23, class_fractions=[1, 1, 0, 2, 0])
    assert np.bincount(labels, minlength=5).tolist() == [6, 6, 0, 11, 0]
    np.testing.assert_array_equal(labels, Simulator(SMALL, seed=2).labels_for(23, class_fractions=[1, 1, 0, 2, 0]))
    batches = list(sim.stream(7, hit_rate=0.0, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert not any(b.hit.any() for b in batches)
    assert np.concatenate([b.frame_index for b in batches]).tolist() == list(range(7))


def test_batch_fields_and_json_params():
    batch = Simulator(SMALL, seed=8).generate([0, 1, 2])
    n, (ss, fs) = 3, (256, 256)
    assert batch.data.shape == (n, ss, fs) and batch.data.dtype == np.float32
    assert batch.mask.dtype == bool and batch.bragg_mask.shape == (n, ss, fs)
    assert batch.labels.dtype == np.int64 and batch.n_spots.shape == (n,)
    json.dumps(batch.params)
    assert [p["class_name"] for p in batch.params] == list(CLASS_NAMES[:3])
    refl = batch.reflections[2]
    assert {"fs", "ss", "intensity", "h", "k", "l"} <= set(refl)
    assert int(refl["spot"].sum()) == batch.n_spots[2]
    assert batch.reflections[0]["fs"].size == 0
    # Blank frames hold only pedestal, read noise and hot pixels.
    blank = batch.data[0][batch.mask[0]]
    assert abs(np.median(blank) - batch.params[0]["pedestal_adu"]) < 2.0


def test_config_validation_and_round_trip():
    cfg = SimulationConfig().with_overrides(detector__name="pilatus6m", beam__photon_energy_ev=(9000.0, 12000.0))
    assert SimulationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = [
        {"beam__photon_energy_ev": (12000.0, 9000.0)},
        {"crystal__cells": ("nonsense",)},
        {"detector__name": "cspad", "detector__size": 512},
        {"detector__name": "nope"},
        {"classes__thresholds": (10, 5, 100)},
        {"background__streak_probability": 1.5},
        {"detector__unknown": 1},
    ]
    for override in bad:
        with pytest.raises(ConfigError):
            SimulationConfig().with_overrides(**override)
    with pytest.raises(ConfigError):
        Simulator(SMALL, seed=-1)
    with pytest.raises(ConfigError):
        Simulator(SMALL).generate([5])


def test_unreachable_class_is_reported():
    cfg = SMALL.with_overrides(crystal__crystal_size_um=(0.01, 0.01), classes__max_attempts=3)
    with pytest.raises(ConfigError, match="strong"):
        Simulator(cfg, seed=1).generate([4])


EXPECTED_LAYOUTS = {
    # name: (size, slab shape, panels, panel (height, width), covered pixels)
    "square512": (None, (512, 512), 1, (512, 512), 512 * 512),
    "cspad": (None, (1480, 1552), 64, (185, 194), 64 * 185 * 194),
    "epix10k2m": (None, (5632, 384), 64, (176, 192), 16 * 352 * 384),
    "agipd1m": (None, (8192, 128), 128, (64, 128), 16 * 512 * 128),
    "pilatus6m": (1000, (1043, 981), 10, (195, 487), 10 * 195 * 487),
    "eiger": (1000, (1065, 1030), 2, (514, 1030), 2 * 514 * 1030),
    "rayonix": (400, (400, 400), 1, (400, 400), 400 * 400),
}


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_layouts(name):
    size, shape, n_panels, panel_shape, n_pixels = EXPECTED_LAYOUTS[name]
    model = build_detector(name, size=size)
    geom = model.geometry
    assert geom.slab_shape == shape
    assert len(geom.panels) == n_panels
    assert {(p.height, p.width) for p in geom.panels} == {panel_shape}
    x, y, _ = geom.pixel_positions()
    covered = np.isfinite(x)
    assert covered.sum() == n_pixels
    # No two pixels overlap in the lab: the unit cells holding their centres are distinct.
    key = np.floor(x[covered]).astype(np.int64) * 100003 + np.floor(y[covered]).astype(np.int64)
    assert np.unique(key).size == n_pixels
    # The beam passes through the middle of the layout (within a tenth of its extent).
    extent = max(np.ptp(x[covered]), np.ptp(y[covered]))
    assert abs(np.nanmean(x)) < 0.1 * extent and abs(np.nanmean(y)) < 0.1 * extent
    # Projecting each pixel centre's direction lands back on that pixel.
    lab = LabFrame(model, 0.0, False)
    rng = np.random.default_rng(0)
    flat = rng.choice(np.flatnonzero(covered), 500, replace=False)
    rows, cols = np.unravel_index(flat, shape)
    clen = lab.nominal_clen
    rays = np.stack([lab.x[rows, cols], lab.y[rows, cols], np.full(rows.size, clen)], axis=1)
    proj = lab.project(rays / np.linalg.norm(rays, axis=1, keepdims=True), clen)
    fs, ss = lab.slab_position(proj)
    np.testing.assert_allclose(fs, cols, atol=1e-3)
    np.testing.assert_allclose(ss, rows, atol=1e-3)


def test_module_gaps_read_minus_one_and_are_masked():
    cfg = SimulationConfig().with_overrides(detector__name="pilatus6m", detector__size=1000)
    frame = Simulator(cfg, seed=1).simulate_frame(1, 0)
    gaps = ~np.isfinite(build_detector("pilatus6m", size=1000).geometry.pixel_positions()[0])
    assert gaps.any()
    assert np.all(frame.data[gaps] == -1)
    assert not frame.mask[gaps].any()
    counts = frame.data[frame.mask]
    np.testing.assert_array_equal(counts, np.rint(counts))  # photon counting
    assert counts.min() >= 0


def test_the_compact_config_draws_smaller_spots_than_the_randomised_one():
    """``--config compact`` exists to train on still-shot spots of one to four pixels (docs/models.md)."""
    from sfx_cnnhit.cli.simulate import load_config

    def pixels_per_spot(name: str) -> float:
        config = load_config(Path(name)).with_overrides(detector__size=256)
        with Simulator(config, seed=5, split="test") as sim:
            batch = sim.generate([4, 4, 4, 4])
        return float(np.asarray(batch.bragg_mask).sum() / np.asarray(batch.n_spots).sum())

    compact, randomised = pixels_per_spot("compact"), pixels_per_spot("randomised")
    assert compact < 0.8 * randomised, (compact, randomised)  # 1.7 against 2.5 pixels


def test_a_config_file_can_extend_a_shipped_one(tmp_path):
    from sfx_cnnhit.cli.simulate import load_config

    (tmp_path / "mine.yaml").write_text("extends: randomised\ncrystal:\n  mosaicity_deg: [0.001, 0.002]\n")
    mine, randomised = load_config(tmp_path / "mine.yaml"), load_config(Path("randomised"))
    assert mine.crystal.mosaicity_deg == (0.001, 0.002)
    assert mine.crystal.domain_size_um == randomised.crystal.domain_size_um  # the rest of the section kept
    assert mine.background == randomised.background
    (tmp_path / "bad.yaml").write_text("extends: nonsense\n")
    with pytest.raises(ConfigError, match="nonsense"):
        load_config(tmp_path / "bad.yaml")
