"""Classification metrics in the seed paper's forms, ROC/PR curves and the hit-threshold chooser.

Conventions: confusion matrices have rows = true class and columns = predicted class; "hit" scores
are P(hit) (or any score where larger means more hit-like); a frame is kept when ``score >= threshold``.
Undefined ratios (no frame of a class, no prediction of a class) are NaN.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.models.tasks import hit_class_indices, to_hitmiss

#: Row and column order of the seed's Table 5: hit first, then miss.
TABLE5_LABELS = ("hit", "miss")


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """``(K, K)`` counts, rows = true class, columns = predicted class."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise InputError(f"confusion matrix: {t.size} true labels but {p.size} predictions")
    bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        raise InputError(f"confusion matrix: labels outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan).astype(np.float64)


def accuracy(cm: NDArray[np.integer]) -> float:
    """Fraction of frames on the diagonal (NaN for an empty matrix)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else math.nan


def precision(cm: NDArray[np.integer]) -> NDArray[np.float64]:
    """Per class ``TP / (TP + FP)`` (column-wise)."""
    return _ratio(np.diag(cm), cm.sum(axis=0))


def recall(cm: NDArray[np.integer]) -> NDArray[np.float64]:
    """Per class ``TP / (TP + FN)`` (row-wise)."""
    return _ratio(np.diag(cm), cm.sum(axis=1))


def row_percentages(cm: NDArray[np.integer]) -> NDArray[np.float64]:
    """Each row as percentages of its true-class total (NaN rows for absent classes)."""
    return 100.0 * _ratio(cm, cm.sum(axis=1, keepdims=True))


def table5_matrix(hit_true: ArrayLike, hit_pred: ArrayLike) -> NDArray[np.float64]:
    """The seed's Table 5 form: rows true (hit, miss), columns predicted (hit, miss), in %."""
    cm = confusion_matrix(np.asarray(hit_true, bool), np.asarray(hit_pred, bool), 2)  # 0 = miss, 1 = hit
    return row_percentages(cm[::-1, ::-1])


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_table3(cm: NDArray[np.integer], class_names: Sequence[str]) -> str:
    """The seed's Table 3: counts (rows true, columns predicted), a recall column and a precision row (%)."""
    width = max(10, *(len(c) + 2 for c in class_names))
    head = "true \\ predicted".ljust(width + 2) + "".join(c.rjust(width) for c in class_names) + "Recall (%)".rjust(12)
    lines = [head]
    for name, row, rec in zip(class_names, cm, recall(cm), strict=True):
        lines.append(name.ljust(width + 2) + "".join(str(int(v)).rjust(width) for v in row) + _fmt(100 * rec).rjust(12))
    lines.append("Precision (%)".ljust(width + 2) + "".join(_fmt(100 * p).rjust(width) for p in precision(cm)))
    return "\n".join(lines)


def format_table5(table: NDArray[np.floating]) -> str:
    """The seed's Table 5 (:func:`table5_matrix`) as text."""
    lines = ["true \\ predicted".ljust(18) + "".join(c.rjust(10) for c in TABLE5_LABELS)]
    for name, row in zip(TABLE5_LABELS, table, strict=True):
        lines.append(name.ljust(18) + "".join(_fmt(v).rjust(10) for v in row))
    return "\n".join(lines)


def _check_binary(is_hit: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    y = np.asarray(is_hit, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InputError(f"{y.size} labels but {s.size} scores")
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or inf")
    return y, s


def cumulative_counts(
    is_hit: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Distinct thresholds (descending) and true/false positives kept at each (``score >= t``)."""
    y, s = _check_binary(is_hit, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1 - tp).astype(np.float64)
    return s[last], tp, fp


def roc_curve(is_hit: ArrayLike, scores: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """ROC: ``{"fpr", "tpr", "thresholds"}`` from (0, 0) at threshold +inf to (1, 1)."""
    thr, tp, fp = cumulative_counts(is_hit, scores)
    n_pos, n_neg = (tp[-1], fp[-1]) if tp.size else (0.0, 0.0)
    return {
        "fpr": np.r_[0.0, fp / n_neg if n_neg else np.full_like(fp, np.nan)],
        "tpr": np.r_[0.0, tp / n_pos if n_pos else np.full_like(tp, np.nan)],
        "thresholds": np.r_[np.inf, thr],
    }


def pr_curve(is_hit: ArrayLike, scores: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """Precision-recall: ``{"precision", "recall", "thresholds"}``, one point per distinct score, after
    a first point at recall 0 (threshold +inf) with the precision of the highest score, so that the
    area under the curve counts the recall the first threshold already reaches (ties at the top)."""
    thr, tp, fp = cumulative_counts(is_hit, scores)
    n_pos = tp[-1] if tp.size else 0.0
    precision = tp / (tp + fp)
    return {
        "precision": np.r_[precision[:1], precision],
        "recall": np.r_[0.0, tp / n_pos if n_pos else np.full_like(tp, np.nan)],
        "thresholds": np.r_[np.inf, thr],
    }


def auc(x: NDArray[np.floating], y: NDArray[np.floating]) -> float:
    """Area under a curve by the trapezoid rule (x monotonic)."""
    return float(abs(np.trapezoid(y, x))) if x.size > 1 else math.nan


@dataclass(frozen=True)
class ThresholdChoice:
    """A hit threshold and what it gives on labelled frames.

    Attributes:
        threshold: keep a frame when its score is >= this.
        target_recall: the hit recall asked for.
        hit_recall: fraction of true hits kept (>= target_recall).
        miss_rejection: fraction of true misses dropped.
        kept_fraction: fraction of all frames kept.
        data_reduction: frames in / frames kept.
    """

    threshold: float
    target_recall: float
    hit_recall: float
    miss_rejection: float
    kept_fraction: float
    data_reduction: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def choose_threshold(is_hit: ArrayLike, scores: ArrayLike, target_recall: float = 0.995) -> ThresholdChoice:
    """The highest threshold that keeps at least ``target_recall`` of the true hits.

    Raises:
        InputError: no true hit among the frames, or ``target_recall`` outside (0, 1].
    """
    if not 0.0 < target_recall <= 1.0:
        raise InputError(f"target hit recall must be in (0, 1], got {target_recall}")
    y, s = _check_binary(is_hit, scores)
    hit_scores = np.sort(s[y])[::-1]
    if hit_scores.size == 0:
        raise InputError("cannot choose a hit threshold: no true hits among the labelled frames")
    need = max(1, math.ceil(target_recall * hit_scores.size - 1e-9))
    threshold = float(hit_scores[need - 1])
    kept = s >= threshold
    n_miss = int((~y).sum())
    return ThresholdChoice(
        threshold=threshold,
        target_recall=float(target_recall),
        hit_recall=float(kept[y].mean()),
        miss_rejection=float((~kept[~y]).sum() / n_miss) if n_miss else math.nan,
        kept_fraction=float(kept.mean()),
        data_reduction=float(s.size / kept.sum()),
    )


def plot_curves(is_hit: ArrayLike, scores: ArrayLike, path: str | os.PathLike[str], title: str = "") -> Path:
    """Write the ROC and precision-recall curves side by side as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfx_cnnhit.io.atomic import atomic_output

    roc, pr = roc_curve(is_hit, scores), pr_curve(is_hit, scores)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    ax1.plot(roc["fpr"], roc["tpr"])
    roc_auc = auc(roc["fpr"], roc["tpr"])
    ax1.set(xlabel="false hit rate (misses kept)", ylabel="hit recall", title=f"ROC, AUC {roc_auc:.4f}")
    ax2.plot(pr["recall"], pr["precision"])
    ax2.set(xlabel="hit recall", ylabel="hit precision", title="precision-recall")
    for ax in (ax1, ax2):
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, float):
        return None if math.isnan(values) else values
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    if isinstance(values, dict):
        return {k: _nan_to_none(v) for k, v in values.items()}
    return values


def evaluation_summary(
    probs: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    label_names: Sequence[str] | None = None,
    *,
    target_hit_recall: float = 0.995,
    hit_threshold: float | ArrayLike = 0.5,
) -> dict[str, Any]:
    """Every figure of ``sfx-cnnhit evaluate`` as a JSON-compatible dict (NaN written as null).

    Args:
        probs: ``(n, K)`` class probabilities of the model, classes ``class_names``.
        labels: ``(n,)`` true labels, indices into ``label_names`` (default: ``class_names``).
        class_names: the model's classes.
        label_names: the labels' classes. If they differ from the model's, both sides are merged
            into hit/miss (e.g. five-class labels with a hit/miss model, or ``/truth/hit`` labels).
        target_hit_recall: hit recall the threshold chooser must reach.
        hit_threshold: a frame is called a hit when P(hit) >= this (the model's decision threshold),
            one for all frames or one per frame (binned and unbinned frames' thresholds).

    Returns:
        ``n_frames, class_names, accuracy, precision, recall, confusion_matrix`` (in the compared class
        space), ``table3``, ``hit_threshold`` (a list of the distinct ones where frames had several),
        ``hit_accuracy, hit_recall, miss_rejection`` (frames kept when P(hit) >= hit_threshold),
        ``hit_confusion_percent`` (Table 5 form), ``roc_auc, pr_auc``, and ``threshold`` (the
        :class:`ThresholdChoice` for ``target_hit_recall`` as a dict, or null without true hits).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    class_names, label_names = tuple(class_names), tuple(label_names or class_names)
    if p.ndim != 2 or p.shape[1] != len(class_names) or p.shape[0] != y.size:
        raise InputError(f"probabilities {p.shape} do not match {y.size} labels and {len(class_names)} classes")
    p_hit = p[:, list(hit_class_indices(class_names))].sum(axis=1)
    hit_true = to_hitmiss(y, label_names).astype(bool)
    thresholds = np.unique(np.asarray(hit_threshold, np.float64))
    per_frame = np.broadcast_to(np.asarray(hit_threshold, np.float64), p_hit.shape)
    if label_names == class_names:
        names, y_cls, pred = class_names, y, p.argmax(axis=1)
    else:
        names, y_cls, pred = ("miss", "hit"), hit_true.astype(np.int64), (p_hit >= per_frame).astype(np.int64)
    cm = confusion_matrix(y_cls, pred, len(names))
    hit_pred = p_hit >= per_frame
    cm_hit = confusion_matrix(hit_true, hit_pred, 2)
    roc, pr = roc_curve(hit_true, p_hit), pr_curve(hit_true, p_hit)
    summary = {
        "n_frames": int(y.size),
        "class_names": list(names),
        "accuracy": accuracy(cm),
        "precision": precision(cm).tolist(),
        "recall": recall(cm).tolist(),
        "confusion_matrix": cm.tolist(),
        "table3": format_table3(cm, names),
        "hit_threshold": float(thresholds[0]) if thresholds.size == 1 else thresholds.tolist(),
        "hit_accuracy": accuracy(cm_hit),
        "hit_recall": float(recall(cm_hit)[1]),
        "miss_rejection": float(recall(cm_hit)[0]),
        "hit_confusion_percent": table5_matrix(hit_true, hit_pred).tolist(),
        "roc_auc": auc(roc["fpr"], roc["tpr"]),
        "pr_auc": auc(pr["recall"], pr["precision"]),
        "threshold": choose_threshold(hit_true, p_hit, target_hit_recall).to_dict() if hit_true.any() else None,
    }
    if names == class_names and {"blank", "no_crystal"} <= set(names):
        summary.update(_three_way(p, y, names, hit_pred))
    return {k: _nan_to_none(v) for k, v in summary.items()}


def _three_way(
    probs: NDArray[np.float64], labels: NDArray[np.int64], names: Sequence[str], hit_pred: NDArray[np.bool_]
) -> dict[str, Any]:
    """Blank / no crystal / hit accuracy and confusion matrix of a five-class model: a frame is a hit
    when P(hit) >= the threshold (as ``reduce`` decides), otherwise the likelier of blank and no crystal."""
    blank, empty = names.index("blank"), names.index("no_crystal")
    group = np.where(labels == blank, 0, np.where(labels == empty, 1, 2))
    pred = np.where(hit_pred, 2, np.where(probs[:, blank] >= probs[:, empty], 0, 1))
    cm = confusion_matrix(group, pred, 3)
    return {"three_way_classes": ["blank", "no_crystal", "hit"], "three_way_accuracy": accuracy(cm),
            "three_way_confusion_matrix": cm.tolist()}


#: Key of a checkpoint's metrics holding the validation P(hit) of every true hit (sorted, descending).
VALIDATION_HIT_SCORES = "validation_hit_scores"


def threshold_for_recall(metrics: dict[str, Any], target_recall: float, *, source: str = "model") -> float:
    """The highest threshold that keeps ``target_recall`` of the validation hits a checkpoint recorded.

    Raises:
        ConfigError: ``target_recall`` outside (0, 1] or the checkpoint has no validation hit scores.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"target hit recall must be in (0, 1], got {target_recall}")
    scores = np.sort(np.asarray(metrics.get(VALIDATION_HIT_SCORES, []), np.float64))[::-1]
    if scores.size == 0:
        raise ConfigError(
            f"{source}: records no validation hit scores; give --hit-threshold or choose one with `sfx-cnnhit evaluate`"
        )
    return float(scores[max(1, math.ceil(target_recall * scores.size - 1e-9)) - 1])
