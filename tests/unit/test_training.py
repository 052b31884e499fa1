"""Training loop, augmentation, checkpoints (round trip, resume) and model loading."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sfx_cnnhit.cli.simulate import detector_config
from sfx_cnnhit.errors import ConfigError, InputError, NotAvailableError
from sfx_cnnhit.models import checkpoint as ckpt_mod
from sfx_cnnhit.models.augment import AugmentConfig, augment
from sfx_cnnhit.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from sfx_cnnhit.models.data import SimulatedFrames, round_robin
from sfx_cnnhit.models.inference import ArrayBatches, predict_batches, predict_proba
from sfx_cnnhit.models.tasks import TASK_CLASSES
from sfx_cnnhit.models.training import PRESETS, TrainConfig, train
from sfx_cnnhit.models.zoo import create_model


def spot_frames(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise frames; odd-indexed ones (label 1 = hit) carry 6 bright 2x2 spots."""
    rng = np.random.default_rng(seed)
    frames = rng.poisson(3.0, size=(n, size, size)).astype(np.float32)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        for s, f in rng.integers(2, size - 3, size=(6, 2)):
            frames[i, s : s + 2, f : f + 2] += rng.uniform(40, 200)
    return frames, labels


FAST = TrainConfig(epochs=3, batch_size=16, lr=2e-2, lr_gamma=0.9, device="cpu", augment=None, seed=3)


def test_tiny_training_lowers_the_loss(tmp_path) -> None:
    torch.manual_seed(0)
    model, spec = create_model("hitnet_test", "hitmiss", preprocess={"input_size": 32})
    frames, labels = spot_frames(96)
    val_frames, val_labels = spot_frames(32, seed=1)
    config = replace(FAST, epochs=6, augment=AugmentConfig(max_hot=2))  # a few hot pixels: still separable
    result = train(
        model,
        spec,
        ArrayBatches(frames, labels, batch_size=16, seed=0),
        val_data=ArrayBatches(val_frames, val_labels, batch_size=32, shuffle=False),
        config=config,
        checkpoint_dir=tmp_path,
        recipe={"generator": "spot_frames", "seeds": [0, 1]},
        progress=False,
    )
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.history[1]["lr"] == pytest.approx(config.lr * config.lr_gamma)
    best = load_checkpoint(result.checkpoint)
    assert best.training is None and best.recipe["seeds"] == [0, 1]
    assert best.metrics["epoch"] == result.best_epoch
    assert best.recipe["train_config"]["lr"] == config.lr
    assert load_checkpoint(tmp_path / "last.pt").training["epoch"] == 5


def test_mixed_batches_train_on_both_detectors_at_once() -> None:
    """``mix_batches`` joins batches of different frame shapes (detectors) into one step."""
    model, spec = create_model("hitnet_test", "hitmiss", preprocess={"input_size": 32})
    small, small_labels = spot_frames(16, size=32)
    large, large_labels = spot_frames(16, size=64, seed=1)
    seen: list[int] = []
    model.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    data = [(torch.from_numpy(f[i : i + 4]), torch.ones(4, *f.shape[1:], dtype=torch.bool),
             torch.from_numpy(y[i : i + 4])) for f, y in ((small, small_labels), (large, large_labels))
            for i in range(0, 16, 4)]
    result = train(model, spec, data, config=replace(FAST, epochs=1, mix_batches=3), progress=False)
    assert seen == [12, 12, 8]  # 8 source batches of 4 frames in steps of 3, 3 and 2 batches
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match="mix_batches"):
        replace(FAST, mix_batches=0)


def test_checkpoint_round_trip_is_bit_identical(tmp_path) -> None:
    torch.manual_seed(1)
    model, spec = create_model("hitnet_test", "fiveclass")
    model.train()
    model(torch.randn(8, 1, 32, 32))  # move the BN running statistics away from their defaults
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, spec, recipe={"seed": 5}, metrics={"accuracy": 0.5})
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec and not loaded.training
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    ck = load_checkpoint(path)
    assert ck.code["version"] and "git_commit" in ck.code
    assert ck.recipe == {"seed": 5} and ck.metrics == {"accuracy": 0.5}
    assert ck.summary()["parameters"] > 0
    fast, _ = load_model(path, optimize=True)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)


def test_resume_continues_exactly(tmp_path) -> None:
    frames, labels = spot_frames(48, size=32)
    data = ArrayBatches(frames, labels, batch_size=16, seed=2)
    config = replace(FAST, epochs=2, augment=AugmentConfig())

    torch.manual_seed(0)
    straight, spec = create_model("hitnet_test")
    train(straight, spec, data, config=config, progress=False)

    torch.manual_seed(0)
    first, _ = create_model("hitnet_test")
    train(first, spec, data, config=replace(config, epochs=1), checkpoint_dir=tmp_path,
          progress=False)
    resumed, _ = create_model("hitnet_test")
    result = train(resumed, spec, data, config=config, resume=tmp_path / "last.pt", progress=False)
    assert [r["epoch"] for r in result.history] == [0, 1]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    other, other_spec = create_model("hitnet_test", "fiveclass")
    with pytest.raises(ConfigError):
        train(other, other_spec, data, config=config, resume=tmp_path / "last.pt", progress=False)


