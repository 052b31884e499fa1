"""ROC and precision-recall curves of every method's score on the labelled frames, in one picture.

Each method's score (peak count, spot count, P(hit)) is swept over all its values; the point of the
method's actual decisions is marked on both curves.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.io.atomic import atomic_output
from sfx_cnnhit.models.metrics import cumulative_counts

from .gallery import COLOURS
from .runner import ComparisonResult


def sweep(scores: NDArray[np.floating], truth: NDArray[np.bool_]) -> dict[str, NDArray[np.float64]]:
    """``fpr, tpr, precision`` at every cut ``score >= s`` (from the highest score down), starting at no hits."""
    _, tp, fp = cumulative_counts(truth, scores)
    tp, fp = np.r_[0.0, tp], np.r_[0.0, fp]
    y = np.asarray(truth, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
    return {"fpr": fp / max(int((~y).sum()), 1), "tpr": tp / max(int(y.sum()), 1), "precision": precision}


def areas(curve: dict[str, NDArray[np.float64]]) -> dict[str, float]:
    """Area under the ROC curve (trapezoids) and average precision (sum of precision x recall steps)."""
    fpr, tpr, precision = curve["fpr"], curve["tpr"], curve["precision"]
    return {"roc_auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
            "average_precision": float(np.sum(np.diff(tpr) * precision[1:]))}


def curve_figures(result: ComparisonResult) -> dict[str, dict[str, Any]]:
    """Per method: its sweep, areas and operating point (fpr, tpr, precision) on the labelled frames."""
    labelled = result.labelled
    truth = result.true_hit[labelled] == 1
    out = {}
    for m in result.methods:
        curve = sweep(result.scores[m.name][labelled], truth)
        hits = result.hits[m.name][labelled]
        tp, fp = int(np.sum(hits & truth)), int(np.sum(hits & ~truth))
        point = (fp / max(int((~truth).sum()), 1), tp / max(int(truth.sum()), 1), tp / (tp + fp) if tp + fp else 1.0)
        out[m.name] = {"curve": curve, **areas(curve), "point": point}
    return out


def render_curves(result: ComparisonResult, path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Draw ROC and PR curves of every method to ``path`` (PNG); returns each method's areas.

    Needs labelled frames with both hits and misses (the caller checks).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = curve_figures(result)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.4), dpi=90)
    for k, (name, f) in enumerate(figures.items()):
        colour = COLOURS[k % len(COLOURS)]
        c, (x, y, p) = f["curve"], f["point"]
        roc.plot(c["fpr"], c["tpr"], color=colour,
                 label=f"{name} (AUC {f['roc_auc']:.3f})")
        roc.plot([x], [y], "o", color=colour, markeredgecolor="black")
        pr.plot(c["tpr"], c["precision"], color=colour, drawstyle="steps-post",
                label=f"{name} (AP {f['average_precision']:.3f})")
        pr.plot([y], [p], "o", color=colour, markeredgecolor="black")
    roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    roc.set(xlabel="false positive rate (misses called hits)", ylabel="hit recall", title="ROC", xlim=(-0.02, 1.02),
            ylim=(-0.02, 1.02))
    pr.set(xlabel="hit recall", ylabel="precision", title="precision-recall", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    for ax in (roc, pr):
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("score swept over all its values; dots: each method's decisions", fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return {name: {"roc_auc": f["roc_auc"], "average_precision": f["average_precision"]}
            for name, f in figures.items()}
