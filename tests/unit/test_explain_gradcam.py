"""Grad-CAM and guided Grad-CAM: maps point where the decision is made, on the frame's own grid."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.explain.gradcam import GradCamExplainer, LogOddsTarget
from sfx_cnnhit.explain.score import fair_dilation_px, score_explanations
from sfx_cnnhit.models import PreprocessConfig, create_model, list_models, make_spec
from sfx_cnnhit.models.zoo import ModelSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SpotModel(nn.Module):
    """A hit/miss net whose decision is known by construction.

    Channel 0 fires only on bright spots (preprocessed value above 3, i.e. more than ~10 sigma above
    the background), channel 1 on everything at or below the background. Hit logit = the summed spot
    activations, miss logit = the mean background activation, both times ``gain``.
    """

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
            conv.bias[0] = -3.0
            conv.weight[1, 0, 1, 1] = -1.0
            conv.bias[1] = 0.5
        self.features = nn.Sequential(conv, nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        return self.gain * torch.stack([a[:, 1].mean(dim=(1, 2)), a[:, 0].sum(dim=(1, 2))], dim=1)


SPOT_SPEC = ModelSpec(
    name="spot_test",
    task="hitmiss",
    class_names=("miss", "hit"),
    cam_target_layer="features",
    preprocess=PreprocessConfig(input_size=32),
)


def frames_with_spots(shape: tuple[int, int], spots: list[list[tuple[int, int]]], seed: int = 0):
    """Noise frames (sigma 3 ADU) with 3x3 spots of 500 ADU; returns data, mask and the truth."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 3.0, (len(spots), *shape)).astype(np.float32)
    truth = np.zeros(data.shape, bool)
    for i, centres in enumerate(spots):
        for ss, fs in centres:
            data[i, ss - 1 : ss + 2, fs - 1 : fs + 2] = 500.0
            truth[i, ss - 1 : ss + 2, fs - 1 : fs + 2] = True
    return data, np.ones(data.shape, bool), truth


def no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )


@pytest.mark.parametrize(
    ("shape", "layout", "spots"),
    [
        ((61, 47), None, [[(40, 10)], [(5, 40)], [(30, 23), (55, 4)]]),
        ((64, 64), None, [[(10, 50)]]),
        ((40, 96), PanelLayout.regular(2, 2, 20, 48), [[(31, 80)], [(5, 7), (25, 60)]]),
    ],
)
@pytest.mark.parametrize("method", ["gradcam", "guided", "hirescam"])
def test_maps_light_up_the_spots_the_decision_depends_on(shape, layout, spots, method):
    model = SpotModel()
    data, mask, truth = frames_with_spots(shape, spots)
    explainer = GradCamExplainer(model, SPOT_SPEC, method=method, layout=layout, batch_size=2)
    maps, raw_max = explainer(data, mask)
    assert maps.shape == data.shape and maps.dtype == np.float32
    assert raw_max.shape == (len(spots),) and raw_max.dtype == np.float32 and (raw_max > 0).all()
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    radius = fair_dilation_px(explainer.resolution_px(shape))
    score = score_explanations(maps, truth, dilation_px=radius)
    assert score["n_hits"] == len(spots)
    assert score["pointing_game"] == 1.0
    assert score["mass_in_spots_mean"] > 0.9
    assert score["chance_mass_in_spots"] < 0.35


def test_a_map_for_another_class_looks_elsewhere():
    """Negative control: the miss logit depends on the background, so its map avoids the spot."""
    data, mask, truth = frames_with_spots((61, 47), [[(40, 10)]])
    explainer = GradCamExplainer(SpotModel(), SPOT_SPEC, target=0)
    maps, _ = explainer(data, mask)
    score = score_explanations(maps, truth, dilation_px=fair_dilation_px(explainer.resolution_px((61, 47))))
    assert score["pointing_game"] == 0.0
    assert score["mass_in_spots_mean"] < score["chance_mass_in_spots"]


