"""The model zoo: registry, specs, every model's forward/backward on 1-channel frames, Grad-CAM layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.models.hitnet import HitNet, fuse_conv_bn_
from sfx_cnnhit.models.tasks import TASK_CLASSES, to_hitmiss
from sfx_cnnhit.models.zoo import (
    ModelSpec,
    cam_layer,
    create_model,
    hit_probability,
    list_models,
    make_spec,
    register_model,
)

HEAVY = {"resnet50", "resnet101"}
# (input sizes, batch) per model: heavy seed networks stay small so the suite stays fast.
SIZES = {
    "hitnet": ([256, 100], 2),
    "hitnet_lite": ([256, 72], 2),
    "hitnet_test": ([32, 48], 4),
    "spotnet": ([64, 100], 2),
    "spotnet_test": ([32], 2),
    "alexnet": ([64, 127], 2),
    "resnet18": ([64, 96], 2),
    "resnet50": ([64], 1),
    "resnet101": ([64], 1),
}


def test_registry_lists_the_zoo() -> None:
    assert set(list_models()) == set(SIZES)


def test_duplicate_and_unknown_names_raise() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_model("hitnet", HitNet, cam_target_layer="blocks", input_size=512)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("vgg16")
    with pytest.raises(ConfigError, match="unknown task"):
        make_spec("hitnet", "threeclass")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bad architecture arguments"):
        create_model("hitnet", depth=3)


# Heavy networks: one task only (building them dominates the test time).
CASES = [(name, task) for name in sorted(SIZES) for task in ("fiveclass", "hitmiss") if name not in HEAVY]
CASES += [(name, "fiveclass") for name in sorted(HEAVY)]


@pytest.mark.parametrize(("name", "task"), CASES)
def test_forward_backward_one_channel(name: str, task: str) -> None:
    torch.manual_seed(0)
    model, spec = create_model(name, task)  # type: ignore[arg-type]
    assert spec.num_classes == len(TASK_CLASSES[task])
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    sizes, batch = SIZES[name]
    for size in sizes:
        x = torch.randn(batch, 1, size, size, requires_grad=True)
        out = model(x)
        assert out.shape == (batch, spec.num_classes)
        out.logsumexp(1).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        model.zero_grad()


def test_alexnet_takes_512_frames() -> None:
    model, spec = create_model("alexnet", "fiveclass")
    assert spec.input_size == 512
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 512, 512)).shape == (1, 5)


CAM_CASES = [
    ("hitnet", 512, (32, 32)), ("hitnet_lite", 256, (32, 32)), ("alexnet", 512, (31, 31)), ("spotnet", 512, (128, 128))
]


@pytest.mark.parametrize(("name", "size", "cam_shape"), CAM_CASES)
def test_cam_layer_resolution(name: str, size: int, cam_shape: tuple[int, int]) -> None:
    model, spec = create_model(name)
    assert spec.input_size == size
    layer = cam_layer(model, spec)
    seen: list[torch.Size] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 1, size, size))
    handle.remove()
    assert tuple(seen[0][-2:]) == cam_shape


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101"])
def test_resnet_cam_layer_is_layer4(name: str) -> None:
    model, spec = create_model(name)
    assert cam_layer(model, spec) is model.layer4


def test_spec_round_trip_and_overrides() -> None:
    spec = make_spec("hitnet_test", "fiveclass", preprocess={"input_size": 48}, channels=[4, 8, 16])
    assert spec.input_size == 48 and spec.arch_kwargs == {"channels": (4, 8, 16), "dropout": 0.2}
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    model, _ = create_model("hitnet_test", "fiveclass", channels=(4, 8, 16))
    assert model.head[1].in_features == 32
    with pytest.raises(ConfigError):
        ModelSpec.from_dict({"name": "hitnet"})


def test_hit_classes_and_probability() -> None:
    five = make_spec("hitnet", "fiveclass")
    assert five.hit_classes == (2, 3, 4)
    assert make_spec("hitnet", "hitmiss").hit_classes == (1,)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.5, 0.4, 0.05, 0.05, 0.0]])
    assert torch.allclose(hit_probability(probs, five), torch.tensor([0.7, 0.1]))
    assert to_hitmiss([0, 1, 2, 3, 4], TASK_CLASSES["fiveclass"]).tolist() == [0, 0, 1, 1, 1]
    assert to_hitmiss(torch.tensor([4, 0]), TASK_CLASSES["fiveclass"]).tolist() == [1, 0]


def test_fused_hitnet_matches_unfused() -> None:
    torch.manual_seed(1)
    model = HitNet(5)
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
    model.eval()
    fused = fuse_conv_bn_(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), fused(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        fuse_conv_bn_(HitNet())
