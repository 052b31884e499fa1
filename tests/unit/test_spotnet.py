"""SpotNet: spot targets on the input grid, the soft spot count, training, checkpoint, finder, Grad-CAM."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.models.checkpoint import load_checkpoint, load_model
from sfx_cnnhit.models.data import file_geometry
from sfx_cnnhit.models.hitnet import fuse_conv_bn_
from sfx_cnnhit.models.preprocess import PreprocessConfig, input_map, preprocess
from sfx_cnnhit.models.spot_training import (
    SpotSet,
    SpotTrainConfig,
    fit_count_head,
    load_spot_set,
    train_spot_head,
)
from sfx_cnnhit.models.spotnet import BrightPeakCount, SpotCount, _window_max
from sfx_cnnhit.models.zoo import cam_layer, create_model
from tests.synthetic import simulate_train_val

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("layout", [None, PanelLayout.regular(2, 2, 32, 48)])
def test_input_map_puts_a_pixel_where_preprocess_puts_it(layout):
    rng = np.random.default_rng(0)
    config = PreprocessConfig(input_size=32, background_cell=8)
    frame = rng.normal(10.0, 1.0, (64, 96)).astype(np.float32)
    spot = np.zeros_like(frame, dtype=bool)
    frame[37, 70] = 1e4
    spot[37, 70] = True
    x = preprocess(frame, None, config, layout)[0, 0]
    target = input_map(spot, config, layout)[0]
    assert target.sum() == 1
    assert torch.argmax(target) == torch.argmax(x)


def test_spot_count_counts_confident_local_maxima_only():
    logits = torch.full((2, 1, 16, 16), -5.0)
    for r, c in [(2, 2), (8, 9), (13, 4)]:
        logits[0, 0, r, c] = 20.0
        logits[0, 0, r, c + 1] = 10.0  # a shoulder of the same spot: not a second maximum
    logits[1, 0, 5, 5] = -0.1  # a maximum below P = 0.5
    count = SpotCount()(logits)
    assert count.shape == (2, 1)
    assert math.expm1(float(count[0, 0])) == pytest.approx(3.0, abs=1e-6)
    assert float(count[1, 0]) == 0.0


def test_spot_count_does_not_count_lone_bright_pixels():
    logits = torch.full((1, 1, 8, 8), -5.0)
    z = torch.zeros(1, 1, 32, 32)
    cells = {(1, 1): [((5, 5), 40.0)],  # a lone pixel of z 40 (a zinger): not a spot
             (1, 5): [((5, 21), 40.0), ((5, 22), 3.0)],  # z 40 with a second pixel of z 3: a spot
             (5, 1): [((21, 5), 12.0)],  # a lone pixel under the rule's z 20: left to the spot head
             (5, 5): [((20, 20), 40.0), ((19, 19), 3.0)],  # the second pixel diagonal, in the next cell up
             (7, 7): [((31, 31), 60.0)]}  # a lone pixel on the input's edge
    for (r, c), pixels in cells.items():
        logits[0, 0, r, c] = 20.0
        for (row, col), value in pixels:
            z[0, 0, row, col] = value
    x = z.log1p()
    plain, rule = SpotCount(stride=4), SpotCount(lone_snr=20.0, stride=4)
    assert math.expm1(float(plain(logits, x))) == pytest.approx(5.0, abs=1e-5)
    assert math.expm1(float(rule(logits, x))) == pytest.approx(3.0, abs=1e-5)
    kept = rule.peaks(logits, x)[0, 0].nonzero().tolist()
    assert kept == [[1, 5], [5, 1], [5, 5]]
    assert math.expm1(float(rule(logits))) == pytest.approx(5.0, abs=1e-5)  # no input given: nothing to test
    with pytest.raises(ValueError, match="lone_snr > pair_snr"):
        SpotCount(lone_snr=2.0)


def test_the_lone_pixel_rule_keeps_every_weight(tmp_path):
    from sfx_cnnhit.errors import ConfigError
    from sfx_cnnhit.models.spot_training import with_lone_pixel_snr

    model, spec = create_model("spotnet_test")
    ruled, ruled_spec = with_lone_pixel_snr(model, spec, 20.0)
    assert ruled_spec.arch_kwargs["lone_pixel_snr"] == 20.0 and ruled.count.lone_snr == 20.0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ruled.state_dict()[key], value)
    assert with_lone_pixel_snr(ruled, ruled_spec, 0)[1].arch_kwargs["lone_pixel_snr"] is None
    with pytest.raises(ConfigError, match="above the second pixel"):
        with_lone_pixel_snr(model, spec, 2.0)


def test_bright_peak_count_counts_two_pixel_local_maxima_per_level():
    z = torch.zeros(3, 1, 32, 32)
    z[0, 0, 2, 2], z[0, 0, 2, 3] = 20.0, 9.0  # a peak of z 20 with a second pixel of z 9: one peak at 8 and 15
    z[0, 0, 20, 20], z[0, 0, 21, 21] = 9.0, 3.0  # a peak of z 9 (second pixel z 3, diagonal)
    z[0, 0, 28, 9], z[0, 0, 28, 10] = 7.0, 5.0  # below both levels
    z[0, 0, 31, 31], z[0, 0, 30, 31] = 12.0, 2.6  # on the edge
    z[1, 0, 10, 10] = 50.0  # a lone pixel (a spike): no peak
    z[1, 0, 5, 5], z[1, 0, 5, 6] = 30.0, 2.0  # its second pixel under z 2.5: no peak
    z[2, 0, 10, 10] = -30.0  # negative outliers are no peaks
    x = torch.copysign(z.abs().log1p(), z)  # the log scaling of preprocess
    counts = BrightPeakCount((8.0, 15.0))(x).expm1()
    torch.testing.assert_close(counts, torch.tensor([[3.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(BrightPeakCount((8.0,), second_snr=0.0)(x[1:2]).expm1(), torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match="positive"):
        BrightPeakCount((0.0,))


@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_window_max_is_max_pool(window):
    logits = torch.randn(2, 1, 13, 10).round()  # ties included
    reference = torch.nn.functional.max_pool2d(logits, window, 1, window // 2)
    assert torch.equal(_window_max(logits, window), reference)


def test_spotnet_forward_fusion_and_cam_layer():
    model, spec = create_model("spotnet_test", task="hitmiss")
    x = torch.randn(3, 1, 32, 32)
    model.eval()
    assert model.spot_logits(x).shape == (3, 1, 16, 16)
    out = model(x)
    assert out.shape == (3, 2)
    torch.testing.assert_close(fuse_conv_bn_(model)(x), out, atol=1e-5, rtol=1e-5)
    assert cam_layer(model, spec) is model.spots.logit


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    return simulate_train_val(tmp_path_factory.mktemp("spots"), 24)


def test_spot_targets_follow_the_true_bragg_mask(sim_files):
    _, train, _ = sim_files
    _, spec = create_model("spotnet_test", task="hitmiss", preprocess={"input_size": 64})
    data = load_spot_set([str(train)], spec, augment_seed=None, progress=False, min_sigma=0)
    visible = load_spot_set([str(train)], spec, augment_seed=None, progress=False)  # default: >= 3 sigma
    with h5py.File(train, "r") as f:
        bragg, hits = f["/truth/bragg_mask"][:], f["/truth/hit"][:].astype(bool)
    (batch,) = open_frames([train], geometry=file_geometry(train)).batches(24)  # the mask training reads
    bragg &= batch.mask
    assert data.inputs.shape == (24, 1, 64, 64) and data.inputs.dtype == torch.float16
    assert data.labels.tolist() == hits.astype(int).tolist()
    # 128x128 frames binned 2x2 into the 64x64 input: a target bin is set where its 4x4 pixels hold a good spot pixel.
    expected = bragg.reshape(24, 32, 4, 32, 4).any(axis=(2, 4))
    assert (data.targets[:, 0].numpy() == expected).all()
    assert data.targets[torch.from_numpy(~hits)].sum() == 0  # misses have no crystal, so no spots
    # Visible-spot targets: only Bragg bins that stand out of the noise, so a subset, and not empty.
    assert not (visible.targets & ~data.targets).any()
    assert 0 < visible.targets.sum() < data.targets.sum()
    # A stride-4 spot map: one cell per 4x4 input bins, i.e. 8x8 frame pixels.
    coarse = load_spot_set([str(train)], spec, augment_seed=None, progress=False, min_sigma=0, stride=4)
    assert coarse.stride == 4 and coarse.targets.shape == (24, 1, 16, 16)
    assert (coarse.targets[:, 0].numpy() == bragg.reshape(24, 16, 8, 16, 8).any(axis=(2, 4))).all()


def test_a_file_without_bragg_mask_is_a_clear_error(tmp_path, sim_files):
    _, train, _ = sim_files
    copy = tmp_path / "nomask.cxi"
    copy.write_bytes(train.read_bytes())
    with h5py.File(copy, "a") as f:
        del f["/truth/bragg_mask"]
    _, spec = create_model("spotnet_test", task="hitmiss")
    with pytest.raises(InputError, match="bragg_mask"):
        load_spot_set([str(copy)], spec, progress=False)


def test_training_frames_can_be_read_with_the_hot_pixel_map(tmp_path, sim_files):
    """A static hot pixel is a lone bright "no spot" pixel unless the run-level map masks it (--hot-pixel-map)."""
    _, train, _ = sim_files
    copy = tmp_path / "hot.cxi"
    copy.write_bytes(train.read_bytes())
    with h5py.File(copy, "a") as f:
        data = f["/entry_1/data_1/data"]
        data[:, 40, 70] = 1000 * data[:, 40, 70].max() + 1000  # every frame, far above any spot
    _, spec = create_model("spotnet_test", task="hitmiss", preprocess={"input_size": 64})
    clean = load_spot_set([str(train)], spec, augment_seed=None, progress=False).inputs[:, 0, 20, 35].float()
    kept = load_spot_set([str(copy)], spec, augment_seed=None, progress=False).inputs[:, 0, 20, 35].float()
    masked = load_spot_set([str(copy)], spec, augment_seed=None, progress=False, hot_pixels=DEFAULT_HOT_PIXELS)
    # 128x128 frames binned 2x2 (max): pixel (40, 70) is input bin (20, 35), which the map leaves to its other pixels
    assert (kept > clean + 3).all()
    assert (masked.inputs[:, 0, 20, 35].float() <= clean + 0.05).all()


def _blobs(n: int, seed: int) -> SpotSet:
    """Noise inputs; the hits carry 4-8 three-pixel-wide spots, the misses single-pixel spikes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 1, 32, 32), generator=gen) * 0.5
    targets = torch.zeros((n, 1, 16, 16), dtype=torch.bool)
    labels = (torch.arange(n) % 2 == 0).long()
    for i in range(n):
        for _ in range(int(torch.randint(4, 9, (1,), generator=gen))):
            r, c = (int(v) for v in 2 * torch.randint(2, 14, (2,), generator=gen))
            if labels[i]:
                x[i, 0, r - 1 : r + 2, c - 1 : c + 2] += 3.0
                targets[i, 0, (r - 1) // 2 : (r + 1) // 2 + 1, (c - 1) // 2 : (c + 1) // 2 + 1] = True
            else:
                x[i, 0, r, c] += 3.0
    return SpotSet(x.half(), targets, labels)


def test_training_learns_spots_and_the_count_separates_hits():
    torch.manual_seed(0)
    model, _ = create_model("spotnet_test", task="hitmiss")
    losses = train_spot_head(model, _blobs(64, 1), SpotTrainConfig(steps=300, batch_size=16, crop=16, lr=1e-2),
                             progress=False)
    assert losses[-1] < 0.5 * losses[0]
    val = _blobs(40, 2)
    with torch.no_grad():
        features = model.eval().features(val.inputs.float())
    fitted = fit_count_head(model, features, val.labels)
    assert fitted["spots_at_half"] > 0 and fitted["val_accuracy"] >= 0.9


def test_train_spots_cli_writes_a_model_the_finder_runs(sim_files):
    root, train, val = sim_files
    out = root / "spot.pt"
    args = ["train-spots", str(train), "--val", str(val), "-o", str(out), "--arch", "spotnet_test",
            "--steps", "30", "--crop", "16", "--channels", "4,8", "--stride", "2",
            "--no-augment-hot", "--hot-pixel-map", "--peak-snr", "8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    assert ckpt.spec.name == "spotnet_test"
    assert ckpt.spec.arch_kwargs["channels"] == (4, 8) and ckpt.spec.arch_kwargs["stride"] == 2
    assert load_model(out)[0].spot_logits(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 16, 16)
    assert {"spot_training", "count_head", "calibration"} <= set(ckpt.metrics)
    assert [entry["n_frames"] for entry in ckpt.recipe["train"]] == [24]
    assert ckpt.recipe["spot_training"]["hot_pixel_map"] and not ckpt.recipe["spot_training"]["augment_hot"]
    assert ckpt.spec.arch_kwargs["peak_snr"] == (8.0,) and len(ckpt.metrics["count_head"]["weight"][0]) == 2
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "exists" in again.output
    with h5py.File(val, "r") as f:
        frames = f["/entry_1/data_1/data"][:4]
    scores = CnnHitFinder(model=out, device="cpu").hit_probability(frames)
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 1))
    bad = CliRunner().invoke(app, [*args[:5], str(root / "bad.pt"), *args[6:-8], "--channels", "8"])
    assert bad.exit_code != 0 and "--channels" in bad.output
    # a calibrated SpotNet can be recalibrated: the count head is refitted on the given frames
    recal = root / "spot_recal.pt"
    result = CliRunner().invoke(app, ["calibrate", str(out), "--val", str(train), "-o", str(recal)])
    assert result.exit_code == 0, result.output
    refit = load_checkpoint(recal)
    assert refit.metrics["count_head"] != ckpt.metrics["count_head"]
    assert refit.metrics["calibration"]["val_files"][0]["path"] == str(train)
    torch.testing.assert_close(refit.state_dict["spots.logit.weight"], ckpt.state_dict["spots.logit.weight"])
    # ... with other bright-peak levels (0: none), the spot head kept
    for levels, inputs in ((["0"], 1), (["6", "--peak-snr", "10", "--peak-snr", "20"], 4)):
        other = root / f"spot_peaks{inputs}.pt"
        result = CliRunner().invoke(app, ["calibrate", str(out), "--val", str(val), "-o", str(other), "--peak-snr",
                                          *levels])
        assert result.exit_code == 0, result.output
        refit = load_checkpoint(other)
        assert len(refit.spec.arch_kwargs["peak_snr"]) == inputs - 1
        assert len(refit.metrics["count_head"]["weight"][0]) == inputs
        torch.testing.assert_close(refit.state_dict["spots.stem.0.weight"], ckpt.state_dict["spots.stem.0.weight"])
        assert load_model(other)[0](torch.zeros(2, 1, 32, 32)).shape == (2, 2)
    # ... or only its thresholds, with the lone-pixel rule switched on (every weight kept)
    ruled = root / "spot_ruled.pt"
    result = CliRunner().invoke(app, ["calibrate", str(out), "--val", str(val), "-o", str(ruled), "--threshold-only",
                                      "--lone-pixel-snr", "20", "--labels", "/truth/hit"])
    assert result.exit_code == 0, result.output
    kept = load_checkpoint(ruled)
    assert kept.spec.arch_kwargs["lone_pixel_snr"] == 20.0 and kept.metrics["count_head"] == ckpt.metrics["count_head"]
    assert load_model(ruled)[0].count.lone_snr == 20.0


def test_five_class_spotnet_feeds_the_diffuse_contrast_to_its_head():
    model, _ = create_model("spotnet_test", task="fiveclass", diffuse=True)
    model.eval()
    flat = torch.randn(1, 1, 32, 32) * 0.3
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ring = flat + 3.0 * torch.exp(-(((yy - 16).square() + (xx - 16).square()).sqrt() - 10).square() / 8)
    features = model.features(torch.cat([flat, ring]))
    assert features.shape == (2, 2) and model(ring).shape == (1, 5)
    assert features[0, 1] < 0.2 < 0.5 < features[1, 1]
