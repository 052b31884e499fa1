"""`train` -> checkpoint -> `evaluate` -> `reduce --target-hit-recall`, end to end on tiny simulated files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.models.checkpoint import load_checkpoint
from sfx_cnnhit.models.metrics import VALIDATION_HIT_SCORES
from tests.synthetic import simulate_train_val


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return simulate_train_val(tmp_path_factory.mktemp("sim"), 40)


def test_train_evaluate_reduce(files):
    root, train, val = files
    runner = CliRunner()
    model = root / "m.pt"
    result = runner.invoke(
        app,
        [
            "train",
            str(train),
            "--val",
            str(val),
            "-o",
            str(model),
            "--arch",
            "hitnet_test",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--task",
            "fiveclass",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(model)
    assert ckpt.spec.name == "hitnet_test" and ckpt.spec.task == "fiveclass"
    assert len(ckpt.metrics["history"]) == 2
    assert ckpt.recipe["train_files"][0]["split"] == "train"
    hits_in_val = sum(1 for _ in ckpt.metrics[VALIDATION_HIT_SCORES])
    assert hits_in_val == 12  # 3 of 5 equal class shares of 20 frames are hits
    # the same command refuses to overwrite the checkpoint
    again = runner.invoke(app, ["train", str(train), "-o", str(model), "--arch", "hitnet_test", "--epochs", "1"])
    assert again.exit_code == 2 and "exists" in again.output

    out = root / "eval.json"
    result = runner.invoke(app, ["evaluate", str(val), "--model", str(model), "--json", str(out), "--plots", str(root)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    for key in (
        "n_frames",
        "class_names",
        "accuracy",
        "precision",
        "recall",
        "confusion_matrix",
        "hit_accuracy",
        "hit_recall",
        "miss_rejection",
        "threshold",
    ):
        assert key in summary
    assert summary["n_frames"] == 20 and sum(map(sum, summary["confusion_matrix"])) == 20
    assert (root / "roc_pr.png").exists()
    hitmiss = runner.invoke(app, ["evaluate", str(val), "--model", str(model), "--labels", "/truth/hit"])
    assert hitmiss.exit_code == 0, hitmiss.output

    result = runner.invoke(
        app,
        [
            "reduce",
            str(val),
            "-o",
            str(root / "red"),
            "--model",
            str(model),
            "--target-hit-recall",
            "1.0",
            "--explain",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    red = json.loads((root / "red" / "summary.json").read_text())
    assert red["settings"]["threshold"] == pytest.approx(min(ckpt.metrics[VALIDATION_HIT_SCORES]), abs=1e-6)


def test_labelled_files_use_their_geometry(files, tmp_path):
    """The geometry beside a file (as simulate writes it) gives the panels and gain; -g overrides it."""
    from sfx_cnnhit.io.geometry import read_geometry
    from sfx_cnnhit.models.data import LabelledFrames

    _, _, val = files
    geom = val.with_suffix(".geom").read_text()
    assert "adu_per_photon = 1\n" in geom
    (tmp_path / "x.cxi").symlink_to(val)
    (tmp_path / "x.geom").write_text(geom.replace("adu_per_photon = 1\n", "adu_per_photon = 7\n"))
    (tmp_path / "y.cxi").symlink_to(val)
    classes = ["blank", "no_crystal", "weak", "good", "strong"]
    beside = LabelledFrames([tmp_path / "x.cxi", tmp_path / "y.cxi"], class_names=classes)
    assert beside.layouts[0].adu_per_photon == 7.0 and beside.layouts[1] is None
    given = LabelledFrames(
        [tmp_path / "x.cxi"], class_names=classes, geometry=read_geometry(val.with_suffix(".geom"))
    )
    assert given.layouts[0].adu_per_photon == 1.0


def test_train_on_frames_simulated_for_several_detectors(tmp_path):
    runner = CliRunner()
    model = tmp_path / "sim.pt"
    args = ["train", "--simulate", "6", "--simulate-detector", "square512:48", "--simulate-detector", "rayonix:40",
            "-j", "2", "--task", "hitmiss", "--arch", "hitnet_test", "--epochs", "1", "--batch-size", "4"]
    result = runner.invoke(app, [*args, "-o", str(model)])
    assert result.exit_code == 0, result.output
    recipe = load_checkpoint(model).recipe
    assert recipe["simulate_per_epoch"] == 6
    assert [(c["detector"]["name"], c["detector"]["size"]) for c in recipe["simulate_configs"]] == [
        ("square512", 48), ("rayonix", 40)]
    bad = runner.invoke(app, [*args[:4], "nowhere", "-o", str(tmp_path / "bad.pt")])
    assert bad.exit_code == 2 and "unknown detector 'nowhere'" in bad.output