class MaxPoolModel(nn.Module):
    """Hit logit = the global maximum of one channel that responds to anything brighter than the
    background: a diffuse blob a little, a Bragg spot much more. The decision rests on the spot."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.fill_(-2.0)
        self.features = nn.Sequential(conv, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.features(x).amax(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(top), top], dim=1)


def test_hirescam_follows_max_pooling_where_gradcam_spreads():
    """Grad-CAM averages the gradient over the map, so it lights the whole blob; HiResCAM keeps the
    gradient where the maximum was taken, on the spot (why HitNet's maps use HiResCAM well)."""
    data, mask, truth = frames_with_spots((64, 64), [[(50, 50)]])
    data[0, 5:35, 5:35] += 30.0  # a diffuse blob, about 10 sigma
    spec = replace(SPOT_SPEC, cam_target_layer="features")
    scores = {}
    for method in ("gradcam", "hirescam"):
        explainer = GradCamExplainer(MaxPoolModel(), spec, method=method)
        maps, _ = explainer(data, mask)
        radius = fair_dilation_px(explainer.resolution_px((64, 64)))
        scores[method] = score_explanations(maps, truth, dilation_px=radius)
    assert scores["hirescam"]["mass_in_spots_mean"] > 0.9 and scores["hirescam"]["pointing_game"] == 1.0
    assert scores["gradcam"]["mass_in_spots_mean"] < 0.3


def test_raw_maximum_is_the_unnormalised_scale():
    data, mask, _ = frames_with_spots((61, 47), [[(40, 10)], [(20, 30), (50, 40)]])
    maps1, raw1 = GradCamExplainer(SpotModel(gain=1.0), SPOT_SPEC)(data, mask)
    maps3, raw3 = GradCamExplainer(SpotModel(gain=3.0), SPOT_SPEC)(data, mask)
    np.testing.assert_allclose(maps1, maps3, atol=1e-6)
    np.testing.assert_allclose(raw3, 3.0 * raw1, rtol=1e-5)


def test_batches_give_the_same_maps_as_single_frames():
    data, mask, _ = frames_with_spots((45, 45), [[(10, 10)], [(30, 30)], [(20, 40)]])
    model, spec = create_model("hitnet_test", "fiveclass")
    model.eval()
    for method in ("gradcam", "guided"):
        whole, raw_whole = GradCamExplainer(model, spec, method=method, batch_size=3)(data, mask)
        for i in range(data.shape[0]):
            one, raw_one = GradCamExplainer(model, spec, method=method, batch_size=1)(data[i : i + 1], mask[i])
            np.testing.assert_allclose(one[0], whole[i], atol=1e-5)
            np.testing.assert_allclose(raw_one[0], raw_whole[i], rtol=1e-4)


def test_model_is_left_as_it_was():
    model = SpotModel()
    model.train()
    relu = model.features[1]
    data, mask, _ = frames_with_spots((33, 33), [[(16, 16)], [(5, 5)]])
    for method in ("gradcam", "guided"):
        GradCamExplainer(model, SPOT_SPEC, method=method)(data, mask)
        assert no_hooks(model)
        assert model.training
        assert model.features[1] is relu and relu.inplace
        assert all(p.requires_grad for p in model.parameters())
        assert all(p.grad is None for p in model.parameters())


def test_works_without_gradients_enabled_by_the_caller():
    data, mask, _ = frames_with_spots((33, 33), [[(16, 16)]])
    explainer = GradCamExplainer(SpotModel(), SPOT_SPEC)
    reference, _ = explainer(data, mask)
    with torch.inference_mode():
        maps, _ = explainer(data, mask)
    with torch.no_grad():
        again, _ = explainer(data, None)
    np.testing.assert_allclose(maps, reference)
    np.testing.assert_allclose(again, reference)


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_at_its_declared_layer(name):
    size = 32 if name == "hitnet_test" else 64
    model, spec = create_model(name, "fiveclass", preprocess={"input_size": size})
    data, mask, _ = frames_with_spots((67, 51), [[(30, 20)], [(10, 40)]])
    explainer = GradCamExplainer(model, spec, batch_size=2)
    maps, raw_max = explainer(data, mask)
    assert maps.shape == (2, 67, 51) and raw_max.shape == (2,)
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert explainer.last_probabilities is not None and explainer.last_probabilities.shape == (2, 5)
    np.testing.assert_allclose(explainer.last_probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert explainer.target.classes == list(spec.hit_classes) == [2, 3, 4]
    assert no_hooks(model)


def test_guided_on_alexnet_whose_target_conv_feeds_an_inplace_relu():
    model, spec = create_model("alexnet", "hitmiss", preprocess={"input_size": 64})
    data, mask, _ = frames_with_spots((70, 70), [[(35, 35)]])
    maps, raw_max = GradCamExplainer(model, spec, method="guided")(data, mask)
    assert raw_max.shape == (1,) and np.isfinite(raw_max).all()
    assert maps.shape == (1, 70, 70) and np.isfinite(maps).all() and maps.max() <= 1.0
    assert model.features[11].inplace and no_hooks(model)


def test_empty_batch_and_bad_arguments():
    model, spec = create_model("hitnet_test", "hitmiss")
    maps, raw_max = GradCamExplainer(model, spec)(np.zeros((0, 20, 30), np.float32), None)
    assert maps.shape == (0, 20, 30) and raw_max.shape == (0,)
    with pytest.raises(ConfigError):
        GradCamExplainer(model, spec, method="saliency")
    with pytest.raises(ConfigError):
        GradCamExplainer(model, spec, target=2)
    with pytest.raises(ConfigError):
        GradCamExplainer(model, make_spec("hitnet_test", "hitmiss", preprocess={"input_size": 32}), batch_size=0)


def test_dataset_names_and_logit_target():
    model, spec = create_model("hitnet_test", "hitmiss")
    assert GradCamExplainer(model, spec).dataset == "gradcam"
    assert GradCamExplainer(model, spec, method="guided").dataset == "guided_gradcam"
    assert GradCamExplainer(model, spec, method="hirescam").dataset == "hirescam"
    logits = torch.tensor([[0.5, 2.0, -1.0], [1.0, 0.0, 3.0]])
    p = torch.softmax(logits, dim=1)
    torch.testing.assert_close(LogOddsTarget([1])(logits), torch.log(p[:, 1] / (1 - p[:, 1])))
    torch.testing.assert_close(LogOddsTarget([1, 2])(logits[0]), torch.log(p[0, 1:].sum() / p[0, 0]))
    torch.testing.assert_close(LogOddsTarget([0, 1, 2])(logits), torch.logsumexp(logits, dim=1))