def test_resume_writes_best_again_when_killed_between_last_and_best(tmp_path) -> None:
    frames, labels = spot_frames(32, size=32)
    data = ArrayBatches(frames, labels, batch_size=16, seed=2)
    config = replace(FAST, epochs=1)  # without validation every epoch is the best so far
    model, spec = create_model("hitnet_test")
    train(model, spec, data, config=config, checkpoint_dir=tmp_path, progress=False)
    (tmp_path / "best.pt").unlink()  # the kill came after last.pt, before best.pt
    resumed, _ = create_model("hitnet_test")
    train(resumed, spec, data, config=config, checkpoint_dir=tmp_path, resume=tmp_path / "last.pt", progress=False)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.metrics["epoch"] == 0 and best.training is None
    assert all(torch.equal(best.state_dict[key], value) for key, value in model.state_dict().items())


def test_preprocessed_batches_and_predictions() -> None:
    torch.manual_seed(0)
    model, spec = create_model("hitnet_test")
    x = torch.randn(10, 1, 32, 32)
    y = torch.arange(10) % 2
    train(model, spec, ArrayBatches(x, y, batch_size=5), config=FAST, progress=False)
    probs, labels = predict_batches(model, spec, ArrayBatches(x, y, batch_size=4, shuffle=False))
    assert probs.shape == (10, 2) and np.allclose(probs.sum(1), 1, atol=1e-6)
    assert labels.tolist() == y.tolist()
    frames, _ = spot_frames(5, size=64)
    p = predict_proba(model, spec, frames, np.ones((64, 64), bool), batch_size=2)
    assert p.shape == (5, 2)
    with pytest.raises(InputError, match="labels must be in"):
        train(model, spec, [(x, y + 5)], config=FAST, progress=False)
    with pytest.raises(InputError, match="no frames"):
        train(model, spec, [], config=FAST, progress=False)


def test_augment_keeps_inputs_and_puts_bad_values_only_under_the_mask() -> None:
    frames, _ = spot_frames(16, size=48)
    data = torch.from_numpy(frames)
    mask = torch.ones_like(data, dtype=torch.bool)
    before = data.clone()
    cfg = AugmentConfig(p_gaps=1.0, p_mask_rect=1.0, p_hot=1.0, p_bad_values=1.0)
    out, out_mask = augment(data, mask, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(data, before) and mask.all()
    assert out.shape == data.shape and out_mask.shape == mask.shape
    assert (~out_mask).any()
    assert torch.isfinite(out[out_mask]).all()
    assert (~torch.isfinite(out[~out_mask])).any() or (out[~out_mask] == 1e30).any()
    again, again_mask = augment(data, mask, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(again_mask, out_mask) and torch.equal(torch.nan_to_num(again), torch.nan_to_num(out))


def test_array_batches_reshuffle_reproducibly() -> None:
    x = torch.arange(10).float().reshape(10, 1, 1, 1)
    batches = ArrayBatches(x, torch.zeros(10), batch_size=4, seed=1)
    assert len(batches) == 3
    order = [b[0].flatten().tolist() for b in batches.for_epoch(0)]
    assert order == [b[0].flatten().tolist() for b in batches.for_epoch(0)]
    assert order != [b[0].flatten().tolist() for b in batches.for_epoch(1)]
    assert sorted(v for batch in order for v in batch) == list(range(10))


def test_presets_and_config_validation() -> None:
    seed = PRESETS["seed"]
    assert (seed.lr, seed.batch_size, seed.epochs, seed.augment) == (1e-5, 128, 50, None)
    with pytest.raises(ConfigError):
        TrainConfig(class_weights="inverse")
    with pytest.raises(ConfigError):
        TrainConfig(lr_gamma=1.5)
    assert TrainConfig(class_weights=[1, 2]).class_weights == (1.0, 2.0)
    for preset in PRESETS.values():
        assert TrainConfig.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset
    with pytest.raises(ConfigError, match=r"augment\.colour"):
        TrainConfig.from_dict({"augment": {"colour": 1}})


def test_load_model_default_and_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ckpt_mod, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(NotAvailableError, match="no shipped model"):
        load_model()
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "elsewhere" / "junk.pt"
    junk.parent.mkdir()
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable"):
        load_model(junk)
    model, spec = create_model("hitnet_test")
    save_checkpoint(tmp_path / f"{ckpt_mod.DEFAULT_MODEL}.pt", model, spec)
    loaded, loaded_spec = load_model()
    assert loaded_spec == spec and not loaded.training
    assert ckpt_mod.shipped_models() == [ckpt_mod.DEFAULT_MODEL]


def test_round_robin_alternates_until_every_source_is_done() -> None:
    assert list(round_robin([[1, 2, 3], [], "ab"])) == [1, "a", 2, "b", 3]


def test_simulated_frames_share_detectors_and_do_not_depend_on_workers() -> None:
    """Several detectors per epoch, their batches alternating; the frames are the same with workers."""
    configs = [detector_config("square512:48"), detector_config("rayonix:40")]
    one = SimulatedFrames(5, class_names=TASK_CLASSES["hitmiss"], batch_size=2, configs=configs, seed=4)
    assert one.frames_per_detector == [3, 2] and len(one) == 3
    batches = list(one(1))
    assert [b[0].shape[1:] for b in batches] == [(48, 48), (40, 40), (48, 48)]
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert all(set(b[2].tolist()) <= {0, 1} for b in batches)
    parallel = SimulatedFrames(5, class_names=TASK_CLASSES["hitmiss"], batch_size=2, configs=configs, seed=4,
                               workers=4)
    assert parallel.workers_per_detector == [2, 2]  # in proportion to the pixels: 2304 and 1600
    for a, b in zip(batches, parallel(1), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(batches[0][0], next(iter(one(2)))[0])  # every epoch is fresh
    with pytest.raises(ConfigError, match="workers"):
        SimulatedFrames(4, class_names=TASK_CLASSES["hitmiss"], workers=0)
