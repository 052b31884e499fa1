"""Grad-CAM, HiResCAM and guided Grad-CAM heat maps of whole frames, on the detector's own pixel grid.

All go through pytorch-grad-cam (``GradCAM``, ``HiResCAM``, ``GuidedBackpropReLUModel``):

- **Grad-CAM** (seed eq. 6-7): ``L = ReLU(sum_k alpha_k A^k)`` with ``alpha_k`` the spatial mean of
  ``d y / d A^k`` at the model's declared target layer (``ModelSpec.cam_target_layer``). It says
  *where* (at the layer's resolution, e.g. 1/16 of the network input for HitNet) the evidence for the
  target lies.
- **HiResCAM** (Draelos & Carin, 2020): ``L = ReLU(sum_k dy/dA^k * A^k)``, the same without the
  spatial averaging of the gradient. Where the network pools with a global *maximum* (HitNet), the
  gradient sits at the pooled position, i.e. on the spot that gave the evidence; Grad-CAM's average
  spreads it over every place the channel is active. On a trained HitNet it puts much more of the
  map on the Bragg spots (see ``docs/explain.md``).
- **Guided Grad-CAM**: guided backpropagation (the input gradient with negative gradients stopped at
  every ReLU) times Grad-CAM upsampled to the network input, per frame; only its positive part is
  kept (pixels whose increase raises the target). It shows *which pixels* inside Grad-CAM's regions
  carry the evidence, at the resolution of the binned network input.

Target ``"hit"`` is :class:`LogOddsTarget` over the spec's hit classes: ``log P(hit) - log P(miss)``,
the quantity the hit decision thresholds (the hit logit minus the miss logit for a hit/miss model;
for the five-class model the log-sum-exp of the hit logits minus that of the miss logits). The
evidence *against* a miss then counts as much as the evidence for a hit; with the hit logit alone,
Grad-CAM's channel-averaged weights of the shipped hit/miss model summed to maps that missed the
spots (``docs/explain.md``). An int target is the log-odds of that class against the others.

Maps are computed at the network input's geometry and mapped back onto the frame with
:meth:`~sfx_cnnhit.models.preprocess.InputPlan.to_frame` (bilinear upsampling of the Grad-CAM grid
to the input, then binning and padding undone; pixels outside every panel are 0). Each map is divided
by its own maximum on the frame, which is returned as the raw scale: ``maps * raw_max`` is the
unnormalised map (pytorch-grad-cam's own per-image min-max scaling is never applied). The raw maxima
are comparable between frames of one model, e.g. a miss has a small hit evidence scale.

Speed: the network runs with its parameters frozen and the graph cut at the target layer, so the
Grad-CAM backward pass covers only the layers after it (for HitNet: pooling and the linear head).
Hooks live only inside context managers and are released after every batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel, HiResCAM
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn
from torch.nn import functional

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.explain.capture import eval_mode, frozen_parameters, get_layer, layer_output, model_device
from sfx_cnnhit.models.preprocess import InputPlan, plan_input, preprocess
from sfx_cnnhit.models.zoo import ModelSpec

Method = Literal["gradcam", "guided", "hirescam"]
METHODS: tuple[str, ...] = ("gradcam", "guided", "hirescam")
#: CXI dataset name (``/entry_1/result_1/<name>``) of each method's maps.
DATASETS = {"gradcam": "gradcam", "guided": "guided_gradcam", "hirescam": "hirescam"}


class LogOddsTarget:
    """A Grad-CAM target: the log-odds of ``classes`` against the other classes,
    ``log P(classes) - log P(rest) = logsumexp(logits[classes]) - logsumexp(logits[rest])`` (with every
    class named: the log-sum-exp of their logits).

    Called with one frame's logits ``(K,)`` (as pytorch-grad-cam does) or a batch ``(n, K)``.
    """

    def __init__(self, classes: Sequence[int]) -> None:
        if not classes:
            raise ConfigError("a Grad-CAM target needs at least one class")
        self.classes = [int(c) for c in classes]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        rest = [c for c in range(logits.shape[-1]) if c not in self.classes]
        score = torch.logsumexp(logits[..., self.classes], dim=-1)
        return score - torch.logsumexp(logits[..., rest], dim=-1) if rest else score

    def __repr__(self) -> str:
        return f"LogOddsTarget({self.classes})"


# pytorch-grad-cam has no type hints: its classes are Any to mypy.
class _RawCAM(BaseCAM):  # type: ignore[misc]
    """A pytorch-grad-cam CAM returning its map ``ReLU(...)`` at the layer's own resolution, unscaled;
    its context manager releases the hooks and lets every exception through."""

    def compute_cam_per_layer(
        self, input_tensor: torch.Tensor, targets: list[Any], eigen_smooth: bool
    ) -> list[NDArray[np.float32]]:
        acts, grads = self.activations_and_grads.activations, self.activations_and_grads.gradients
        if not acts or not grads:
            raise ConfigError("Grad-CAM: the target layer produced no activations or gradients")
        cam = self.get_cam_image(
            input_tensor, self.target_layers[0], targets, acts[0].numpy(), grads[0].numpy(), eigen_smooth
        )
        return [np.maximum(cam, 0.0)]

    def aggregate_multi_layers(self, cam_per_target_layer: list[NDArray[np.float32]]) -> NDArray[np.float32]:
        return cam_per_target_layer[0]

    def __exit__(self, exc_type: Any, exc_value: Any, exc_tb: Any) -> None:
        self.activations_and_grads.release()


class _RawGradCAM(_RawCAM, GradCAM):  # type: ignore[misc]  # GradCAM is Any (no type hints)
    """Grad-CAM, ``ReLU(sum_k alpha_k A^k)``, unscaled."""


class _RawHiResCAM(_RawCAM, HiResCAM):  # type: ignore[misc]  # HiResCAM is Any (no type hints)
    """HiResCAM, ``ReLU(sum_k dy/dA^k * A^k)``, unscaled."""


def _clone(t: torch.Tensor) -> torch.Tensor:
    """Copy a hooked activation before a later in-place ReLU can change it (AlexNet's conv5)."""
    return t.clone()


@contextmanager
def _graph_from(layer: nn.Module) -> Iterator[None]:
    """Make ``layer``'s output a fresh graph root: gradients flow back to it and no further.

    Registered before pytorch-grad-cam's hooks, so theirs see the new tensor. The clone keeps an
    in-place operation after the layer legal (a leaf that requires grad cannot be modified in place).
    """

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True).clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _TargetScore(nn.Module):
    """``x -> target(model(x))[:, None]``: lets GuidedBackpropReLUModel back-propagate any target."""

    def __init__(self, model: nn.Module, target: LogOddsTarget) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(self.model(x))[:, None]


