"""Figures of a comparison: each method against the labels, and the methods against each other.

The confusion-matrix arithmetic is :mod:`sfx_cnnhit.models.metrics`'s (rows = true class, columns =
predicted; undefined ratios are NaN); this module adds the hit/miss summary of one method and the
pairwise agreement between methods (fraction of equal decisions and Cohen's kappa).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sfx_cnnhit.models.metrics import _nan_to_none as nan_to_none  # NaN -> None (JSON null), nested
from sfx_cnnhit.models.metrics import accuracy, confusion_matrix, precision, recall, table5_matrix

__all__ = ["TABLE5_ROWS", "agreement", "cohen_kappa", "hit_metrics", "nan_to_none"]

#: Row and column names of the seed paper's Table 5.
TABLE5_ROWS = ("hit or maybe", "miss")


def hit_metrics(true_hit: ArrayLike, pred_hit: ArrayLike) -> dict[str, Any]:
    """One method's decisions against hit/miss labels.

    Args:
        true_hit: ``(n,)`` bool, the labels.
        pred_hit: ``(n,)`` bool, the method's decisions on the same frames.

    Returns:
        ``n_labelled``, ``tp, fp, fn, tn``, ``confusion_matrix`` (rows true hit/miss, columns
        predicted hit/miss, counts), ``accuracy``, ``precision`` and ``recall`` of the hit class,
        ``hit_recall`` (= recall), ``miss_rejection`` (recall of the miss class), ``kappa`` (Cohen's,
        against the labels) and ``table5`` (the confusion matrix in % of each true class). NaN where
        undefined.
    """
    t = np.asarray(true_hit, dtype=bool).ravel()
    p = np.asarray(pred_hit, dtype=bool).ravel()
    cm = confusion_matrix(t, p, 2)  # index 0 = miss, 1 = hit
    (tn, fp), (fn, tp) = cm.tolist()
    rec = recall(cm)
    return {
        "n_labelled": int(t.size),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "confusion_matrix": [[tp, fn], [fp, tn]],
        "accuracy": accuracy(cm),
        "precision": float(precision(cm)[1]),
        "recall": float(rec[1]),
        "hit_recall": float(rec[1]),
        "miss_rejection": float(rec[0]),
        "kappa": cohen_kappa(t, p),
        "table5": table5_matrix(t, p).tolist(),
    }


def cohen_kappa(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's kappa of two binary decision vectors: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the observed fraction of equal decisions, ``p_e`` the one expected by chance from each
    side's hit rate. NaN when undefined (no frames, or both sides constant so that ``p_e = 1``).
    """
    x = np.asarray(a, dtype=bool).ravel()
    y = np.asarray(b, dtype=bool).ravel()
    if x.size == 0:
        return math.nan
    p_o = float(np.mean(x == y))
    hx, hy = float(x.mean()), float(y.mean())
    p_e = hx * hy + (1.0 - hx) * (1.0 - hy)
    return math.nan if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def agreement(decisions: Mapping[str, NDArray[np.bool_]]) -> dict[str, Any]:
    """Pairwise agreement between methods' decisions on the same frames.

    Returns:
        ``methods`` (names, in order), ``fraction`` (matrix of the fraction of frames with the same
        decision) and ``kappa`` (matrix of Cohen's kappa); diagonals are 1 (kappa NaN for a method
        that decides the same on every frame).
    """
    names = list(decisions)
    values = [np.asarray(decisions[n], dtype=bool) for n in names]
    fraction = [[float(np.mean(u == v)) if u.size else math.nan for v in values] for u in values]
    kappa = [[cohen_kappa(u, v) for v in values] for u in values]
    return {"methods": names, "fraction": fraction, "kappa": kappa}
