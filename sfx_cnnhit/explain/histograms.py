"""Histograms of a layer's activation values per class (seed Fig. 9).

Every activation of every frame is counted: ``n_frames x channels x h x w`` values per class. Values
outside ``value_range`` go into the first or last bin, so the totals always hold. Without a range, a
first pass over the frames finds the smallest and largest activation (the frames must then be
re-iterable: arrays, a list of batches, or an object whose ``__iter__`` starts over).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.explain.capture import eval_mode, layer_output, model_device
from sfx_cnnhit.models.preprocess import preprocess
from sfx_cnnhit.models.zoo import ModelSpec

Histogram = tuple[NDArray[np.int64], NDArray[np.float64]]
LabelledBatch = tuple[Any, Any, Any]  # (data (n, ss, fs), mask or None, labels (n,))


def _array_batches(data: Any, labels: Any, mask: Any, batch_size: int) -> Iterator[LabelledBatch]:
    labels = np.asarray(labels).reshape(-1)
    if labels.size != data.shape[0]:
        raise InputError(f"activation histograms: {data.shape[0]} frames but {labels.size} labels")
    for i in range(0, data.shape[0], batch_size):
        m = mask if mask is None or np.ndim(mask) == 2 else mask[i : i + batch_size]
        yield data[i : i + batch_size], m, labels[i : i + batch_size]


def _activations(
    model: nn.Module, spec: ModelSpec, layer: str, batches: Iterable[LabelledBatch], layout: PanelLayout | None
) -> Iterator[tuple[torch.Tensor, NDArray[np.int64]]]:
    """``(activations (n, ...), labels (n,))`` of every batch."""
    dev = model_device(model)
    for data, mask, labels in batches:
        x = preprocess(data, mask, spec.preprocess, layout).to(dev)
        yield layer_output(model, layer, x).float(), np.asarray(labels, dtype=np.int64).reshape(-1)


def activation_histograms(
    model: nn.Module,
    spec: ModelSpec,
    frames: NDArray[np.floating] | Iterable[LabelledBatch],
    labels: NDArray[np.integer] | None,
    layer: str,
    *,
    bins: int = 64,
    mask: NDArray[np.bool_] | None = None,
    value_range: tuple[float, float] | None = None,
    class_names: Sequence[str] | None = None,
    layout: PanelLayout | None = None,
    batch_size: int = 16,
) -> dict[str | int, Histogram]:
    """Per-class histograms of all activation values of ``layer``.

    Args:
        model, spec: the network and its spec (preprocessing).
        frames: raw frames ``(n, ss, fs)`` with ``labels`` ``(n,)`` and ``mask``; or an iterable of
            ``(data, mask, labels)`` batches (then ``labels`` and ``mask`` must be None).
        layer: dotted module path (e.g. ``"features.10"``, ``"layer4"``, ``"blocks"``).
        bins: number of equal-width bins, shared by all classes.
        value_range: ``(low, high)`` of the bins (outliers go to the edge bins); None: the data's range.
        class_names: names of the label values (``class_names[label]`` becomes the key); None: the
            int labels are the keys.
        layout: panel layout for the preprocessing.
        batch_size: frames per forward pass (arrays only).

    Returns:
        ``{class: (counts (bins,) int64, edges (bins + 1,) float64)}`` for every class present.
    """
    if bins < 1:
        raise ConfigError(f"activation histograms: bins must be >= 1, got {bins}")
    if isinstance(frames, np.ndarray):
        if labels is None:
            raise InputError("activation histograms: frames given as an array need labels")
        arrays = (frames, labels, mask)

        def source() -> Iterable[LabelledBatch]:
            return _array_batches(*arrays, batch_size)

    else:
        if labels is not None or mask is not None:
            raise InputError("activation histograms: batches carry their own labels and masks")
        batches = frames

        def source() -> Iterable[LabelledBatch]:
            return batches

    with torch.no_grad(), eval_mode(model):
        if value_range is None:
            if iter(frames) is frames:
                raise ConfigError("activation histograms: give value_range for one-pass batch iterators")
            low, high = np.inf, -np.inf
            for act, _ in _activations(model, spec, layer, source(), layout):
                low, high = min(low, float(act.min())), max(high, float(act.max()))
            value_range = (low, high) if np.isfinite(low) else (0.0, 1.0)
        low, high = float(value_range[0]), float(value_range[1])
        if not high > low:
            high = low + 1.0  # all activations equal: one bin holds them all
        edges = np.linspace(low, high, bins + 1)
        counts: dict[int, torch.Tensor] = {}
        for act, labs in _activations(model, spec, layer, source(), layout):
            idx = ((act - low) * (bins / (high - low))).floor_().clamp_(0, bins - 1).long()
            idx = idx.reshape(idx.shape[0], -1)
            for lab in np.unique(labs):
                rows = torch.from_numpy(np.flatnonzero(labs == lab)).to(idx.device)
                c = torch.bincount(idx[rows].reshape(-1), minlength=bins).cpu()
                counts[int(lab)] = counts[int(lab)] + c if int(lab) in counts else c
    out: dict[str | int, Histogram] = {}
    for lab in sorted(counts):
        key: str | int = lab
        if class_names is not None:
            if not 0 <= lab < len(class_names):
                raise InputError(f"activation histograms: label {lab} has no name in {list(class_names)}")
            key = class_names[lab]
        out[key] = (counts[lab].numpy().astype(np.int64), edges.copy())
    return out
