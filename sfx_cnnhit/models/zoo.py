"""The model zoo: a registry of CNN builders by name, each with its input contract and Grad-CAM layer.

Front door (timm/torchvision style)::

    model, spec = create_model("hitnet", task="hitmiss")
    list_models()  # ['alexnet', 'hitnet', 'hitnet_lite', ..., 'resnet50', 'spotnet', 'spotnet_test']

A :class:`ModelSpec` says everything needed to rebuild a model and feed it (architecture name and
keyword arguments, task and class names, preprocessing with the input size, Grad-CAM target layer);
checkpoints store it. Registering a name twice raises.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.models import seed_nets
from sfx_cnnhit.models.hitnet import HitNet
from sfx_cnnhit.models.preprocess import PreprocessConfig
from sfx_cnnhit.models.spotnet import SpotNet
from sfx_cnnhit.models.tasks import TASK_CLASSES, Task, hit_class_indices


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its builder and default input contract."""

    name: str
    builder: Callable[..., nn.Module]
    cam_target_layer: str
    preprocess: PreprocessConfig
    description: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and feed it; stored in every checkpoint.

    Attributes:
        name: registered architecture name.
        task: ``"fiveclass"`` or ``"hitmiss"``.
        class_names: output classes in logit order.
        cam_target_layer: dotted module path of the Grad-CAM target (``model.get_submodule``).
        preprocess: preprocessing settings, including the input size.
        arch_kwargs: extra keyword arguments of the builder (e.g. HitNet's ``channels``).
    """

    name: str
    task: Task
    class_names: tuple[str, ...]
    cam_target_layer: str
    preprocess: PreprocessConfig
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "arch_kwargs", {k: _tuples(v) for k, v in self.arch_kwargs.items()})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> int:
        """Side of the square network input (pixels)."""
        return self.preprocess.input_size

    @property
    def hit_classes(self) -> tuple[int, ...]:
        """Indices of the classes that count as a hit."""
        return hit_class_indices(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "class_names": list(self.class_names),
            "cam_target_layer": self.cam_target_layer,
            "preprocess": self.preprocess.to_dict(),
            "arch_kwargs": _plain(self.arch_kwargs),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                name=values["name"],
                task=values["task"],
                class_names=tuple(values["class_names"]),
                cam_target_layer=values["cam_target_layer"],
                preprocess=PreprocessConfig.from_dict(values["preprocess"]),
                arch_kwargs=dict(values.get("arch_kwargs", {})),
            )
        except KeyError as err:
            raise ConfigError(f"model spec: missing field {err}") from None


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (checkpoint and JSON friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    """Lists to tuples, recursively (the inverse of :func:`_plain` for builder arguments)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    cam_target_layer: str,
    input_size: int,
    description: str = "",
    **preprocess: Any,
) -> ModelEntry:
    """Register ``builder(num_classes=..., **arch_kwargs) -> nn.Module`` under ``name``.

    ``preprocess`` overrides :class:`PreprocessConfig` defaults for this model.

    Raises:
        ConfigError: if ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is already registered")
    entry = ModelEntry(
        name, builder, cam_target_layer, PreprocessConfig(input_size=input_size, **preprocess), description
    )
    _REGISTRY[name] = entry
    return entry


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def make_spec(
    name: str,
    task: Task = "hitmiss",
    *,
    preprocess: PreprocessConfig | dict[str, Any] | None = None,
    **arch_kwargs: Any,
) -> ModelSpec:
    """The spec of model ``name`` for ``task``; ``preprocess`` replaces (dict: updates) the defaults.

    ``arch_kwargs`` records every builder argument, defaults included, so a checkpoint keeps
    rebuilding the same network even if a default changes later.
    """
    entry = get_entry(name)
    if task not in TASK_CLASSES:
        raise ConfigError(f"unknown task {task!r}; use one of {sorted(TASK_CLASSES)}")
    if isinstance(preprocess, dict):
        preprocess = replace(entry.preprocess, **preprocess)
    return ModelSpec(
        name=name,
        task=task,
        class_names=TASK_CLASSES[task],
        cam_target_layer=entry.cam_target_layer,
        preprocess=preprocess or entry.preprocess,
        arch_kwargs={**_builder_defaults(entry.builder), **arch_kwargs},
    )


def _builder_defaults(builder: Callable[..., nn.Module]) -> dict[str, Any]:
    """Keyword defaults of ``builder`` except ``num_classes`` (partial keywords included)."""
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.name != "num_classes" and p.default is not inspect.Parameter.empty
    }


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model for ``spec`` (train mode, CPU, float32)."""
    entry = get_entry(spec.name)
    try:
        model = entry.builder(num_classes=spec.num_classes, **spec.arch_kwargs)
    except TypeError as err:
        raise ConfigError(f"model {spec.name!r}: bad architecture arguments {spec.arch_kwargs}: {err}") from None
    cam_layer(model, spec)
    return model


def create_model(
    name: str,
    task: Task = "hitmiss",
    *,
    preprocess: PreprocessConfig | dict[str, Any] | None = None,
    **arch_kwargs: Any,
) -> tuple[nn.Module, ModelSpec]:
    """Build model ``name`` for ``task``; returns the model and its spec."""
    spec = make_spec(name, task, preprocess=preprocess, **arch_kwargs)
    return build_model(spec), spec


def cam_layer(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The Grad-CAM target module of ``model``."""
    try:
        return model.get_submodule(spec.cam_target_layer)
    except AttributeError:
        raise ConfigError(f"model {spec.name!r} has no layer {spec.cam_target_layer!r}") from None


def hit_probability(probs: torch.Tensor | NDArray[np.floating], spec: ModelSpec) -> Any:
    """P(hit) ``(n,)``: the summed softmax probabilities ``(n, num_classes)`` of the hit classes."""
    return probs[:, list(spec.hit_classes)].sum(1)


register_model(
    "hitnet",
    HitNet,
    cam_target_layer="blocks",
    input_size=512,
    description="compact real-time CPU veto (default): full resolution on 512x512 frames, Grad-CAM at 1/16",
)
register_model(
    "hitnet_lite",
    partial(HitNet, channels=(4, 32, 64)),
    cam_target_layer="blocks",
    input_size=256,
    description="HitNet on 256x256 (frames binned twice as much): faster, weaker against hot pixels",
)
register_model(
    "hitnet_test",
    partial(HitNet, channels=(4, 8, 8)),
    cam_target_layer="blocks",
    input_size=32,
    description="tiny HitNet for tests",
)
register_model(
    "spotnet",
    partial(SpotNet, channels=(16, 16, 16, 16), stride=4),
    cam_target_layer="spots.logit",
    input_size=512,
    description="the default: spot segmentation + spot count (trained on true Bragg masks); maps at 1/4",
)
register_model(
    "spotnet_test",
    partial(SpotNet, channels=(4, 4)),
    cam_target_layer="spots.logit",
    input_size=32,
    background_cell=8,
    description="tiny SpotNet for tests",
)
register_model("alexnet", seed_nets.alexnet, cam_target_layer="features.10", input_size=512, description="seed")
for _name in ("resnet18", "resnet50", "resnet101"):
    register_model(_name, getattr(seed_nets, _name), cam_target_layer="layer4", input_size=512, description="seed")
