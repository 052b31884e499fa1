"""Run several hit finders on the same frames, timing each, and collect per-frame results.

Every method is a :class:`~sfx_cnnhit.finders.base.HitFinder` (CNN, DIALS, dispersion, peakfinder8
alike). Frames are streamed in batches (memory is bounded by the batch size); every method
classifies every batch, and the time spent in each method's ``classify`` is summed separately, so
frames/s of all methods come from the same run on the same frames. The order in which the methods
see a batch rotates from batch to batch, so no method always gets the data freshly read into cache.
With a ``state_dir``, every batch's results and timings are committed as they come
(:mod:`.resume`), so a killed comparison continues after its last committed batch and ends with the
per-frame results of an uninterrupted one (timings summed over all its runs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.labels import UNKNOWN, FrameLabels
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.types import FrameBatch

from .methods import Method
from .resume import BatchResult, CommittedBatches


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
        return np.not_equal(self.true_hit, UNKNOWN)

    def frames_per_second(self, name: str) -> float:
        """Frames classified per second of the method's ``classify`` time (NaN with no time measured)."""
        seconds = self.seconds[name]
        return self.n_frames / seconds if seconds > 0 else float("nan")


def _labels_of(labels: FrameLabels | None, batch: FrameBatch) -> tuple[list[str], NDArray[np.int8]]:
    """The labels of ``batch`` as written (``""`` if none) and as hit (1) / miss (0) / no label (-1)."""
    n = len(batch.event_ids)
    return labels.for_batch(batch) if labels is not None else ([""] * n, np.full(n, UNKNOWN, np.int8))


def _frames_of(record: BatchResult) -> FrameBatch:
    """The frame identities of a committed batch, without pixels (enough to look its labels up again)."""
    n = len(record.event_ids)
    return FrameBatch(
        data=np.empty((n, 0, 0), np.float32), mask=np.empty((n, 0, 0), bool), event_ids=record.event_ids,
        source_file=record.source_file, source_index=np.asarray(record.source_index, np.int64),
        global_index=np.asarray(record.global_index, np.int64),
    )


def _classify(methods: Sequence[Method], batch: FrameBatch, shift: int, read_seconds: float) -> BatchResult:
    """Every method's results on ``batch``, the methods taking turns from ``methods[shift]``."""
    n = len(batch)
    record = BatchResult(
        event_ids=list(batch.event_ids), source_file=batch.source_file, source_index=batch.source_index.tolist(),
        global_index=batch.global_index.tolist(), scores={}, hits={}, n_peaks={}, seconds={}, inner_seconds={},
        read_seconds=read_seconds,
    )
    for method in [*methods[shift:], *methods[:shift]]:
        inner = method.inner_seconds
        inner_start = 0.0 if inner is None else inner()
        start = time.perf_counter()
        result = method.finder.classify(batch.data, batch.mask)
        record.seconds[method.name] = time.perf_counter() - start
        if inner is not None:
            record.inner_seconds[method.name] = inner() - inner_start
        scores = np.asarray(result.scores, dtype=np.float64).reshape(-1)
        hits = np.asarray(result.hits, dtype=bool).reshape(-1)
        if scores.size != n or hits.size != n or (result.peaks is not None and len(result.peaks) != n):
            raise ValueError(f"method {method.name!r} returned results for {scores.size} frames, not {n}")
        record.scores[method.name] = scores.tolist()
        record.hits[method.name] = hits.tolist()
        record.n_peaks[method.name] = [0] * n if result.peaks is None else [p.num_peaks for p in result.peaks]
    return record


def comparison_identity(
    source: FrameSource, methods: Sequence[Method], labels: FrameLabels | None, batch_size: int, n_frames: int
) -> dict[str, Any]:
    """What a resumed comparison must share with the one it continues (see :class:`CommittedBatches`)."""
    return {
        "inputs": source.input_paths,
        "n_frames": n_frames,
        "batch_size": batch_size,
        "labels": None if labels is None else labels.description,
        "methods": [{"name": m.name, "description": m.description, "settings": m.settings} for m in methods],
    }


def run_comparison(
    source: FrameSource,
    methods: Sequence[Method],
    *,
    labels: FrameLabels | None = None,
    batch_size: int = 64,
    max_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
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
        state_dir: commit every batch's results to this folder (see
            :class:`~sfx_cnnhit.comparisons.resume.CommittedBatches`) and continue after the batches
            it already holds; None: keep them in memory only.
        restart: discard a ``state_dir`` that holds another comparison instead of refusing it.

    Raises:
        ConfigError: no methods, or two with the same name.
        OutputError: ``state_dir`` holds another comparison (without ``restart``) or cannot be written.
    """
    names = [m.name for m in methods]
    if not names:
        raise ConfigError("compare: no methods to compare")
    if len(set(names)) != len(names):
        raise ConfigError(f"compare: method names must differ, got {', '.join(names)}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"compare: max_frames must be >= 1, got {max_frames}")
    total = source.n_frames if max_frames is None else min(source.n_frames, max_frames)
    store = None
    if state_dir is not None:
        identity = comparison_identity(source, methods, labels, batch_size, total)
        store = CommittedBatches(state_dir, identity, restart=restart)
    records = [] if store is None else list(store.batches)
    labelled = [_labels_of(labels, _frames_of(record)) for record in records]  # labels see every frame
    done = sum(len(record.event_ids) for record in records)
    if progress is not None and done:
        progress(done, total)
    tick = time.perf_counter()
    for batch in source.batches(batch_size, start=done, stop=total):
        read_seconds = time.perf_counter() - tick
        labelled.append(_labels_of(labels, batch))
        record = _classify(methods, batch, len(records) % len(methods), read_seconds)
        if store is not None:
            store.commit(record)
        records.append(record)
        done += len(batch)
        if progress is not None:
            progress(done, total)
        tick = time.perf_counter()
    return ComparisonResult(
        methods=list(methods),
        event_ids=[e for record in records for e in record.event_ids],
        source_files=[record.source_file for record in records for _ in record.event_ids],
        source_index=_join([record.source_index for record in records], np.int64),
        global_index=_join([record.global_index for record in records], np.int64),
        label=[text for raw, _ in labelled for text in raw],
        true_hit=_join([true_hit for _, true_hit in labelled], np.int8),
        scores={n: _join([record.scores[n] for record in records], np.float64) for n in names},
        hits={n: _join([record.hits[n] for record in records], np.bool_) for n in names},
        n_peaks={n: _join([record.n_peaks[n] for record in records], np.int64) for n in names},
        seconds={n: sum(record.seconds[n] for record in records) for n in names},
        inner_seconds={
            m.name: sum(record.inner_seconds[m.name] for record in records)
            for m in methods if m.inner_seconds is not None
        },
        read_seconds=sum(record.read_seconds for record in records),
        inputs=source.input_paths,
        labels=labels,
    )


def _join(parts: Sequence[Sequence[Any] | NDArray[Any]], dtype: type) -> NDArray[Any]:
    """Per-batch values as one ``(n,)`` array of ``dtype``."""
    return np.concatenate([np.asarray(p, dtype) for p in parts]) if parts else np.zeros(0, dtype)
