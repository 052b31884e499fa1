"""Read a layer's output without running the rest of the network, and other small model helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sfx_cnnhit.errors import ConfigError


class _CapturedError(Exception):
    """Raised by the capture hook to stop the forward pass once the layer has run."""


def get_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule at dotted path ``layer`` (``"features.10"``, ``"layer4"``, ``"blocks"``).

    Raises:
        ConfigError: if the model has no such submodule.
    """
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(f"the model has no layer {layer!r} (top-level modules: {names})") from None


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Output of ``layer`` for input ``x``; the network stops there (later layers never run).

    The autograd graph up to the layer is kept when gradients are enabled, so the result can be
    differentiated with respect to ``x`` (representation inversion).
    """
    module = get_layer(model, layer)
    box: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"layer {layer!r} does not output a single tensor")
        box.append(output)
        raise _CapturedError

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _CapturedError:
        pass
    finally:
        handle.remove()
    if not box:
        raise ConfigError(f"layer {layer!r} is not used by the model's forward pass")
    return box[0]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Switch off ``requires_grad`` of the model's parameters for the block (no weight gradients).

    Explanations need gradients with respect to activations or the input only; skipping the weight
    gradients roughly halves the backward pass. The previous flags are restored afterwards.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
