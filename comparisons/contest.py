"""A fair contest: every method at its best settings, chosen on labelled validation frames only.

Each method brings a :class:`Grid`: candidate settings (cells) and a function that scores a batch of
frames with every cell at once (peak counts for peakfinder8 and DIALS, P(hit) for the CNN). The
validation frames are streamed once, in batches; only the ``(cells, frames)`` scores are kept, so
memory is bounded by the batch size and the grid, not by the number of frames. Then, for every cell,
the decision cut (``min_peaks``, ``n_spots >= N``, the CNN's P(hit) threshold) is chosen from those
scores by the same :class:`Criterion` for every method, and the best cell wins. Nothing here ever
sees the test frames: :func:`tune` takes the validation source only.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.io.labels import FrameLabels
from sfx_cnnhit.io.sources import FrameSource

from .metrics import hit_metrics

#: Scores a batch ``(n, ss, fs)`` with masks ``(n, ss, fs)`` (True = good) for every cell: ``(cells, n)``.
BatchScorer = Callable[[NDArray[np.float32], NDArray[np.bool_]], NDArray[np.float64]]


@dataclass(frozen=True)
class Criterion:
    """How every method's settings and cut are chosen on the validation frames.

    Attributes:
        target_recall: None: the best accuracy. A fraction: the best miss rejection among the settings
            that keep at least this hit recall (if none does, the best recall).
    """

    target_recall: float | None = None

    def __post_init__(self) -> None:
        if self.target_recall is not None and not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"target hit recall must be in (0, 1], got {self.target_recall}")

    def describe(self) -> str:
        if self.target_recall is None:
            return "best accuracy"
        return f"best miss rejection at hit recall >= {self.target_recall:g}"

    def keys(self, tp: NDArray[np.int64], tn: NDArray[np.int64], n_hit: int, n_miss: int) -> NDArray[np.float64]:
        """``(k, 3)`` sort keys (larger is better) of ``k`` candidate decisions from their TP and TN counts."""
        accuracy = (tp + tn) / max(n_hit + n_miss, 1)
        recall = tp / max(n_hit, 1)
        rejection = tn / max(n_miss, 1)
        if self.target_recall is None:
            return np.column_stack([accuracy, accuracy, accuracy])
        ok = recall >= self.target_recall - 1e-12
        return np.column_stack([ok, np.where(ok, rejection, recall), accuracy]).astype(np.float64)


def choose_cut(
    scores: NDArray[np.floating], truth: NDArray[np.bool_], criterion: Criterion, *, counts: bool = True
) -> tuple[float, NDArray[np.float64]]:
    """The cut (hit iff ``score >= cut``) that ``criterion`` prefers on these frames, and its key.

    Args:
        scores: ``(n,)`` scores of the labelled frames (peak counts, or P(hit)).
        truth: ``(n,)`` true hits.
        counts: the scores are peak counts: cuts are integers >= 1 (a hit has at least one peak);
            else probabilities: cuts are the scores and the midpoints between them, in [0, 1].

    Among equally good cuts, the longest run of them is taken, and its middle on a log scale (counts)
    or in log-odds (probabilities): with few frames a run can span 1 to 1000 peaks.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(truth, bool)
    if counts:
        candidates = np.arange(1.0, max(float(s.max(initial=0.0)), 0.0) + 2.0)
    else:
        values = np.unique(np.clip(np.concatenate([s, [0.0, 1.0]]), 0.0, 1.0))
        candidates = np.sort(np.concatenate([values, (values[:-1] + values[1:]) / 2]))
    hits_sorted = np.sort(s[y])
    misses_sorted = np.sort(s[~y])
    tp = hits_sorted.size - np.searchsorted(hits_sorted, candidates, side="left")
    tn = np.searchsorted(misses_sorted, candidates, side="left")
    keys = criterion.keys(tp, tn, int(y.sum()), int((~y).sum()))
    best = np.all(keys == keys[np.lexsort(keys.T[::-1])[-1]], axis=1)
    runs = np.split(np.flatnonzero(best), np.flatnonzero(np.diff(np.flatnonzero(best)) > 1) + 1)
    run = max(runs, key=len)
    # The middle of the run on a log scale (peak counts) or in log-odds (probabilities).
    c = np.clip(candidates[run], 1e-6, 1 - 1e-6) if not counts else candidates[run]
    scale = np.log(c) if counts else np.log(c / (1 - c))
    i = int(run[np.argmin(np.abs(scale - (scale[0] + scale[-1]) / 2))])
    return float(candidates[i]), keys[i]


