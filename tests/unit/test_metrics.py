"""Metrics against hand-computed confusion matrices, curves and thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.models.metrics import (
    accuracy,
    auc,
    choose_threshold,
    confusion_matrix,
    evaluation_summary,
    format_table3,
    format_table5,
    plot_curves,
    pr_curve,
    precision,
    recall,
    roc_curve,
    row_percentages,
    table5_matrix,
)

FIVE = ("blank", "no_crystal", "weak", "good", "strong")


def test_confusion_matrix_by_hand() -> None:
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 2, 2, 0, 2]
    cm = confusion_matrix(y_true, y_pred, 3)
    # rows true, columns predicted
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 3]]
    assert accuracy(cm) == pytest.approx(6 / 9)
    assert precision(cm) == pytest.approx([1 / 2, 2 / 3, 3 / 4])
    assert recall(cm) == pytest.approx([1 / 2, 2 / 3, 3 / 4])
    assert row_percentages(cm)[2] == pytest.approx([25.0, 0.0, 75.0])


def test_absent_classes_give_nan_not_zero() -> None:
    cm = confusion_matrix([0, 0, 1], [0, 0, 0], 3)
    assert cm.tolist() == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert precision(cm)[0] == pytest.approx(2 / 3)
    assert math.isnan(precision(cm)[1]) and math.isnan(recall(cm)[2])
    assert recall(cm)[1] == 0.0
    with pytest.raises(InputError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(InputError):
        confusion_matrix([0, 1], [0], 3)


def test_seed_table3_form() -> None:
    cm = np.array([[20, 0, 0, 0, 0], [1, 19, 0, 0, 0], [0, 2, 17, 1, 0], [0, 0, 1, 18, 1], [0, 0, 0, 2, 18]])
    text = format_table3(cm, FIVE)
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["Recall", "(%)"]
    assert lines[3].split() == ["weak", "0", "2", "17", "1", "0", "85.0"]
    # precision of 'good' = 18 / (1 + 18 + 2) = 85.7 %
    assert lines[-1].split()[2:] == ["95.2", "90.5", "94.4", "85.7", "94.7"]


def test_seed_table5_form() -> None:
    hit_true = [True] * 4 + [False] * 6
    hit_pred = [True, True, True, False, True, False, False, False, False, False]
    table = table5_matrix(hit_true, hit_pred)
    # rows true (hit, miss), columns predicted (hit, miss), percent
    assert np.allclose(table, [[75.0, 25.0], [100 / 6, 500 / 6]])
    text = format_table5(table)
    assert text.splitlines()[1].split() == ["hit", "75.0", "25.0"]


def test_roc_and_pr_by_hand() -> None:
    is_hit = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.1]
    roc = roc_curve(is_hit, scores)
    assert roc["tpr"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert roc["fpr"].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert roc["thresholds"].tolist() == [math.inf, 0.9, 0.8, 0.7, 0.1]
    assert auc(roc["fpr"], roc["tpr"]) == pytest.approx(0.75)
    pr = pr_curve(is_hit, scores)
    assert pr["precision"].tolist() == pytest.approx([1.0, 1.0, 0.5, 2 / 3, 0.5])
    assert pr["recall"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_pr_area_counts_hits_tied_at_the_top() -> None:
    """A perfect ranking whose hits share one score (P(hit) saturated at 1) has PR area 1, not 1 - recall."""
    pr = pr_curve([1, 1, 1, 0, 0], [1.0, 1.0, 1.0, 0.2, 0.1])
    assert auc(pr["recall"], pr["precision"]) == pytest.approx(1.0)


def test_roc_groups_tied_scores() -> None:
    roc = roc_curve([1, 0, 1], [0.5, 0.5, 0.2])
    assert roc["tpr"].tolist() == [0.0, 0.5, 1.0]
    assert roc["fpr"].tolist() == [0.0, 1.0, 1.0]


def test_threshold_chooser_by_hand() -> None:
    is_hit = np.array([1] * 10 + [0] * 30, bool)
    hit_scores = np.linspace(0.55, 1.0, 10)  # lowest hit 0.55
    miss_scores = np.r_[np.full(27, 0.1), [0.6, 0.7, 0.95]]
    scores = np.r_[hit_scores, miss_scores]
    full = choose_threshold(is_hit, scores, 1.0)
    assert full.threshold == pytest.approx(0.55)
    assert full.hit_recall == 1.0
    assert full.miss_rejection == pytest.approx(27 / 30)
    assert full.kept_fraction == pytest.approx(13 / 40)
    assert full.data_reduction == pytest.approx(40 / 13)
    part = choose_threshold(is_hit, scores, 0.8)  # 8 of 10 hits: threshold = 3rd lowest hit score
    assert part.threshold == pytest.approx(hit_scores[2])
    assert part.hit_recall == pytest.approx(0.8)
    assert part.miss_rejection == pytest.approx(28 / 30)
    with pytest.raises(InputError):
        choose_threshold([0, 0], [0.1, 0.2])
    with pytest.raises(InputError):
        choose_threshold([1, 0], [0.1, 0.2], 1.5)


def test_evaluation_summary_fiveclass_and_merge() -> None:
    labels = np.array([0, 1, 2, 3, 4, 4])
    probs = np.eye(5)[[0, 1, 2, 2, 4, 1]] * 0.9 + 0.02  # rows sum to 1
    s = evaluation_summary(probs, labels, FIVE)
    for key in ("n_frames", "class_names", "accuracy", "precision", "recall", "confusion_matrix",
                "hit_accuracy", "hit_recall", "miss_rejection", "threshold"):
        assert key in s
    assert s["n_frames"] == 6 and s["class_names"] == list(FIVE)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["confusion_matrix"][3] == [0, 0, 1, 0, 0]
    # hit/miss: true hits are frames 2..5; frame 5 (strong) predicted no_crystal: a missed hit.
    assert s["hit_recall"] == pytest.approx(3 / 4)
    assert s["miss_rejection"] == 1.0
    assert s["threshold"]["hit_recall"] >= 0.995
    # Blank / no crystal / hit: the missed strong hit (frame 5) is the one error.
    assert s["three_way_classes"] == ["blank", "no_crystal", "hit"]
    assert s["three_way_confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 3]]
    assert s["three_way_accuracy"] == pytest.approx(5 / 6)
    # Labels only hit/miss (like /truth/hit) with a five-class model: merged to two classes.
    m = evaluation_summary(probs, (labels >= 2).astype(int), FIVE, ("miss", "hit"))
    assert m["class_names"] == ["miss", "hit"]
    assert m["confusion_matrix"] == [[2, 0], [1, 3]]
    assert m["precision"][0] == pytest.approx(2 / 3)
    assert "three_way_accuracy" not in m


def test_evaluation_summary_without_hits_has_null_threshold() -> None:
    s = evaluation_summary(np.array([[0.9, 0.1], [0.8, 0.2]]), [0, 0], ("miss", "hit"))
    assert s["threshold"] is None and s["hit_recall"] is None
    assert s["precision"][1] is None  # NaN written as null


def test_plot_curves_writes_png(tmp_path) -> None:
    out = plot_curves([1, 0, 1, 0], [0.9, 0.3, 0.6, 0.5], tmp_path / "curves.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "curves.png.inprogress").exists()
