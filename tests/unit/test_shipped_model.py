"""The model shipped inside the package: it loads by default, carries its provenance, and separates
clear hits from clear misses on fresh simulated frames (seeds never used in training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.models import checkpoint as ckpt_mod
from sfx_cnnhit.models.checkpoint import load_checkpoint, resolve_model_path, shipped_models
from sfx_cnnhit.simulate import SimulationConfig, Simulator

PROVENANCE_KEYS = {"model", "architecture", "task", "classes", "training_data", "code_commit", "command", "metrics"}


def test_the_default_model_is_shipped():
    assert ckpt_mod.DEFAULT_MODEL in shipped_models()


@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_model_carries_its_provenance(name):
    path = resolve_model_path(name)
    assert path.stat().st_size < 10 * 2**20
    ckpt = load_checkpoint(path)
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance.keys() >= PROVENANCE_KEYS
    assert provenance["architecture"] == ckpt.spec.name and provenance["classes"] == list(ckpt.spec.class_names)
    train_seeds = {f["seed"] for f in provenance["training_data"]["train"] + provenance["training_data"]["val"]}
    test_seeds = {f["seed"] for f in provenance["training_data"]["test"]}
    assert train_seeds and test_seeds and not train_seeds & test_seeds
    assert ckpt.metrics.get("validation_hit_scores"), "reduce --target-hit-recall needs the validation scores"


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_default_model_separates_clear_hits_from_misses(precision):
    # A seed that no shipped model was trained, validated or tested on; blank frames against good and
    # strong hits, which any useful veto must get right.
    sim = Simulator(SimulationConfig(), seed=90210, split="test")
    labels = np.array([0, 0, 0, 3, 3, 4, 4, 0])
    batch = sim.generate(labels)
    finder = CnnHitFinder(device="cpu", precision=precision)
    scores = finder.hit_probability(batch.data, batch.mask)
    np.testing.assert_array_equal(scores >= 0.5, labels >= 2)


def test_the_default_model_vetoes_an_integrating_detector_given_its_gain():
    """CSPAD frames in ADU (32 ADU/photon), judged as the OM and Cheetah plugins judge them (hot pixels
    learned from the frames shown, here one batch): with the geometry's panels and gain the veto rejects
    blanks and keeps strong hits; read as one 1-ADU-per-photon image, every stray photon looks like a spot."""
    from sfx_cnnhit.models.preprocess import panel_layout_for

    sim = Simulator(SimulationConfig().with_overrides(detector__name="cspad"), seed=90211, split="test")
    labels = np.array([0, 0, 4, 4])
    batch = sim.generate(labels)
    layout = panel_layout_for(sim.geometry)
    assert layout.adu_per_photon == pytest.approx(32.11)
    finder = CnnHitFinder(device="cpu", panel_layout=layout)
    np.testing.assert_array_equal(finder.classify(batch.data, batch.mask).hits, labels >= 2)


def test_demo_reduces_a_simulated_run_with_the_shipped_model(tmp_path):
    from typer.testing import CliRunner

    from sfx_cnnhit.cli.app import app

    folder = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(folder), "--n-frames", "40", "--hit-rate", "0.25"])
    assert result.exit_code == 0, result.output
    summary = json.loads((folder / "reduced" / "summary.json").read_text())
    assert summary["method"] == "cnn" and summary["frames_read"] == 40
    assert (folder / "reduced" / "hits.cxi").is_file() and (folder / "hits.png").is_file()
    assert "true hits" in result.output and "hits.png" in result.output
