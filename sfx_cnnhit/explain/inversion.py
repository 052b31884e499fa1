"""Representation inversion after Mahendran & Vedaldi (2015), as in the seed paper (eq. 1-5).

Starting from noise, find the image whose representation at one layer matches a frame's:

    x* = argmin_x  ||Phi(sigma x) - Phi0||^2 / ||Phi0||^2  +  lambda_alpha R_alpha(x)  +  lambda_tv R_TV(x)

- ``Phi`` is the output of the chosen layer (the network stops there) and ``Phi0 = Phi(x0)``;
- ``R_alpha(x) = mean |x - mean(x)|^alpha`` (the alpha-norm of the mean-subtracted image, eq. 3,
  per pixel) favours a narrow spread of values;
- ``R_TV(x) = mean [(x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2 + eps]^(beta / 2)`` (eq. 4, per
  pixel; ``eps`` keeps beta = 1 differentiable) favours smooth images; beta = 1 (the seed's choice)
  keeps sharp Bragg spots better than beta = 2;
- ``sigma`` (M&V: the mean norm of natural images) scales the unit-range variable ``x`` to network
  input units; by default the root mean square of ``x0`` (the only information taken from it).

The regularisers are per-pixel means, so the default weights do not depend on the input size. The
returned image ``sigma x*`` is in network-input units, comparable with ``x0``. What it shows: the
input features a layer keeps; early layers keep a nearly faithful copy of the frame (seed Fig. 6-7),
later ones keep where spots are but not their exact shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.explain.capture import eval_mode, frozen_parameters, get_layer, layer_output, model_device
from sfx_cnnhit.models.zoo import ModelSpec

#: Default layers of the seed's networks, named like the seed's figures.
INVERSION_LAYERS: dict[str, tuple[tuple[str, str], ...]] = {
    "alexnet": (
        ("conv1", "features.0"),
        ("conv2", "features.3"),
        ("conv3", "features.6"),
        ("conv4", "features.8"),
        ("conv5", "features.10"),
    ),
    "resnet": tuple((name, name) for name in ("conv1", "layer1", "layer2", "layer3", "layer4")),
}

TV_EPS = 1e-8


def inversion_layers(model: nn.Module, spec: ModelSpec) -> tuple[tuple[str, str], ...]:
    """``(label, module path)`` of the layers to invert for ``spec``'s architecture (seed Fig. 6 rows):
    AlexNet conv1-conv5, ResNet ``conv1, layer1-layer4``, HitNet every ``down`` and ``blocks`` stage,
    SpotNet the spot head's stem, 3x3 layers and spot logits."""
    for family, layers in INVERSION_LAYERS.items():
        if spec.name.startswith(family):
            return layers
    if spec.name.startswith("hitnet"):
        return tuple(
            (f"{group}.{name}", f"{group}.{name}")
            for group in ("down", "blocks")
            for name, _ in get_layer(model, group).named_children()
        )
    if spec.name.startswith("spotnet"):
        paths = ["spots.stem", *(f"spots.body.{name}" for name, _ in get_layer(model, "spots.body").named_children())]
        return tuple((path, path) for path in [*paths, "spots.logit"])
    raise ConfigError(f"no default inversion layers for model {spec.name!r}; name the layer explicitly")


def alpha_norm(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """``mean |x - mean(x)|^alpha`` of an image (seed eq. 3, per pixel)."""
    return (x - x.mean()).abs().pow(alpha).mean()


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """``mean [(dx)^2 + (dy)^2 + eps]^(beta/2)`` over the image's last two axes (seed eq. 4, per pixel)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.square() + dy.square() + TV_EPS).pow(beta / 2).mean()


def invert_representation(
    model: nn.Module,
    layer: str,
    x0: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 0.05,
    lambda_alpha: float = 1e-5,
    alpha: float = 6.0,
    lambda_tv: float = 0.05,
    beta: float = 1.0,
    sigma: float | None = None,
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """Reconstruct an image from its representation at ``layer`` (seed eq. 5), starting from noise.

    Args:
        model: the network (eval mode is used; its mode and parameters are unchanged afterwards).
        layer: dotted module path whose output is the representation ``Phi``.
        x0: ``(1, 1, S, S)`` network input (a preprocessed frame) giving ``Phi0``.
        steps: Adam iterations.
        lr: Adam learning rate (on the unit-range variable ``x``).
        lambda_alpha, alpha: weight and exponent of the alpha-norm prior.
        lambda_tv, beta: weight and exponent of the total-variation prior.
        sigma: scale from ``x`` to input units (default: root mean square of ``x0``).
        seed: seeds the starting noise (Gaussian, standard deviation 0.1).
        callback: called as ``callback(step, objective)`` after every step.

    Returns:
        ``(1, 1, S, S)`` float32 reconstruction ``sigma x*`` in input units, on ``x0``'s device.
    """
    if x0.ndim != 4 or x0.shape[:2] != (1, 1):
        raise InputError(f"inversion: x0 must be one (1, 1, S, S) input, got shape {tuple(x0.shape)}")
    if steps < 1 or not lr > 0 or not alpha > 0 or not beta > 0 or lambda_alpha < 0 or lambda_tv < 0:
        raise ConfigError("inversion: need steps >= 1, lr > 0, alpha > 0, beta > 0 and non-negative weights")
    dev = model_device(model)
    x0 = x0.detach().to(dev, torch.float32)
    scale = float(x0.square().mean().sqrt()) if sigma is None else float(sigma)
    if not scale > 0:
        raise InputError("inversion: the input is all zeros (give sigma explicitly)")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = (0.1 * torch.randn(x0.shape, generator=generator)).to(dev).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model), frozen_parameters(model):
        with torch.no_grad():
            phi0 = layer_output(model, layer, x0).detach().clone()
        norm0 = phi0.square().sum().clamp_min(1e-12)
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            phi = layer_output(model, layer, scale * x)
            objective = (phi - phi0).square().sum() / norm0
            objective = objective + lambda_alpha * alpha_norm(x, alpha) + lambda_tv * total_variation(x, beta)
            objective.backward()
            optimizer.step()
            if callback is not None:
                callback(step, float(objective.detach()))
    return (scale * x).detach()