@contextmanager
def _original_relus(model: nn.Module) -> Iterator[None]:
    """Put the model's own ReLU modules back afterwards.

    GuidedBackpropReLUModel swaps every ``nn.ReLU`` for its guided version during a call and then
    inserts new ``nn.ReLU()`` objects (losing ``inplace`` and module identity), and leaves the guided
    ones in place if the call fails.
    """
    relus = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.ReLU)
    ]
    try:
        yield
    finally:
        for parent, name, child in relus:
            setattr(parent, name, child)


@dataclass(frozen=True)
class Explanation:
    """Heat maps of a batch of frames on their own ``(ss, fs)`` pixel grid.

    Attributes:
        cam: ``(k, ss, fs)`` float32 class-activation maps in [0, 1] (each divided by its maximum):
            HiResCAM for method ``"hirescam"``, else Grad-CAM.
        cam_max: ``(k,)`` float32 maxima of the unnormalised maps on the frame.
        probabilities: ``(k, K)`` float32 class probabilities of the frames.
        guided: ``(k, ss, fs)`` guided Grad-CAM maps in [0, 1] (method ``"guided"`` only, else None).
        guided_max: ``(k,)`` maxima of the unnormalised guided Grad-CAM maps, or None.
    """

    cam: NDArray[np.float32]
    cam_max: NDArray[np.float32]
    probabilities: NDArray[np.float32]
    guided: NDArray[np.float32] | None = None
    guided_max: NDArray[np.float32] | None = None


def _coverage(plan: InputPlan) -> torch.Tensor:
    """``(S, S)`` bool: the network-input pixels that map onto some frame pixel (inside a panel's tile)."""
    S = plan.input_size
    cover = torch.zeros((S, S), dtype=torch.bool)
    for tile in plan.tiles:
        (r0, c0), (h, w) = tile.origin, tile.binned
        cover[max(r0, 0) : max(min(r0 + h, S), 0), max(c0, 0) : max(min(c0 + w, S), 0)] = True
    return cover


