"""Representation inversion and activation histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.explain.histograms import activation_histograms
from sfx_cnnhit.explain.inversion import alpha_norm, inversion_layers, invert_representation, total_variation
from sfx_cnnhit.models import create_model, preprocess
from sfx_cnnhit.models.zoo import make_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spot_frame(size: int, seed: int) -> np.ndarray:
    """A noise frame with a few bright spots of different sizes and a smooth ring."""
    rng = np.random.default_rng(seed)
    frame = rng.normal(0.0, 2.0, (size, size)).astype(np.float32)
    ss, fs = np.indices(frame.shape)
    r = np.hypot(ss - size / 2, fs - size / 2)
    frame += 20.0 * np.exp(-((r - size / 3) ** 2) / 8.0)
    for _ in range(12):
        s0, f0, w = rng.integers(3, size - 6), rng.integers(3, size - 6), rng.integers(1, 4)
        frame[s0 : s0 + w, f0 : f0 + w] += rng.uniform(50, 400)
    return frame


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten() - a.mean()
    b = b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_inversion_at_alexnet_conv1_reconstructs_the_input():
    torch.manual_seed(0)
    model, spec = create_model("alexnet", "hitmiss", preprocess={"input_size": 64})
    x0 = preprocess(spot_frame(64, 1), None, spec.preprocess)
    other = preprocess(spot_frame(64, 2), None, spec.preprocess)
    recon = invert_representation(model, "features.0", x0, steps=60, seed=3)
    assert recon.shape == x0.shape and torch.isfinite(recon).all()
    random_image = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    assert corr(recon, x0) > 0.9
    assert corr(recon, x0) > abs(corr(random_image, x0)) + 0.8
    # It is this frame that comes back, not only what all frames share (the ring):
    assert corr(recon, x0) > corr(recon, other) + 0.2
    short = [invert_representation(model, "features.0", x0, steps=3, seed=s) for s in (3, 3, 4)]
    torch.testing.assert_close(short[0], short[1])  # seeded
    assert not torch.equal(short[0], short[2])
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert model.training


def test_inversion_of_a_deeper_layer_runs_and_keeps_less():
    model, spec = create_model("hitnet_test", "hitmiss")
    x0 = preprocess(spot_frame(32, 4), None, spec.preprocess)
    shallow = invert_representation(model, "down.0", x0, steps=40)
    deep = invert_representation(model, "blocks", x0, steps=40)
    assert corr(shallow, x0) > corr(deep, x0)
    with pytest.raises(InputError):
        invert_representation(model, "down.0", x0[0])
    with pytest.raises(ConfigError):
        invert_representation(model, "nonexistent", x0, steps=1)


def test_priors():
    flat = torch.full((1, 1, 8, 8), 2.0)
    assert float(alpha_norm(flat, 6.0)) == 0.0
    assert float(total_variation(flat, 1.0)) == pytest.approx(1e-4, rel=1e-3)  # sqrt(eps)
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]
    assert float(total_variation(ramp, 2.0)) == pytest.approx(1.0, rel=1e-6)
    alexnet = inversion_layers(nn.Identity(), make_spec("alexnet"))
    assert [label for label, _ in alexnet] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [layer for _, layer in alexnet] == ["features.0", "features.3", "features.6", "features.8", "features.10"]
    assert inversion_layers(nn.Identity(), make_spec("resnet50"))[-1] == ("layer4", "layer4")
    hitnet, spec = create_model("hitnet")
    assert [layer for _, layer in inversion_layers(hitnet, spec)] == [
        "down.0", "down.1", "down.2", "down.3", "blocks.0", "blocks.1"
    ]


@pytest.mark.parametrize(("name", "layer"), [("hitnet_test", "down.2"), ("alexnet", "features.3")])
def test_histograms_count_every_activation(name, layer):
    model, spec = create_model(name, "fiveclass", preprocess={"input_size": 32 if name == "hitnet_test" else 64})
    frames = np.stack([spot_frame(40, s) for s in range(5)])
    labels = np.array([0, 4, 4, 1, 4])
    hists = activation_histograms(
        model, spec, frames, labels, layer, bins=20, class_names=spec.class_names, batch_size=3
    )
    per_frame = {"hitnet_test": 8 * 4 * 4, "alexnet": 192 * 7 * 7}[name]  # channels x h x w of one frame
    assert set(hists) == {"blank", "no_crystal", "strong"}
    for name_, n in (("blank", 1), ("no_crystal", 1), ("strong", 3)):
        counts, edges = hists[name_]
        assert counts.dtype == np.int64 and counts.shape == (20,) and edges.shape == (21,)
        assert counts.sum() == n * per_frame
    # A narrow range puts the outliers into the edge bins; nothing is lost.
    narrow = activation_histograms(model, spec, frames, labels, layer, bins=4, value_range=(0.0, 0.01))
    assert sum(int(c.sum()) for c, _ in narrow.values()) == 5 * per_frame
    batches = [(frames[:3], None, labels[:3]), (frames[3:], None, labels[3:])]
    again = activation_histograms(model, spec, batches, None, layer, bins=20, class_names=spec.class_names)
    for key, (counts, edges) in hists.items():
        np.testing.assert_array_equal(again[key][0], counts)
        np.testing.assert_allclose(again[key][1], edges)
    with pytest.raises(ConfigError):
        activation_histograms(model, spec, iter(batches), None, layer)
