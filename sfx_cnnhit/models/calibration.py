"""Post-hoc calibration on the validation set: per-class logit offsets and the hit/miss threshold.

A network trained with augmentation (hot pixels, gain, noise) sees harder frames than the clean
ones it is validated and used on, and its classes come out shifted (e.g. "good" read as "weak").
Two cheap corrections, both fitted on the validation frames only (never the test split):

- **logit offsets** ``b`` (one per class): ``argmin_b mean CE(log p + b, y) + l2 |b|^2``, added to
  the bias of the network's last linear layer, so the checkpoint stays an ordinary model;
- **decision threshold** on P(hit): the middle (in log-odds) of the widest range of thresholds
  that give the best hit/miss accuracy on validation. Commands use it unless a threshold or a
  target hit recall is given. Where the validation frames include both frames the input bins
  (``bin_factor`` >= 2: every real detector) and frames it does not (512² and smaller), each kind
  gets its own threshold (:func:`hit_thresholds`): a max-pooled bin is the brightest of ``k²``
  pixels, so its noise has a heavier tail than one pixel's (the chance of a ``z > 5`` bin is about 50,
  200 and 400 times a pixel's at ``k`` = 2, 3 and 4) and the count of false spots on a miss, and
  with it the best threshold, depends on the binning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from sfx_cnnhit.errors import ConfigError, InputError

#: Checkpoint metrics key of the calibrated hit/miss threshold on P(hit).
DECISION_THRESHOLD = "decision_threshold"
#: Checkpoint metrics key of the threshold of frames the input does not bin (bin factor 1), where the
#: calibration fitted one apart from :data:`DECISION_THRESHOLD` (which then holds the binned frames').
UNBINNED_THRESHOLD = "decision_threshold_unbinned"
#: Hit threshold of a checkpoint that records no calibrated one.
FALLBACK_THRESHOLD = 0.5
#: Checkpoint metrics key of the calibration record (offsets, validation accuracy before and after).
CALIBRATION = "calibration"


def fit_logit_offsets(log_probs: ArrayLike, labels: ArrayLike, *, l2: float = 1e-3) -> NDArray[np.float64]:
    """Per-class offsets ``(K,)`` that minimise the cross-entropy of ``log_probs + b`` (``(n, K)``,
    any per-row constant) against ``labels`` (``(n,)``), with a small L2 penalty (offsets sum to 0)."""
    z = torch.as_tensor(np.asarray(log_probs, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise InputError(f"calibration: need (n, K) scores and (n,) labels, got {tuple(z.shape)} and {tuple(y.shape)}")
    z = torch.clamp(z, min=-50.0)  # log(0) from a saturated softmax
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = nn.functional.cross_entropy(z + b, y) + l2 * (b * b).sum()
        value.backward()
        return value

    opt.step(loss)
    offsets = b.detach().numpy()
    return cast("NDArray[np.float64]", offsets - offsets.mean())


def best_accuracy_threshold(p_hit: ArrayLike, is_hit: ArrayLike) -> float:
    """The P(hit) threshold (hit if ``p >= t``) with the best accuracy on these frames; among equally
    good ones, the middle (in log-odds) of the first widest run of them."""
    p = np.clip(np.asarray(p_hit, np.float64).reshape(-1), 1e-12, 1 - 1e-12)
    y = np.asarray(is_hit, bool).reshape(-1)
    if p.size == 0 or p.size != y.size:
        raise InputError("calibration: need one P(hit) per labelled frame")
    order = np.argsort(p)
    p, y = p[order], y[order]
    # Cut i: frames i.. are called hits. Correct = misses below the cut + hits from it on.
    misses_below = np.concatenate([[0], np.cumsum(~y)])
    hits_from = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = misses_below + hits_from
    best = np.flatnonzero(correct == correct.max())
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    logit = np.log(p / (1 - p))
    edges = np.concatenate([[logit[0] - 1.0], (logit[:-1] + logit[1:]) / 2, [logit[-1] + 1.0]])

    def width(run: NDArray[np.int64]) -> float:
        return float(edges[run[-1]] - edges[run[0]])

    run = max(runs, key=width)
    middle = (edges[run[0]] + edges[run[-1]]) / 2
    return float(1.0 / (1.0 + math.exp(-middle)))


def hit_thresholds(p_hit: ArrayLike, is_hit: ArrayLike, bin_factors: ArrayLike | None = None) -> dict[str, float]:
    """The calibrated thresholds of :func:`best_accuracy_threshold`: ``{DECISION_THRESHOLD: t}``, or,
    where ``bin_factors`` (one per frame) holds both unbinned (1) and binned (>= 2) frames, the binned
    frames' threshold as :data:`DECISION_THRESHOLD` and the unbinned frames' as :data:`UNBINNED_THRESHOLD`."""
    p, y = np.asarray(p_hit, np.float64).reshape(-1), np.asarray(is_hit, bool).reshape(-1)
    if bin_factors is None:
        return {DECISION_THRESHOLD: best_accuracy_threshold(p, y)}
    unbinned = np.asarray(bin_factors).reshape(-1) == 1
    if unbinned.size != p.size:
        raise InputError("calibration: need one bin factor per labelled frame")
    if unbinned.all() or not unbinned.any():
        return {DECISION_THRESHOLD: best_accuracy_threshold(p, y)}
    return {
        DECISION_THRESHOLD: best_accuracy_threshold(p[~unbinned], y[~unbinned]),
        UNBINNED_THRESHOLD: best_accuracy_threshold(p[unbinned], y[unbinned]),
    }


def frame_thresholds(
    thresholds: Mapping[str, Any], bin_factors: ArrayLike, default: float = FALLBACK_THRESHOLD
) -> NDArray[np.float64]:
    """The threshold of each frame (``bin_factors``, one per frame) under ``thresholds`` (a checkpoint's
    metrics or a :func:`hit_thresholds` record): the unbinned frames' own for bin factor 1 where one was
    fitted, else :data:`DECISION_THRESHOLD`, else ``default``."""
    k = np.asarray(bin_factors).reshape(-1)
    binned = float(thresholds.get(DECISION_THRESHOLD, default))
    return np.where(k == 1, float(thresholds.get(UNBINNED_THRESHOLD, binned)), binned)


def last_linear(model: nn.Module, num_classes: int) -> nn.Linear:
    """The network's output layer: its last ``nn.Linear`` with ``num_classes`` outputs and a bias."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not layers or layers[-1].bias is None:
        raise ConfigError(f"calibration: no final linear layer with {num_classes} outputs and a bias")
    return layers[-1]


