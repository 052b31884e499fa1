"""Run several hit finders on the same frames, timing each, and collect per-frame results.

Every method is a :class:`~sfx_cnnhit.finders.base.HitFinder` (CNN, DIALS, dispersion, peakfinder8
alike). Frames are streamed in batches (memory is bounded by the batch size); every method
classifies every batch, and the time spent in each method's ``classify`` is summed separately, so
frames/s of all methods come from the same run on the same frames. The order in which the methods
see a batch rotates from batch to batch, so no method always gets the data freshly read into cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitFinder
from sfx_cnnhit.io.labels import UNKNOWN, FrameLabels
from sfx_cnnhit.io.sources import FrameSource

HeatMaps = Callable[[NDArray[np.float32], NDArray[np.bool_]], tuple[NDArray[np.float32], NDArray[np.float32]]]


@dataclass
class Method:
    """A named hit finder taking part in a comparison.

    Attributes:
        name: short name used in tables and file columns (``dials``, ``peakfinder8``, ``cnn``).
        finder: the hit finder.
        score_name: what its score is (``n_spots``, ``n_peaks``, ``p_hit``).
        description: one line for the report (``real DIALS 3.12, dispersion, n_spots >= 14``).
        settings: JSON-able parameters, recorded in the report.
        notes: caveats for the report (a fallback, what its timing includes).
        inner_seconds: returns the seconds the finder spent in its own computation so far, when
            ``classify`` also pays for something else (process start, hand-over); None otherwise.
    """

    name: str
    finder: HitFinder
    score_name: str = "n_peaks"
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inner_seconds: Callable[[], float] | None = None

    @property
    def heatmaps(self) -> HeatMaps | None:
        """The finder's ``heatmaps(frames, masks) -> (maps (k, ss, fs) in [0, 1], raw_max (k,))``, if any."""
        maker = getattr(self.finder, "heatmaps", None)
        return maker if callable(maker) else None


@dataclass
class ComparisonResult:
    """Per-frame results of every method, in reading order.

    Attributes:
        methods: the methods, in the order given.
        event_ids, source_files: per frame.
        source_index: ``(n,)`` index of each frame in its file; global_index: ``(n,)`` in the source.
        label: per frame, the label as written in the label source (``""`` if none).
        true_hit: ``(n,)`` int8, 1 = hit, 0 = miss, -1 = no label.
        scores, hits, n_peaks: per method name, ``(n,)`` float64 / bool / int64.
        seconds: per method name, seconds spent in its ``classify`` calls.
        inner_seconds: per method name, seconds spent in its own computation, for methods that
            report it (see :attr:`Method.inner_seconds`).
        read_seconds: seconds spent reading frames.
        inputs: the input files.
        labels: where the labels came from, or None.
    """

    methods: list[Method]
    event_ids: list[str]
    source_files: list[str]
    source_index: NDArray[np.int64]
    global_index: NDArray[np.int64]
    label: list[str]
    true_hit: NDArray[np.int8]
    scores: dict[str, NDArray[np.float64]]
    hits: dict[str, NDArray[np.bool_]]
    n_peaks: dict[str, NDArray[np.int64]]
    seconds: dict[str, float]
    inner_seconds: dict[str, float]
    read_seconds: float
    inputs: list[str]
    labels: FrameLabels | None = None

    @property
    def n_frames(self) -> int:
        return len(self.event_ids)

    @property
    def labelled(self) -> NDArray[np.bool_]:
        """``(n,)`` True where the frame has a label."""
        return self.true_hit != UNKNOWN

    def frames_per_second(self, name: str) -> float:
        """Frames classified per second of the method's ``classify`` time (NaN with no time measured)."""
        seconds = self.seconds[name]
        return self.n_frames / seconds if seconds > 0 else float("nan")


