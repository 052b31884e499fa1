"""Post-hoc calibration on validation frames: logit offsets, the hit threshold, and the checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import ConfigError, InputError, OutputError
from sfx_cnnhit.models.calibration import (
    CALIBRATION,
    DECISION_THRESHOLD,
    UNBINNED_THRESHOLD,
    apply_logit_offsets_,
    best_accuracy_threshold,
    calibration_record,
    fit_logit_offsets,
    frame_thresholds,
    hit_thresholds,
)
from sfx_cnnhit.models.checkpoint import (
    FALLBACK_THRESHOLD,
    decision_threshold,
    load_checkpoint,
    model_threshold,
    save_checkpoint,
)
from sfx_cnnhit.models.fit import calibrate_checkpoint, evaluate_files, threshold_checkpoint
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


def test_binned_and_unbinned_frames_get_a_threshold_each():
    # unbinned frames separate at P(hit) 0.1-0.2, binned ones (more false spots) at 0.6-0.8
    p = np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.9, 0.3, 0.5, 0.6, 0.8, 0.85, 0.95])
    y = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1], bool)
    k = np.array([1] * 6 + [3] * 6)
    t = hit_thresholds(p, y, k)
    assert 0.1 < t[UNBINNED_THRESHOLD] < 0.2 and 0.6 < t[DECISION_THRESHOLD] < 0.8
    assert np.all((p >= frame_thresholds(t, k)) == y)
    assert not np.all((p >= best_accuracy_threshold(p, y)) == y)  # one threshold for both gets one wrong
    # one kind of frame only, or no bin factors: one threshold, as before
    assert hit_thresholds(p[:6], y[:6], k[:6]) == {DECISION_THRESHOLD: best_accuracy_threshold(p[:6], y[:6])}
    assert hit_thresholds(p, y) == {DECISION_THRESHOLD: best_accuracy_threshold(p, y)}
    with pytest.raises(InputError, match="one bin factor per"):
        hit_thresholds(p, y, k[:5])
    # a checkpoint's metrics: frames of bin factor 1 take their own threshold where there is one
    assert decision_threshold(t, 1) == t[UNBINNED_THRESHOLD]
    assert decision_threshold(t, 2) == decision_threshold(t) == t[DECISION_THRESHOLD]
    assert decision_threshold({DECISION_THRESHOLD: 0.4}, 1) == 0.4
    # the full calibration records both and scores each frame at its own
    probs = np.stack([1 - p, p], axis=1)
    record, _ = calibration_record(probs, y.astype(np.int64), (1,), bin_factors=k)
    assert UNBINNED_THRESHOLD in record and record["val_hit_accuracy_after"] == 1.0


def test_threshold_only_calibration_of_binned_and_unbinned_files(tmp_path):
    from sfx_cnnhit.finders.cnn import CnnHitFinder

    small = simulate_to_file(tmp_path / "small.cxi", 8, seed=6, split="val",
                             config=SimulationConfig().with_overrides(detector__size=128))
    big = simulate_to_file(tmp_path / "big.cxi", 8, seed=7, split="val",
                           config=SimulationConfig().with_overrides(detector__size=256))
    torch.manual_seed(3)
    model, spec = create_model("hitnet_test", preprocess={"input_size": 128})  # 128² frames: bin 1; 256²: bin 2
    raw = save_checkpoint(tmp_path / "raw.pt", model.eval(), spec, metrics={DECISION_THRESHOLD: 0.5})
    path, record = threshold_checkpoint(raw, [str(small), str(big)], tmp_path / "thr.pt")
    assert record["before"] == {DECISION_THRESHOLD: 0.5} and record["n_frames"] == 16
    with pytest.raises(ConfigError, match="lone-pixel rule is a SpotNet's"):
        threshold_checkpoint(raw, [str(small)], tmp_path / "rule.pt", lone_pixel_snr=20.0)
    ckpt = load_checkpoint(path)
    for key, value in model.state_dict().items():  # weights untouched
        torch.testing.assert_close(ckpt.state_dict[key], value)
    # each kind of frame is judged at the threshold fitted on its own kind (evaluate, the finder)
    for files, expected in (([small], record[UNBINNED_THRESHOLD]), ([big], record[DECISION_THRESHOLD])):
        summary, p_hit, is_hit, _ = evaluate_files([str(f) for f in files], model=path, labels="/truth/hit")
        assert summary["hit_threshold"] == pytest.approx(expected)
        assert summary["hit_threshold"] == pytest.approx(hit_thresholds(p_hit, is_hit)[DECISION_THRESHOLD])
    both, _, _, _ = evaluate_files([str(small), str(big)], model=path, labels="/truth/hit")
    assert record[UNBINNED_THRESHOLD] != record[DECISION_THRESHOLD]  # these seeds: the two kinds differ
    assert both["hit_threshold"] == sorted([record[UNBINNED_THRESHOLD], record[DECISION_THRESHOLD]])
    shown = CliRunner().invoke(app, ["evaluate", str(small), str(big), "--model", str(path), "--labels", "/truth/hit"])
    assert shown.exit_code == 0, shown.output
    assert "binned and unbinned frames have their own" in " ".join(shown.output.split())
    finder = CnnHitFinder(model=path, hot_pixel_map=False)
    assert finder.threshold_for((128, 128)) == pytest.approx(record[UNBINNED_THRESHOLD])
    assert finder.threshold_for((256, 256)) == finder.threshold == pytest.approx(record[DECISION_THRESHOLD])
    assert finder.with_threshold(0.3).threshold_for((128, 128)) == 0.3  # a given threshold holds for all
    assert CnnHitFinder(model=path, threshold=0.3, hot_pixel_map=False).threshold_for((128, 128)) == 0.3
    # a full recalibration on one kind of frame drops the other kind's threshold
    calibrate_checkpoint(path, [str(big)], tmp_path / "full.pt", labels="/truth/hit")
    assert UNBINNED_THRESHOLD not in load_checkpoint(tmp_path / "full.pt").metrics
    result = CliRunner().invoke(app, ["calibrate", str(raw), "--threshold-only", "--labels", "/truth/hit",
                                      "--val", str(small), "--val", str(big), "-o", str(tmp_path / "cli.pt")])
    assert result.exit_code == 0, result.output
    assert "for unbinned ones" in result.output


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
