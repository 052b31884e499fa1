"""Post-hoc calibration on validation frames: logit offsets, the hit threshold, and the checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import ConfigError, OutputError
from sfx_cnnhit.models.calibration import (
    CALIBRATION,
    DECISION_THRESHOLD,
    apply_logit_offsets_,
    best_accuracy_threshold,
    calibration_record,
    fit_logit_offsets,
)
from sfx_cnnhit.models.checkpoint import FALLBACK_THRESHOLD, load_checkpoint, model_threshold, save_checkpoint
from sfx_cnnhit.models.fit import calibrate_checkpoint
from sfx_cnnhit.models.zoo import create_model
from sfx_cnnhit.simulate import SimulationConfig, simulate_to_file


def test_offsets_undo_a_known_shift_of_the_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    true_logits = rng.normal(0, 1, (3000, 3))
    true_logits[np.arange(3000), labels] += 2.5  # informative logits, drawn so labels follow them
    shift = np.array([0.0, 1.2, -0.8])
    offsets = fit_logit_offsets(true_logits - shift, labels)
    np.testing.assert_allclose(offsets - offsets.mean(), shift - shift.mean(), atol=0.15)


def test_best_accuracy_threshold_sits_in_the_middle_of_the_clean_gap():
    p = np.array([0.01, 0.02, 0.10, 0.60, 0.95, 0.99])
    y = np.array([False, False, False, True, True, True])
    t = best_accuracy_threshold(p, y)
    assert 0.10 < t < 0.60  # every threshold in the gap is perfect; the middle in log-odds is chosen
    logit = np.log(np.array([0.10, 0.60]) / (1 - np.array([0.10, 0.60])))
    assert np.log(t / (1 - t)) == pytest.approx(logit.mean())
    # a miss scored above a hit: the best threshold still gets 5 of 6 right
    t = best_accuracy_threshold([0.1, 0.7, 0.4, 0.9], [False, False, True, True])
    assert np.mean((np.array([0.1, 0.7, 0.4, 0.9]) >= t) == np.array([False, False, True, True])) == 0.75


def test_offsets_go_into_the_output_layer():
    torch.manual_seed(0)
    model, spec = create_model("hitnet_test", task="fiveclass")
    model.eval()
    x = torch.randn(4, 1, spec.input_size, spec.input_size)
    before = model(x).detach()
    offsets = np.array([0.5, -0.5, 0.0, 1.0, -1.0])
    apply_logit_offsets_(model, offsets)
    torch.testing.assert_close(model(x).detach() - before, torch.tensor(offsets, dtype=torch.float32).expand(4, 5))


def test_record_improves_shifted_validation_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 500)
    logits = rng.normal(0, 1, (500, 5))
    logits[np.arange(500), labels] += 4.0
    logits[:, 1] += 3.0  # a biased network: everything leans to class 1 (a miss class)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    record, calibrated = calibration_record(probs, labels, (2, 3, 4))
    assert calibrated.shape == probs.shape
    assert record["val_accuracy_after"] > record["val_accuracy_before"] + 0.15
    assert record["val_hit_accuracy_after"] >= record["val_hit_accuracy_at_0.5_before"]
    assert 0.0 < record[DECISION_THRESHOLD] < 1.0


def test_calibrate_checkpoint_and_cli(tmp_path):
    config = SimulationConfig().with_overrides(detector__size=128)
    val = simulate_to_file(tmp_path / "val.cxi", 15, seed=5, config=config, split="val")
    model, spec = create_model("hitnet_test", task="fiveclass")
    raw = save_checkpoint(tmp_path / "raw.pt", model.eval(), spec)
    assert model_threshold(raw) == FALLBACK_THRESHOLD
    path, record = calibrate_checkpoint(raw, [str(val)], tmp_path / "cal.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.metrics[CALIBRATION]["logit_offsets"] == record["logit_offsets"]
    assert model_threshold(path) == pytest.approx(record[DECISION_THRESHOLD])
    assert ckpt.metrics[CALIBRATION]["val_files"][0]["split"] == "val"
    with pytest.raises(OutputError):
        calibrate_checkpoint(raw, [str(val)], path)
    with pytest.raises(ConfigError, match="already calibrated"):
        calibrate_checkpoint(path, [str(val)], tmp_path / "twice.pt")
    result = CliRunner().invoke(app, ["calibrate", str(raw), "--val", str(val), "-o", str(tmp_path / "cli.pt")])
    assert result.exit_code == 0, result.output
    assert "hit threshold" in result.output and (tmp_path / "cli.pt").is_file()


def test_a_fiveclass_model_starts_a_hitmiss_one():
    from sfx_cnnhit.models.fit import transfer_state

    torch.manual_seed(1)
    five, five_spec = create_model("hitnet_test", task="fiveclass")
    hitmiss, hm_spec = create_model("hitnet_test", task="hitmiss")
    hitmiss.load_state_dict(transfer_state(five.state_dict(), five_spec, hitmiss, hm_spec))
    five.eval()
    hitmiss.eval()
    x = torch.randn(3, 1, five_spec.input_size, five_spec.input_size)
    z5, z2 = five(x).detach(), hitmiss(x).detach()
    # each output is the mean of the merged classes' logits: miss = blank, no_crystal; hit = the rest
    torch.testing.assert_close(z2[:, 0], z5[:, :2].mean(dim=1))
    torch.testing.assert_close(z2[:, 1], z5[:, 2:].mean(dim=1))


def test_a_hitmiss_model_starts_a_fiveclass_one():
    from sfx_cnnhit.models.fit import transfer_state

    torch.manual_seed(2)
    hitmiss, hm_spec = create_model("hitnet_test", task="hitmiss")
    five, five_spec = create_model("hitnet_test", task="fiveclass")
    five.load_state_dict(transfer_state(hitmiss.state_dict(), hm_spec, five, five_spec))
    five.eval()
    hitmiss.eval()
    x = torch.randn(3, 1, five_spec.input_size, five_spec.input_size)
    z5, z2 = five(x).detach(), hitmiss(x).detach()
    # blank and no_crystal start as the miss logit, weak, good and strong as the hit logit
    torch.testing.assert_close(z5, z2[:, [0, 0, 1, 1, 1]])