@torch.no_grad()
def apply_logit_offsets_(model: nn.Module, offsets: ArrayLike) -> nn.Module:
    """Add per-class ``offsets`` to the bias of the model's output layer (in place); returns ``model``."""
    b = torch.as_tensor(np.asarray(offsets, np.float64))
    head = last_linear(model, b.numel())
    head.bias.add_(b.to(head.bias.dtype))
    return model


def calibration_record(
    probs: NDArray[np.floating],
    labels: NDArray[np.integer],
    hit_classes: tuple[int, ...],
    *,
    l2: float = 1e-3,
    bin_factors: ArrayLike | None = None,
) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """Offsets and threshold(s) (:func:`hit_thresholds`, ``bin_factors`` one per frame or None) fitted
    on validation ``probs`` ``(n, K)`` and class ``labels``, with the validation accuracies before and
    after (five-class and hit/miss at the thresholds); and the calibrated probabilities ``(n, K)``."""
    log_probs = np.log(np.clip(probs, 1e-30, None))
    offsets = fit_logit_offsets(log_probs, labels, l2=l2)
    shifted = log_probs + offsets
    calibrated = np.exp(shifted - shifted.max(axis=1, keepdims=True))
    calibrated /= calibrated.sum(axis=1, keepdims=True)
    hit = list(hit_classes)
    is_hit = np.isin(labels, hit)
    p_hit = calibrated[:, hit].sum(axis=1)
    thresholds = hit_thresholds(p_hit, is_hit, bin_factors)
    per_frame = thresholds[DECISION_THRESHOLD] if bin_factors is None else frame_thresholds(thresholds, bin_factors)
    record = {
        "logit_offsets": [float(v) for v in offsets],
        **thresholds,
        "n_frames": len(labels),
        "val_accuracy_before": float(np.mean(probs.argmax(axis=1) == labels)),
        "val_accuracy_after": float(np.mean(calibrated.argmax(axis=1) == labels)),
        "val_hit_accuracy_at_0.5_before": float(np.mean((probs[:, hit].sum(axis=1) >= 0.5) == is_hit)),
        "val_hit_accuracy_after": float(np.mean((p_hit >= per_frame) == is_hit)),
    }
    return record, calibrated