class _Columns:
    """Per-frame values gathered batch by batch, joined at the end."""

    def __init__(self, names: Sequence[str]) -> None:
        self.meta: dict[str, list[Any]] = {k: [] for k in ("event_ids", "source_files", "label")}
        self.arrays: dict[str, list[NDArray[Any]]] = {k: [] for k in ("source_index", "global_index", "true_hit")}
        self.per_method: dict[str, dict[str, list[NDArray[Any]]]] = {
            k: {n: [] for n in names} for k in ("scores", "hits", "n_peaks")
        }

    @staticmethod
    def join(parts: list[NDArray[Any]], dtype: type) -> NDArray[Any]:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def run_comparison(
    source: FrameSource,
    methods: Sequence[Method],
    *,
    labels: FrameLabels | None = None,
    batch_size: int = 64,
    max_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ComparisonResult:
    """Classify every frame of ``source`` with every method.

    Args:
        source: the frames (see :func:`sfx_cnnhit.io.sources.open_frames`).
        methods: the methods, with distinct names.
        labels: true labels (see :func:`sfx_cnnhit.io.labels.load_labels`), or None.
        batch_size: frames per batch (memory is bounded by it; the real DIALS backend starts one
            process per batch).
        max_frames: compare only the first this many frames.
        progress: called with ``(frames done, total frames)`` after each batch.

    Raises:
        ConfigError: no methods, or two with the same name.
    """
    names = [m.name for m in methods]
    if not names:
        raise ConfigError("compare: no methods to compare")
    if len(set(names)) != len(names):
        raise ConfigError(f"compare: method names must differ, got {', '.join(names)}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"compare: max_frames must be >= 1, got {max_frames}")
    total = source.n_frames if max_frames is None else min(source.n_frames, max_frames)
    cols = _Columns(names)
    seconds = dict.fromkeys(names, 0.0)
    inner_start = {m.name: m.inner_seconds() for m in methods if m.inner_seconds is not None}
    read_seconds, done = 0.0, 0
    batches = source.batches(batch_size, stop=total)
    tick = time.perf_counter()
    for k, batch in enumerate(batches):
        read_seconds += time.perf_counter() - tick
        n = len(batch)
        raw, true_hit = labels.for_batch(batch) if labels is not None else ([""] * n, np.full(n, UNKNOWN, np.int8))
        shift = k % len(methods)
        for method in [*methods[shift:], *methods[:shift]]:
            start = time.perf_counter()
            result = method.finder.classify(batch.data, batch.mask)
            seconds[method.name] += time.perf_counter() - start
            scores = np.asarray(result.scores, dtype=np.float64).reshape(-1)
            hits = np.asarray(result.hits, dtype=bool).reshape(-1)
            if scores.size != n or hits.size != n or (result.peaks is not None and len(result.peaks) != n):
                raise ValueError(f"method {method.name!r} returned results for {scores.size} frames, not {n}")
            n_peaks = [0] * n if result.peaks is None else [p.num_peaks for p in result.peaks]
            cols.per_method["scores"][method.name].append(scores)
            cols.per_method["hits"][method.name].append(hits)
            cols.per_method["n_peaks"][method.name].append(np.asarray(n_peaks, np.int64))
        cols.meta["event_ids"].extend(batch.event_ids)
        cols.meta["source_files"].extend([batch.source_file] * n)
        cols.meta["label"].extend(raw)
        cols.arrays["source_index"].append(batch.source_index)
        cols.arrays["global_index"].append(batch.global_index)
        cols.arrays["true_hit"].append(true_hit)
        done += n
        if progress is not None:
            progress(done, total)
        tick = time.perf_counter()
    per = cols.per_method
    return ComparisonResult(
        methods=list(methods),
        event_ids=cols.meta["event_ids"],
        source_files=cols.meta["source_files"],
        source_index=cols.join(cols.arrays["source_index"], np.int64),
        global_index=cols.join(cols.arrays["global_index"], np.int64),
        label=cols.meta["label"],
        true_hit=cols.join(cols.arrays["true_hit"], np.int8),
        scores={n: cols.join(per["scores"][n], np.float64) for n in names},
        hits={n: cols.join(per["hits"][n], np.bool_) for n in names},
        n_peaks={n: cols.join(per["n_peaks"][n], np.int64) for n in names},
        seconds=seconds,
        inner_seconds={
            m.name: m.inner_seconds() - inner_start[m.name] for m in methods if m.inner_seconds is not None
        },
        read_seconds=read_seconds,
        inputs=source.input_paths,
        labels=labels,
    )