@dataclass
class Grid:
    """A method's candidate settings on the validation frames.

    Attributes:
        name: the method's name in the comparison (``peakfinder8``, ``dials``, ``cnn``).
        cells: JSON-able settings of every candidate.
        score: scores a batch with every cell (see :data:`BatchScorer`).
        counts: scores are peak counts (integer cuts >= 1), else probabilities.
        fixed_cut: the cut the user fixed (``--min-peaks``, ``--hit-threshold``); None: chosen.
        what: what the cut is called (``min_peaks``, ``threshold``).
    """

    name: str
    cells: list[dict[str, Any]]
    score: BatchScorer
    counts: bool = True
    fixed_cut: float | None = None
    what: str = "min_peaks"


@dataclass
class Tuned:
    """A method's chosen settings and how they scored on the validation frames.

    Attributes:
        cell: index of the chosen cell; settings: its settings; cut: its cut (``min_peaks`` or threshold).
        metrics: :func:`~sfx_cnnhit.comparisons.metrics.hit_metrics` on the validation frames.
        table: every cell's settings, cut and validation accuracy, recall and miss rejection.
        seconds: time spent scoring the validation frames.
    """

    name: str
    cell: int
    settings: dict[str, Any]
    cut: float
    what: str
    metrics: dict[str, Any]
    table: list[dict[str, Any]]
    seconds: float

    def summary(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """What ``compare.json`` records of the tuning (without the whole table)."""
        m = self.metrics
        return {**context, "chosen": {**self.settings, self.what: self.cut}, "n_settings": len(self.table),
                "seconds": self.seconds, **{k: m[k] for k in ("n_labelled", "accuracy", "precision", "recall",
                                                               "miss_rejection", "tp", "fp", "fn", "tn")}}


def grid_cells(grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The product of ``grid``'s values, with the keys in ``fixed`` held at their fixed values."""
    fixed = fixed or {}
    free = {k: v for k, v in grid.items() if k not in fixed}
    return [{**dict(zip(free, values, strict=True)), **fixed} for values in itertools.product(*free.values())]


def _choose(grid: Grid, scores: NDArray[np.float64], truth: NDArray[np.bool_], criterion: Criterion,
            seconds: float) -> Tuned:
    """The best cell of ``grid`` from its validation ``scores`` ``(cells, n)``."""
    table: list[dict[str, Any]] = []
    best: tuple[NDArray[np.float64], int, float] | None = None
    for k, row in enumerate(scores):
        if grid.fixed_cut is None:
            cut, key = choose_cut(row, truth, criterion, counts=grid.counts)
        else:
            cut = grid.fixed_cut
            pred = row >= cut
            key = criterion.keys(np.array([np.sum(pred & truth)]), np.array([np.sum(~pred & ~truth)]),
                                 int(truth.sum()), int((~truth).sum()))[0]
        m = hit_metrics(truth, row >= cut)
        table.append({**grid.cells[k], grid.what: int(cut) if grid.counts else cut, "accuracy": m["accuracy"],
                      "recall": m["recall"], "miss_rejection": m["miss_rejection"]})
        if best is None or tuple(key) > tuple(best[0]):  # ties: the first cell in grid order
            best = (key, k, cut)
    assert best is not None
    _, k, cut = best
    cut = float(int(cut)) if grid.counts else cut
    return Tuned(name=grid.name, cell=k, settings=grid.cells[k], cut=cut, what=grid.what,
                 metrics=hit_metrics(truth, scores[k] >= cut), table=table, seconds=seconds)


@dataclass
class Collected:
    """Every grid's validation scores, streamed from a source.

    Attributes:
        scores: per grid name, ``(cells, n)`` scores of the labelled frames.
        truth: ``(n,)`` their true hits.
        seconds: per grid name, time spent scoring.
        frames: ``file //index`` of every labelled frame scored.
    """

    scores: dict[str, NDArray[np.float64]]
    truth: NDArray[np.bool_]
    seconds: dict[str, float]
    frames: list[str]


def collect_scores(
    source: FrameSource,
    labels: FrameLabels,
    grids: Sequence[Grid],
    *,
    batch_size: int = 64,
    max_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Collected:
    """Score ``source``'s labelled frames with every cell of every grid, batch by batch (memory is bounded by
    ``batch_size`` frames plus the ``(cells, frames)`` scores).

    Raises:
        InputError: no labelled frame, or only hits or only misses (nothing to tune against).
    """
    scores: dict[str, list[NDArray[np.float64]]] = {g.name: [] for g in grids}
    seconds = dict.fromkeys(scores, 0.0)
    truth: list[NDArray[np.bool_]] = []
    frames: list[str] = []
    total = source.n_frames if max_frames is None else min(max_frames, source.n_frames)
    done = 0
    for batch in source.batches(batch_size, stop=total):
        _, hit = labels.for_batch(batch)
        keep = hit >= 0
        done += len(batch)
        if keep.any():
            data, mask = batch.data[keep], batch.mask[keep]
            truth.append(hit[keep] == 1)
            frames += frame_keys([batch.source_file] * len(batch), batch.source_index[keep])
            for g in grids:
                start = time.perf_counter()
                out = np.asarray(g.score(data, mask), np.float64)
                seconds[g.name] += time.perf_counter() - start
                if out.shape != (len(g.cells), int(keep.sum())):
                    raise ValueError(f"{g.name}: scored {out.shape}, expected {(len(g.cells), int(keep.sum()))}")
                scores[g.name].append(out)
        if progress is not None:
            progress(done, total)
    y = np.concatenate(truth) if truth else np.zeros(0, bool)
    if y.size == 0:
        raise InputError(f"tuning: no labelled frame in {', '.join(source.input_paths)} ({labels.description})")
    if y.all() or not y.any():
        raise InputError(f"tuning: the {y.size} labelled tuning frames are all {'hits' if y.all() else 'misses'}; "
                         "tuning needs both")
    return Collected({name: np.concatenate(parts, axis=1) for name, parts in scores.items()}, y, seconds, frames)


def frame_keys(files: Sequence[str], indices: Sequence[int] | NDArray[np.integer]) -> list[str]:
    """``file //index`` of frames (the frame of a file, however it was selected)."""
    return [f"{os.path.abspath(f)} //{int(i)}" for f, i in zip(files, indices, strict=False)]


@dataclass
class Tuning:
    """The outcome of :func:`tune`: every method's choice, and the frames it was made on (``file //index``)."""

    methods: dict[str, Tuned]
    frames: list[str]


def tune(
    source: FrameSource,
    labels: FrameLabels,
    grids: Sequence[Grid],
    criterion: Criterion,
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Tuning:
    """Choose every grid's best cell and cut on ``source``'s labelled frames (streamed once).

    Args:
        source: the validation frames (never the test frames).
        labels: their hit/miss labels; unlabelled frames are skipped.
        grids: one per method.
        criterion: the same choice rule for every method.
        batch_size: frames per batch (memory is bounded by it).
        progress: called with ``(frames done, total frames)`` after each batch.

    Raises:
        InputError: no labelled frame, or only hits or only misses.
    """
    got = collect_scores(source, labels, grids, batch_size=batch_size, progress=progress)
    return Tuning({g.name: _choose(g, got.scores[g.name], got.truth, criterion, got.seconds[g.name]) for g in grids},
                  got.frames)


@dataclass
class TuningRecord:
    """A finished tuning, as ``tuning.json`` keeps it (to be reused by a resumed comparison)."""

    identity: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, identity: dict[str, Any], tuning: Tuning) -> TuningRecord:
        return cls(identity, {name: {"cell": t.cell, "settings": t.settings, "cut": t.cut, "what": t.what,
                                     "metrics": t.metrics, "table": t.table, "seconds": t.seconds}
                              for name, t in tuning.methods.items()}, tuning.frames)

    def tuning(self) -> Tuning:
        return Tuning({name: Tuned(name=name, **entry) for name, entry in self.results.items()}, self.frames)
