"""Batches as network input, and batched prediction.

A batch is either

- ``(data, mask, labels)``: raw frames ``(n, ss, fs)``, mask (bool, True = good, ``(n, ss, fs)``,
  ``(ss, fs)`` or None) and int labels ``(n,)``: augmented (training only), then preprocessed with the
  model's :class:`~sfx_cnnhit.models.preprocess.PreprocessConfig`, on the model's device;
- ``(data, mask, labels, layout)``: the same with the batch's own panel layout (mixed detectors); or
- ``(x, labels)``: already preprocessed ``(n, 1, S, S)`` inputs (no augmentation).

Labels are indices into the model's ``spec.class_names``. A source of batches is any re-iterable of
batches or a callable ``epoch -> iterable`` (e.g. a simulator seeded by epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.models.augment import AugmentConfig, augment
from sfx_cnnhit.models.preprocess import preprocess
from sfx_cnnhit.models.zoo import ModelSpec

Batch = tuple[Any, Any] | tuple[Any, Any, Any] | tuple[Any, Any, Any, Any]
BatchSource = Iterable[Batch] | Callable[[int], Iterable[Batch]]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ArrayBatches:
    """Re-iterable batches over in-memory frames, shuffled differently (and reproducibly) each epoch.

    Args:
        data: ``(n, ss, fs)`` raw frames, or ``(n, 1, S, S)`` preprocessed inputs.
        labels: ``(n,)`` int labels.
        mask: raw frames only: bool ``(n, ss, fs)`` or ``(ss, fs)``, True = good; None = all good.
        batch_size: frames per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch with seed ``(seed, epoch)``; call :meth:`for_epoch`.
    """

    def __init__(
        self,
        data: Any,
        labels: Any,
        mask: Any = None,
        *,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.data = torch.as_tensor(data)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.mask = None if mask is None else torch.as_tensor(mask)
        if self.data.shape[0] != self.labels.shape[0]:
            raise InputError(f"{self.data.shape[0]} frames but {self.labels.shape[0]} labels")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.raw = self.data.ndim == 3

    def __len__(self) -> int:
        return math.ceil(self.labels.shape[0] / self.batch_size)

    def for_epoch(self, epoch: int) -> Iterator[Batch]:
        n = self.labels.shape[0]
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            if not self.raw:
                yield self.data[idx], self.labels[idx]
            else:
                mask = self.mask if self.mask is None or self.mask.ndim == 2 else self.mask[idx]
                yield self.data[idx], mask, self.labels[idx]

    def __iter__(self) -> Iterator[Batch]:
        return self.for_epoch(0)

    def __call__(self, epoch: int) -> Iterator[Batch]:
        return self.for_epoch(epoch)


def epoch_batches(source: BatchSource, epoch: int) -> Iterable[Batch]:
    """The batches of ``epoch`` (a callable source is called with it; an iterable is used as is)."""
    return source(epoch) if callable(source) else source


def batch_groups(batches: Iterable[Batch], n: int) -> Iterator[list[Batch]]:
    """Consecutive groups of ``n`` batches (the last may be shorter)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def batch_input(
    batch: Batch,
    spec: ModelSpec,
    device: torch.device,
    *,
    layout: PanelLayout | None,
    augment_config: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as network input ``(n, 1, S, S)`` and labels ``(n,)`` on ``device``."""
    if len(batch) == 2:
        x, labels = batch
        x = torch.as_tensor(x).to(device, torch.float32)
        if x.ndim != 4 or x.shape[1] != 1:
            raise InputError(f"preprocessed batch must be (n, 1, S, S), got {tuple(x.shape)}")
    elif len(batch) in (3, 4):
        data, mask, labels = batch[:3]
        if len(batch) == 4:  # a batch that carries its own panel layout (mixed-detector data)
            layout = batch[3]
        data = torch.as_tensor(data).to(device, torch.float32)
        if data.ndim != 3:
            raise InputError(f"raw batch must be (n, ss, fs) frames, got {tuple(data.shape)}")
        mask = None if mask is None else torch.as_tensor(mask).to(device).bool()
        if augment_config is not None and generator is not None:
            full = torch.ones_like(data, dtype=torch.bool) if mask is None else mask.expand_as(data)
            data, mask = augment(data, full, augment_config, generator)
        x = preprocess(data, mask, spec.preprocess, layout)
    else:
        raise InputError(f"a batch is (x, labels) or (data, mask, labels[, layout]), got {len(batch)} items")
    labels = torch.as_tensor(labels).to(device, torch.long).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise InputError(f"batch has {x.shape[0]} frames but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise InputError(f"labels must be in 0..{spec.num_classes - 1} ({', '.join(spec.class_names)})")
    return x, labels


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    spec: ModelSpec,
    batches: Iterable[Batch],
    *,
    layout: PanelLayout | None = None,
    device: str | torch.device | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Class probabilities ``(n, K)`` and labels ``(n,)`` of labelled batches, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    dev = resolve_device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for batch in batches:
            x, y = batch_input(batch, spec, dev, layout=layout)
            probs.append(torch.softmax(model(x).float(), dim=1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros((0, spec.num_classes), np.float32), np.zeros(0, np.int64)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    spec: ModelSpec,
    data: Any,
    mask: Any = None,
    *,
    layout: PanelLayout | None = None,
    batch_size: int = 32,
) -> NDArray[np.float32]:
    """Class probabilities ``(n, K)`` of raw frames ``(n, ss, fs)`` (mask: True = good), in eval mode."""
    dev = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, data.shape[0], batch_size):
        m = mask if mask is None or mask.ndim == 2 else mask[i : i + batch_size]
        x = preprocess(data[i : i + batch_size], m, spec.preprocess, layout).to(dev)
        out.append(torch.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, spec.num_classes), np.float32)