def _unit_(maps: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """Divide ``(n, S, S)`` non-negative maps in place by their maxima over ``cover``; returns the maxima.

    Every covered input pixel appears on the frame (each tile bin holds at least one frame pixel), so
    these are also the maxima on the frame. All-zero maps stay 0.
    """
    peak = torch.where(cover.to(maps.device), maps, 0.0).amax(dim=(1, 2))
    maps.div_(torch.where(peak > 0, peak, 1.0)[:, None, None]).clamp_(0.0, 1.0)
    return peak


def _stack(parts: list[NDArray[np.float32]], shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Concatenate per-batch arrays (no copy for a single batch)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(shape, np.float32)


class GradCamExplainer:
    """Grad-CAM, guided Grad-CAM or HiResCAM maps of raw frames for a model at its declared target layer.

    Args:
        model: the network (any device; its train/eval mode, parameters' ``requires_grad`` and ReLU
            modules are the same after every call).
        spec: its spec (preprocessing, classes, ``cam_target_layer``).
        method: ``"gradcam"``, ``"guided"`` (guided Grad-CAM) or ``"hirescam"``.
        target: ``"hit"`` (:class:`LogOddsTarget` of the hit classes) or a class index.
        layout: panels of a multi-panel slab, as given to :func:`~sfx_cnnhit.models.preprocess.preprocess`.
        batch_size: frames per forward/backward pass.

    Attributes:
        dataset: CXI dataset name of the maps (``"gradcam"``, ``"guided_gradcam"``, ``"hirescam"``).
        last_probabilities: ``(k, K)`` class probabilities of the frames of the last call.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        *,
        method: Method = "gradcam",
        target: Literal["hit"] | int = "hit",
        layout: PanelLayout | None = None,
        batch_size: int = 16,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"explanation method must be one of {METHODS}, got {method!r}")
        if batch_size < 1:
            raise ConfigError(f"explanation batch size must be >= 1, got {batch_size}")
        if target == "hit":
            if not spec.hit_classes:
                raise ConfigError(f"model {spec.name!r} has no hit class among {spec.class_names}")
            classes: Sequence[int] = spec.hit_classes
        elif isinstance(target, int | np.integer) and not isinstance(target, bool) and 0 <= target < spec.num_classes:
            classes = [int(target)]
        else:
            raise ConfigError(
                f"Grad-CAM target must be 'hit' or a class index 0..{spec.num_classes - 1}, got {target!r}"
            )
        self.model = model
        self.spec = spec
        self.method: Method = method
        self.layout = layout
        self.batch_size = int(batch_size)
        self.target = LogOddsTarget(classes)
        self.layer = get_layer(model, spec.cam_target_layer)
        self.dataset = DATASETS[method]
        self.last_probabilities: NDArray[np.float32] | None = None
        self._cam_shape: tuple[int, int] | None = None

    def plan(self, frame_shape: tuple[int, int]) -> InputPlan:
        """How frames of ``frame_shape`` map onto the network input."""
        return plan_input(tuple(frame_shape), self.spec.preprocess, self.layout)

    def cam_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the Grad-CAM grid (the target layer's output for the network input)."""
        if self._cam_shape is None:
            S = self.spec.input_size
            x = torch.zeros((1, 1, S, S), device=model_device(self.model))
            with torch.no_grad(), eval_mode(self.model):
                out = layer_output(self.model, self.spec.cam_target_layer, x)
            self._cam_shape = (int(out.shape[-2]), int(out.shape[-1]))
        return self._cam_shape

    def resolution_px(self, frame_shape: tuple[int, int]) -> float:
        """Detector pixels per cell of this method's map for frames of ``frame_shape``: one cell of the
        target layer (``bin factor x S / CAM width``), or one input bin for guided Grad-CAM."""
        k = self.plan(frame_shape).bin_factor
        if self.method == "guided":
            return float(k)
        return k * self.spec.input_size / max(self.cam_shape())

    def _cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw class-activation map ``(n, h, w)`` and logits ``(n, K)`` of network inputs ``x``."""
        cam_type = _RawHiResCAM if self.method == "hirescam" else _RawGradCAM
        with (
            frozen_parameters(self.model),
            _graph_from(self.layer),
            cam_type(self.model, [self.layer], reshape_transform=_clone) as cam,
        ):
            raw = cam(x, [self.target] * x.shape[0])
            logits = cam.outputs.detach()
        return torch.from_numpy(raw).to(x.device), logits

    def _guided_backprop(self, x: torch.Tensor) -> torch.Tensor:
        """Guided back-propagation of the target to the input, ``(n, S, S)``, one frame at a time
        (GuidedBackpropReLUModel back-propagates only the first frame of a batch)."""
        wrapper = _TargetScore(self.model, self.target)
        out = []
        with frozen_parameters(self.model), _original_relus(self.model):
            guided = GuidedBackpropReLUModel(wrapper)
            for i in range(x.shape[0]):
                grad = guided(x[i : i + 1].detach().clone(), target_category=0)  # (S, S, 1)
                out.append(torch.from_numpy(np.ascontiguousarray(grad[..., 0])))
        return torch.stack(out).to(x.device)

    def explain(
        self,
        data: NDArray[np.floating],
        mask: NDArray[np.bool_] | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        inputs: torch.Tensor | None = None,
    ) -> Explanation:
        """Maps of frames ``data`` ``(k, ss, fs)`` with ``mask`` (True = good; ``(k, ss, fs)``,
        ``(ss, fs)`` or None); guided maps only for method ``"guided"``. The frame-sized maps come in
        ``dtype`` (torch converts to float16 about 9x faster than numpy, with the same rounding).
        ``inputs``: the frames already preprocessed, ``(k, 1, S, S)`` (the veto's, reused)."""
        data = np.asarray(data)
        if data.ndim != 3:
            raise InputError(f"explain: frames must be (k, ss, fs), got shape {data.shape}")
        k, ss, fs = data.shape
        plan = self.plan((ss, fs))
        cover = _coverage(plan)
        S = self.spec.input_size
        if inputs is not None and tuple(inputs.shape) != (k, 1, S, S):
            raise InputError(f"explain: inputs of shape {tuple(inputs.shape)} for {k} frames of a {S}x{S} network")
        dev = model_device(self.model)
        cams: list[NDArray[np.float32]] = []
        guides: list[NDArray[np.float32]] = []
        cam_max, guide_max, probs = [], [], []
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(self.model):
            for i in range(0, k, self.batch_size):
                if inputs is not None:  # a copy: the veto's buffer is an inference tensor, reused later
                    x = inputs[i : i + self.batch_size].to(dev).clone()
                else:
                    m = mask if mask is None or np.ndim(mask) == 2 else mask[i : i + self.batch_size]
                    x = preprocess(data[i : i + self.batch_size], m, self.spec.preprocess, self.layout).to(dev)
                cam, logits = self._cam(x)
                probs.append(torch.softmax(logits.float(), dim=1).cpu())
                # Upsampled to the input exactly as InputPlan.to_frame would, normalised at this size.
                cam = functional.interpolate(cam[:, None], size=(S, S), mode="bilinear", align_corners=False)[:, 0]
                if self.method == "guided":
                    guided = (self._guided_backprop(x) * cam).clamp_min_(0.0)
                    guide_max.append(_unit_(guided, cover).cpu())
                    guides.append(plan.to_frame(guided).to(dtype).cpu().numpy())
                cam_max.append(_unit_(cam, cover).cpu())
                cams.append(plan.to_frame(cam).to(dtype).cpu().numpy())
        self.last_probabilities = (
            torch.cat(probs).numpy() if probs else np.zeros((0, self.spec.num_classes), np.float32)
        )
        empty = (0, ss, fs)
        return Explanation(
            cam=_stack(cams, empty),
            cam_max=torch.cat(cam_max).numpy() if cam_max else np.zeros(0, np.float32),
            probabilities=self.last_probabilities,
            guided=_stack(guides, empty) if self.method == "guided" else None,
            guided_max=(torch.cat(guide_max).numpy() if guide_max else np.zeros(0, np.float32))
            if self.method == "guided"
            else None,
        )

    def __call__(
        self,
        data: NDArray[np.floating],
        mask: NDArray[np.bool_] | None,
        *,
        dtype: torch.dtype = torch.float32,
        inputs: torch.Tensor | None = None,
    ) -> tuple[NDArray[np.floating], NDArray[np.float32]]:
        """This method's maps ``(k, ss, fs)`` in [0, 1] (``dtype``) and their raw maxima ``(k,)`` (float32);
        ``inputs`` as for :meth:`explain`."""
        result = self.explain(data, mask, dtype=dtype, inputs=inputs)
        if self.method == "guided":
            assert result.guided is not None and result.guided_max is not None
            return result.guided, result.guided_max
        return result.cam, result.cam_max
