"""The shipped default on frames our simulator did not make (``../shared/data``, validation only): a
regression check of what docs/models.md reports. Skipped where the development sets are absent."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.models.checkpoint import load_model
from sfx_cnnhit.models.preprocess import preprocess

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "nanobragg_dev.cxi").is_file(), reason="../shared/data is not here"),
]


def _frames(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["/entry_1/data_1/data"][:], f["/entry_1/data_1/mask"][:] == 0, f["/truth/hit"][:].astype(bool)


def test_default_model_gets_every_real_development_frame_right() -> None:
    for path in sorted((DATA / "realdev").glob("*.cxi")):
        finder = CnnHitFinder(device="cpu")  # one per detector: its peakfinder8 is made for one frame shape
        data, mask, truth = _frames(path)
        assert finder.classify(data, mask).hits.tolist() == truth.tolist(), path.name


def test_default_model_on_real_nanobragg_frames_keeps_its_reported_accuracy() -> None:
    data, mask, truth = _frames(DATA / "nanobragg_dev.cxi")
    finder = CnnHitFinder(device="cpu")
    p_hit = finder.hit_probability(data, mask)
    accuracy = float(((p_hit >= finder.threshold) == truth).mean())
    order = np.argsort(p_hit)
    ranks = np.empty(len(p_hit))
    ranks[order] = np.arange(1, len(p_hit) + 1)
    n_hit = truth.sum()
    auc = (ranks[truth].sum() - n_hit * (n_hit + 1) / 2) / (n_hit * (~truth).sum())
    assert accuracy >= ACCURACY_FLOOR and auc >= AUC_FLOOR, (accuracy, auc)


def test_fiveclass_model_tells_blank_no_crystal_and_hit_apart_on_real_nanobragg_frames() -> None:
    model, spec = load_model("spotnet_fiveclass")
    with h5py.File(DATA / "nanobragg_dev.cxi", "r") as f:
        data, labels = f["/entry_1/data_1/data"][:], f["/truth/label"][:]
    with torch.no_grad():
        batches = [preprocess(data[i : i + 50], None, spec.preprocess) for i in range(0, len(data), 50)]
        predicted = np.concatenate([model(batch).argmax(1).numpy() for batch in batches])
    three_way = float((np.minimum(predicted, 2) == np.minimum(labels, 2)).mean())  # blank, no crystal, hit
    assert three_way >= THREE_WAY_FLOOR, three_way


# What the shipped models measured (docs/models.md), less a margin for float rounding across machines.
ACCURACY_FLOOR = 0.97  # measured 0.975 (spotnet_hitmiss, session 9)
AUC_FLOOR = 0.99  # measured 0.9967
THREE_WAY_FLOOR = 0.97  # measured 0.980 (spotnet_fiveclass, session 10)
