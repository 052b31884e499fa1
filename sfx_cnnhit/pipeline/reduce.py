"""The reduction pipeline: stream frames through one hit finder, keep the hits, explain them.

``reduce_run`` serves every method alike (``sfx-cnnhit reduce`` with the CNN, ``sfx-cnnhit
peakfinder8`` with peakfinder8). It writes into one output folder:

==================  ====================================================================
``hits.cxi``        the hits in the reduced-CXI layout (frames, peak lists, scores, heat maps)
``frames.csv``      one row per frame read: event id, source file and index, score, hit, n_peaks, flag
``hits.geom``       CrystFEL geometry of ``hits.cxi`` (``dim0 = %``, ``peak_list_type = cxi``)
``<map>.geom``      the same panels with ``data =`` the heat-map dataset (one per explainer)
``hits.lst``        ``hits.cxi //N`` events for ``indexamajig -i``
``summary.json``    frames read, hits, hit rate, reduction factor, frames/s, settings, unjudged frames, hot pixels
``index_hits.sh``   the ``indexamajig`` command that indexes the hits (:mod:`sfx_cnnhit.io.crystfel_recipe`)
==================  ====================================================================

Every output is written as ``*.inprogress`` and renamed when the run completes. The CXI file and
the CSV table are committed together (at least every :data:`COMMIT_SECONDS`, or when the batches
since the last commit hold :data:`COMMIT_BYTES` of hit frames and maps), so a killed run resumes
where it last committed when it is started again with the same settings, losing and duplicating
nothing.

Three threads overlap: a reader prefetches the next batch (``prefetch``), the caller's thread
classifies and explains the current one, and a writer thread encodes (gzip in a thread pool) and
commits the previous one; memory holds a fixed number of batches of at most :data:`BATCH_BYTES`.
A run can take one share of the frames (``rank`` of ``n_ranks``: global frames ``rank, rank +
n_ranks, ...``), which is how :mod:`sfx_cnnhit.pipeline.mpi` spreads a run over MPI processes.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, OutputError
from sfx_cnnhit.finders.base import HitFinder
from sfx_cnnhit.io.atomic import (
    check_output_path,
    finalize,
    inprogress_path,
    make_output_folder,
    write_text_atomic,
)
from sfx_cnnhit.io.crystfel_recipe import RECIPE_NAME, write_recipe
from sfx_cnnhit.io.cxi import CXIWriter, write_lst
from sfx_cnnhit.io.prefetch import prefetched
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.types import FrameBatch

CXI_NAME = "hits.cxi"
CSV_NAME = "frames.csv"
GEOMETRY_NAME = "hits.geom"
LST_NAME = "hits.lst"
SUMMARY_NAME = "summary.json"
log = logging.getLogger(__name__)
CSV_COLUMNS = ("event_id", "source_file", "source_index", "score", "hit", "n_peaks", "flag")
SCORE_DATASET = "hit_score"
#: heat maps are stored as float16 (values in [0, 1]: absolute error at most 2**-12)
MAP_DTYPE = np.float16
#: frames per batch at most this many float32 bytes (32 MiB: 8 frames of 1 Mpx), bounding memory
BATCH_BYTES = 32 * 2**20
#: a commit (one segment of the in-progress CXI file) at least this often; a kill costs at most this much work
COMMIT_SECONDS = 2.0
#: ... or when the hit frames and maps appended since the last commit exceed this many (uncompressed) bytes
COMMIT_BYTES = 4 * BATCH_BYTES
#: the stages of ``ReduceSummary.stage_seconds``: ``classify`` is the finder's whole call, which a finder
#: with ``stage_seconds`` (the CNN) splits into preprocess, network and peakfinder8 (on hits)
STAGES = ("read", "classify", "preprocess", "network", "peakfinder8", "maps", "write")


class RunOptions(TypedDict, total=False):
    """How a run streams, commits and shares its frames: the keywords of :func:`reduce_run` that the
    jobs built on it (:func:`~sfx_cnnhit.pipeline.cnn_reduce.cnn_reduce`, ``finder_reduce``) pass
    through unchanged; see :func:`reduce_run` for each."""

    compression: str
    overwrite: bool
    progress: Callable[[int, int], None] | None
    prefetch: int
    rank: int
    n_ranks: int
    skip_bad_frames: bool
    commit_seconds: float


class HeatMapExplainer(Protocol):
    """Heat maps for hit frames, on the detector's own pixel grid.

    ``dataset`` names the extra CXI dataset (``gradcam`` -> ``/entry_1/result_1/gradcam``); the raw
    scale of each map goes to ``<dataset>_max``.
    """

    dataset: str

    def __call__(
        self, data: NDArray[np.float32], mask: NDArray[np.bool_], rows: NDArray[np.intp]
    ) -> tuple[NDArray[np.floating], NDArray[np.float32]]:
        """Maps for ``(k, ss, fs)`` frames (``rows`` of the batch the finder classified last, so that work
        it did on them can be reused): ``(k, ss, fs)`` in [0, 1] (best already :data:`MAP_DTYPE`, as
        they are stored) and ``(k,)`` raw maxima."""
        ...


@dataclass
class ReduceSummary:
    """What a reduction did (also written as ``summary.json``)."""

    method: str
    frames_read: int
    hits: int
    hit_rate: float
    data_reduction_factor: float | None
    frames_per_second: float
    elapsed_s: float
    outputs: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)
    #: frames the method could not judge, by flag (see :mod:`sfx_cnnhit.models.guards`); listed in the CSV
    unjudged_frames: dict[str, int] = field(default_factory=dict)
    #: frames that could not be read and were skipped: event_id, source_file, source_index, global_index, reason
    failed_frames: list[dict[str, Any]] = field(default_factory=list)
    #: hot-pixel maps made in this process, by window: first frame, frames sampled, hot pixels (-1: no map)
    hot_pixel_windows: dict[int, dict[str, int]] = field(default_factory=dict)
    #: busy seconds of each stage (:data:`STAGES`) in this process; stages overlap in threads, so the
    #: sum may exceed ``elapsed_s``
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_geometry(source: FrameSource) -> DetectorGeometry:
    """The geometry to write when the user gave none: the slab as a flat detector of its ASICs."""
    if source.geometry is not None:
        return source.geometry
    layout = source.layout_info
    asic = (layout["asic_ny"], layout["asic_nx"]) if layout else None
    return DetectorGeometry.simple(source.frame_shape, asic_shape=asic)


def output_paths(outdir: Path, explainer_names: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every output file of a run in ``outdir``, by role."""
    paths = {
        "cxi": outdir / CXI_NAME,
        "csv": outdir / CSV_NAME,
        "geometry": outdir / GEOMETRY_NAME,
        "lst": outdir / LST_NAME,
        "summary": outdir / SUMMARY_NAME,
    }
    paths.update({f"geometry_{name}": outdir / f"{name}.geom" for name in explainer_names})
    return paths


class _FrameTable:
    """The per-frame CSV, kept in step with the CXI file's commits so that a resume can cut it back."""

    def __init__(self, path: Path, *, resume_rows: int | None) -> None:
        self.path = path
        self.tmp = inprogress_path(path)
        if resume_rows is None:
            self._fh = self.tmp.open("w", newline="", encoding="utf-8")
            csv.writer(self._fh).writerow(CSV_COLUMNS)
        else:
            self._fh = self._truncate(resume_rows)
        self._writer = csv.writer(self._fh)

    def _truncate(self, rows: int) -> Any:
        if not self.tmp.exists():
            raise OutputError(f"{self.tmp}: missing; cannot resume (remove the output folder to start afresh)")
        with self.tmp.open("rb") as fh:  # bytes: a text file's tell() is no offset to truncate or write at
            for _ in range(rows + 1):  # header + committed rows
                if not fh.readline():
                    raise OutputError(f"{self.tmp}: has fewer rows than the CXI file committed; cannot resume")
            end = fh.tell()
        os.truncate(self.tmp, end)
        return self.tmp.open("a", newline="", encoding="utf-8")

    def append(self, rows: list[tuple[Any, ...]]) -> None:
        self._writer.writerows(rows)

    def sync(self) -> None:
        """Put the rows on disk (before the CXI commit that counts them)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finalize(self) -> None:
        self._fh.close()
        finalize(self.path)

    def close(self) -> None:
        self._fh.close()


def batch_frames(batch_size: int, frame_shape: tuple[int, ...]) -> int:
    """Frames per batch: ``batch_size``, at most :data:`BATCH_BYTES` of float32 frames, at least one."""
    return max(1, min(batch_size, BATCH_BYTES // (4 * int(np.prod(frame_shape)))))


def _timed(items: Iterable[Any], seconds: dict[str, float], stage: str) -> Iterator[Any]:
    """``items``, adding the time each one takes to produce to ``seconds[stage]``; closes ``items``."""
    it = iter(items)
    # Typed as a generator for contextlib.closing: only its close() is used.
    with (
        contextlib.closing(cast("Generator[Any, None, None]", it)) if hasattr(it, "close") else contextlib.nullcontext()
    ):
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t0
            yield item


class _WriteBehind:
    """Runs jobs (write and commit one batch) in order in one writer thread while the caller computes.

    At most ``depth`` jobs wait. The first error of a job is raised by the next :meth:`submit` or by
    :meth:`close`; the jobs after it are dropped (nothing is committed after a failed commit).
    """

    def __init__(self, seconds: dict[str, float], depth: int = 1) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._seconds = seconds
        self._thread = threading.Thread(target=self._run, name="sfx-cnnhit-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                t0 = time.perf_counter()
                try:
                    job()
                except BaseException as err:  # raised in the caller's thread
                    self._error = err
                self._seconds["write"] = self._seconds.get("write", 0.0) + time.perf_counter() - t0

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._jobs.put(job)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every submitted job has run (or was dropped); raise the first error."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def _batch_rows(
    batch: FrameBatch, scores: NDArray[np.float64], hits: NDArray[np.bool_], n_peaks: list[int], flags: list[str]
) -> list[tuple[Any, ...]]:
    return [
        (batch.event_ids[i], batch.source_file, int(batch.source_index[i]), f"{scores[i]:.6g}", int(hits[i]), n,
         flags[i])
        for i, n in enumerate(n_peaks)
    ]


def _failed_rows(batch: FrameBatch) -> list[tuple[Any, ...]]:
    """CSV rows of the frames of a batch's slot that could not be read (no score, flag ``failed: ...``)."""
    return [(f.event_id, f.source_file, f.source_index, "", 0, 0, f"failed: {f.reason}") for f in batch.failed]


@dataclass
class _Tally:
    """A run's running totals, as committed with the CXI file (restored from its last commit on resume)."""

    frames_done: int
    hits: int
    elapsed_s: float
    unjudged: dict[str, int]
    failed: list[dict[str, Any]]

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> _Tally:
        """The totals of a commit ``state`` (:meth:`CXIWriter.state`; empty for a new run: all zero)."""
        return cls(
            frames_done=int(state.get("frames_done", 0)),
            hits=int(state.get("hits", 0)),
            elapsed_s=float(state.get("elapsed_s", 0.0)),
            unjudged=dict(state.get("unjudged_frames", {})),
            failed=list(state.get("failed_frames", [])),
        )

    def commit_state(self, run_settings: dict[str, Any]) -> dict[str, Any]:
        """The state committed after the batches counted so far (copies: later batches do not change it)."""
        return {"settings": run_settings, "frames_done": self.frames_done, "hits": self.hits,
                "unjudged_frames": dict(self.unjudged), "failed_frames": list(self.failed)}


@dataclass
class _Run:
    """An opened run: its outputs, settings, the share of frames this process reads, and its totals."""

    outdir: Path
    paths: dict[str, Path]
    names: tuple[str, ...]  # the explainers' datasets
    settings: dict[str, Any]
    rank: int
    n_ranks: int
    n_mine: int  # frames of this rank's share
    writer: CXIWriter
    table: _FrameTable
    tally: _Tally


class _Committer:
    """Writes each batch's hits and rows (in the writer thread) and commits them together when enough has
    gathered (``commit_seconds``, :data:`COMMIT_BYTES`)."""

    def __init__(
        self, run: _Run, progress: Callable[[int, int], None] | None, commit_seconds: float, t0: float
    ) -> None:
        self._run = run
        self._progress = progress
        self._commit_seconds = commit_seconds
        self._elapsed = run.tally.elapsed_s  # seconds of the earlier processes of a resumed run
        self._t0 = t0  # perf_counter() when this process started on the batches
        # appended, not yet committed; the first batch is committed at once (the folder then records its settings)
        self._bytes = 0
        self._since = -math.inf
        self._state: dict[str, Any] | None = None

    def __call__(
        self, hits: dict[str, Any] | None, rows: list[tuple[Any, ...]], state: dict[str, Any] | None
    ) -> None:
        """Write one batch's hits and rows (runs in the writer thread); commit everything appended with
        the batch's ``state`` when enough has gathered (:data:`COMMIT_SECONDS`, :data:`COMMIT_BYTES`).
        ``hits`` and ``rows`` empty and ``state`` None: commit what is pending (the end of the run)."""
        writer, table = self._run.writer, self._run.table
        if hits is not None:
            writer.append(**hits)
            self._bytes += hits["data"].nbytes + sum(np.asarray(v).nbytes for v in hits["extras"].values())
        table.append(rows)
        if state is not None:
            self._state = state
            if self._progress:
                self._progress(state["frames_done"], self._run.n_mine)
        now = time.perf_counter()
        if self._state is not None and (
            state is None or self._bytes >= COMMIT_BYTES or now - self._since >= self._commit_seconds
        ):
            table.sync()
            writer.commit({**self._state, "elapsed_s": self._elapsed + now - self._t0})
            self._bytes, self._since, self._state = 0, now, None


def reduce_run(
    source: FrameSource,
    finder: HitFinder,
    outdir: str | os.PathLike[str],
    *,
    method: str,
    settings: Mapping[str, Any] | None = None,
    explainers: tuple[HeatMapExplainer, ...] = (),
    batch_size: int = 64,
    max_peaks: int = 2048,
    compression: str = "gzip",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    prefetch: int = 1,
    rank: int = 0,
    n_ranks: int = 1,
    skip_bad_frames: bool = True,
    commit_seconds: float = COMMIT_SECONDS,
) -> ReduceSummary:
    """Classify every frame of ``source`` with ``finder`` and write the hits to ``outdir``.

    Args:
        source: the frames (see :func:`sfx_cnnhit.io.sources.open_frames`).
        finder: any :class:`~sfx_cnnhit.finders.base.HitFinder`; its ``classify`` scores and peaks
            are written as they are (a finder that localises no peaks writes ``nPeaks = 0``).
        outdir: output folder (created if missing).
        method: the method's name, recorded in the summary.
        settings: JSON-able description of everything that changes the result (model, threshold,
            finder parameters); a resumed run must have the same settings and inputs.
        explainers: heat-map makers run on the hits; each adds ``/entry_1/result_1/<dataset>`` and a
            geometry file ``<dataset>.geom`` that shows it in CrystFEL's viewer.
        batch_size: frames per batch (memory is bounded by it), at most :data:`BATCH_BYTES` of frames.
        max_peaks: columns of the CXI peak arrays.
        compression: compression of the CXI datasets (``gzip`` is readable everywhere).
        overwrite: replace a completed run in ``outdir`` instead of refusing.
        progress: called with ``(frames done, total frames)`` after each batch (this rank's frames).
        prefetch: batches a reader thread reads ahead (0: read in this thread); see :func:`prefetched`.
        rank, n_ranks: process only global frames ``rank, rank + n_ranks, ...`` (one MPI rank's share);
            the summary and outputs then cover those frames, and a resume needs the same partition.
        skip_bad_frames: skip frames that cannot be read (corrupt chunk, short read), listing them in
            the summary's ``failed_frames`` and as CSV rows flagged ``failed: <reason>``; False stops
            at the first one (``--strict``).
        commit_seconds: commit the outputs at least this often (0: after every batch), or sooner
            when :data:`COMMIT_BYTES` of hits gathered; a killed run redoes what it had not committed.

    Raises:
        OutputError: if ``outdir`` holds a completed run (without ``overwrite``) or a partial run with
            other settings, cannot be created, or an output would replace an input (checked before any
            frame is read).
        ConfigError: if ``rank`` is not in ``0 .. n_ranks - 1``.
    """
    run = _open_run(
        source, outdir, method=method, settings=settings, explainers=explainers, overwrite=overwrite, rank=rank,
        n_ranks=n_ranks, max_peaks=max_peaks, compression=compression,
    )
    if progress:
        progress(run.tally.frames_done, run.n_mine)
    seconds: dict[str, float] = {}
    finder_seconds: dict[str, float] = getattr(finder, "stage_seconds", {})
    finder_before = dict(finder_seconds)
    run.tally.elapsed_s += _stream_batches(
        run, source, finder, explainers, seconds, batch_size=batch_size, prefetch=prefetch,
        skip_bad_frames=skip_bad_frames, progress=progress, commit_seconds=commit_seconds,
    )
    run.writer.finalize()
    run.table.finalize()
    _write_companions(run, source.input_paths)
    summary = _summary(run, method, source, _stage_seconds(seconds, finder_seconds, finder_before))
    write_text_atomic(run.paths["summary"], json.dumps(summary.to_dict(), indent=2) + "\n", protect=source.input_paths)
    return summary


def _run_settings(
    source: FrameSource, method: str, settings: Mapping[str, Any] | None, rank: int, n_ranks: int
) -> dict[str, Any]:
    """Everything a resumed run must share with the partial one: method, inputs, hot-pixel rule, the
    caller's ``settings`` and the partition (with more than one rank)."""
    run_settings = {
        "method": method,
        "inputs": [str(Path(p).resolve()) for p in source.input_paths],
        "n_frames": source.n_frames,
        "hot_pixel_map": asdict(source.hot_pixels) if source.hot_pixels is not None else None,
        **dict(settings or {}),
    }
    if n_ranks > 1:
        run_settings["partition"] = {"rank": rank, "n_ranks": n_ranks}
    return run_settings


def _open_writer(
    source: FrameSource, path: Path, names: tuple[str, ...], *, max_peaks: int, compression: str
) -> CXIWriter:
    """The writer of ``hits.cxi`` (resuming its partial file): frames, peaks, the hit score and per explainer
    ``names`` a ``(ss, fs)`` :data:`MAP_DTYPE` heat map and its raw maximum."""
    geometry = default_geometry(source)
    frame_shape = source.frame_shape
    extras: dict[str, tuple[tuple[int, ...], Any]] = {SCORE_DATASET: ((), np.float32)}
    for name in names:
        extras[name] = (frame_shape, MAP_DTYPE)
        extras[f"{name}_max"] = ((), np.float32)
    return CXIWriter(
        path,
        frame_shape=frame_shape,
        max_peaks=max_peaks,
        compression=compression,
        extra_datasets=extras,
        protect=source.input_paths,
        geometry=geometry,
        resume=True,
    )


def _open_run(
    source: FrameSource,
    outdir: str | os.PathLike[str],
    *,
    method: str,
    settings: Mapping[str, Any] | None,
    explainers: tuple[HeatMapExplainer, ...],
    overwrite: bool,
    rank: int,
    n_ranks: int,
    max_peaks: int,
    compression: str,
) -> _Run:
    """Check the partition and the outputs, then open ``hits.cxi`` and ``frames.csv``: new, or resumed
    where a partial run with the same settings last committed (see :func:`reduce_run` for the errors)."""
    if not 0 <= rank < n_ranks:
        raise ConfigError(f"rank must lie in 0 .. n_ranks - 1, got rank {rank} of {n_ranks}")
    outdir = make_output_folder(outdir)
    names = tuple(e.dataset for e in explainers)
    paths = output_paths(outdir, names)
    for path in [*paths.values(), outdir / RECIPE_NAME]:  # refuse now an input the run would end by replacing
        check_output_path(path, protect=source.input_paths)
    run_settings = _run_settings(source, method, settings, rank, n_ranks)
    n_mine = len(range(rank, source.n_frames, n_ranks))
    if paths["summary"].exists():
        if not overwrite:
            raise OutputError(f"{outdir}: already holds a completed run ({SUMMARY_NAME}); choose another folder")
        for path in paths.values():
            path.unlink(missing_ok=True)

    writer = _open_writer(source, paths["cxi"], names, max_peaks=max_peaks, compression=compression)
    state = writer.state
    resumed = bool(state)
    if resumed and state.get("settings") != json.loads(json.dumps(run_settings)):
        writer.close()
        raise OutputError(
            f"{outdir}: holds a partial run with other inputs or settings; use another folder or remove it"
        )
    tally = _Tally.from_state(state)
    try:
        table = _FrameTable(paths["csv"], resume_rows=tally.frames_done if resumed else None)
    except BaseException:
        writer.close()
        raise
    return _Run(outdir, paths, names, run_settings, rank, n_ranks, n_mine, writer, table, tally)


def _stream_batches(
    run: _Run,
    source: FrameSource,
    finder: HitFinder,
    explainers: tuple[HeatMapExplainer, ...],
    seconds: dict[str, float],
    *,
    batch_size: int,
    prefetch: int,
    skip_bad_frames: bool,
    progress: Callable[[int, int], None] | None,
    commit_seconds: float,
) -> float:
    """Read, judge and commit this rank's frames from where ``run`` stands; returns the seconds it took.

    Three threads overlap (see the module docstring). On any error the reader is stopped, the batch
    being committed finishes, both outputs are closed (not finalized) and the error is raised.
    """
    batches = source.batches(
        batch_frames(batch_size, source.frame_shape), start=run.rank + run.tally.frames_done * run.n_ranks,
        stride=run.n_ranks, skip_bad=skip_bad_frames,
    )
    stream = prefetched(_timed(batches, seconds, "read"), prefetch)
    writes = _WriteBehind(seconds)
    t0 = time.perf_counter()
    commit = _Committer(run, progress, commit_seconds, t0)
    try:
        for batch in stream:
            hits_out, rows = _judge_batch(batch, finder, explainers, source.frame_shape, seconds, run.tally)
            writes.submit(functools.partial(commit, hits_out, rows, run.tally.commit_state(run.settings)))
        writes.submit(functools.partial(commit, None, [], None))
        writes.close()
    except BaseException:
        stream.close()  # stops the reader thread and closes the input files
        writes.close(raise_error=False)  # lets the batch being committed finish
        run.table.close()
        run.writer.close()
        raise
    return time.perf_counter() - t0


def _judge_batch(
    batch: FrameBatch,
    finder: HitFinder,
    explainers: tuple[HeatMapExplainer, ...],
    frame_shape: tuple[int, ...],
    seconds: dict[str, float],
    tally: _Tally,
) -> tuple[dict[str, Any] | None, list[tuple[Any, ...]]]:
    """Classify one batch and make its hits' heat maps, counting it in ``tally``: the hits to append
    (:meth:`CXIWriter.append` arguments; None when no frame of the batch could be read) and the CSV
    rows of its frames, the unreadable ones last."""
    for bad in batch.failed:
        tally.failed.append(bad.to_dict())
        log.warning("skipped unreadable frame %s (%s //%d): %s", bad.event_id, bad.source_file,
                    bad.source_index, bad.reason)
    rows: list[tuple[Any, ...]] = []
    hits_out: dict[str, Any] | None = None
    if len(batch):  # else every frame of this slot failed to read
        c0 = time.perf_counter()
        result = finder.classify(batch.data, batch.mask)
        c1 = time.perf_counter()
        hits = np.asarray(result.hits, bool)
        idx = np.flatnonzero(hits)
        peaks = result.peaks
        n_peaks = [p.num_peaks for p in peaks] if peaks is not None else [0] * len(batch)
        hit_extras: dict[str, Any] = {SCORE_DATASET: np.asarray(result.scores, np.float32)[idx]}
        hit_data = batch.data[idx]
        hit_extras.update(_heat_maps(explainers, hit_data, batch.mask, idx, frame_shape))
        seconds["classify"] = seconds.get("classify", 0.0) + c1 - c0
        seconds["maps"] = seconds.get("maps", 0.0) + time.perf_counter() - c1
        hits_out = {
            "data": hit_data,
            "event_ids": [batch.event_ids[i] for i in idx],
            "source_files": batch.source_file,
            "source_indices": batch.source_index[idx],
            "peaks": None if peaks is None else [peaks[i] for i in idx],
            "extras": hit_extras,
            "metadata": {key: np.asarray(value)[idx] for key, value in batch.metadata.items()},
        }
        flags = result.flags or [""] * len(batch)
        for flag in filter(None, flags):
            tally.unjudged[flag] = tally.unjudged.get(flag, 0) + 1
        rows = _batch_rows(batch, np.asarray(result.scores, np.float64), hits, n_peaks, flags)
        tally.hits += int(idx.size)
    tally.frames_done += len(batch) + len(batch.failed)
    return hits_out, rows + _failed_rows(batch)


def _heat_maps(
    explainers: tuple[HeatMapExplainer, ...],
    hit_data: NDArray[np.float32],
    mask: NDArray[np.bool_],
    idx: NDArray[np.intp],
    frame_shape: tuple[int, ...],
) -> dict[str, Any]:
    """Each explainer's maps of the hit frames ``hit_data`` (rows ``idx`` of the batch whose ``mask`` is
    given): ``{dataset: (k, ss, fs) MAP_DTYPE, dataset_max: (k,) raw maxima}``."""
    extras: dict[str, Any] = {}
    for explainer in explainers:
        maps, raw_max = explainer(hit_data, mask[idx], idx) if idx.size else (
            np.zeros((0, *frame_shape), MAP_DTYPE),
            np.zeros(0, np.float32),
        )
        extras[explainer.dataset] = np.asarray(maps, MAP_DTYPE)
        extras[f"{explainer.dataset}_max"] = raw_max
    return extras


def _write_companions(run: _Run, protect: list[str]) -> None:
    """The files written once ``hits.cxi`` is final: its geometry (one per heat map), the ``.lst`` of its
    events and the ``indexamajig`` recipe (added to ``run.paths``)."""
    writer, paths = run.writer, run.paths
    writer.write_geometry(paths["geometry"], protect=protect)
    for name in run.names:
        writer.write_geometry(paths[f"geometry_{name}"], data_path=name, protect=protect)
    write_lst(paths["lst"], paths["cxi"], run.tally.hits, protect=protect)
    paths["crystfel_recipe"] = write_recipe(run.outdir, paths, protect=protect)


def _stage_seconds(
    seconds: dict[str, float], finder_seconds: dict[str, float], finder_before: dict[str, float]
) -> dict[str, float]:
    """Busy seconds per stage (:data:`STAGES`): this run's own plus what the finder's counters gained in it."""
    return {
        stage: seconds.get(stage, 0.0) + finder_seconds.get(stage, 0.0) - finder_before.get(stage, 0.0)
        for stage in STAGES
        if stage in seconds or stage in finder_seconds
    }


def _summary(run: _Run, method: str, source: FrameSource, stage_seconds: dict[str, float]) -> ReduceSummary:
    """The summary of a completed run."""
    done, n_hits, elapsed = run.tally.frames_done, run.tally.hits, run.tally.elapsed_s
    return ReduceSummary(
        method=method,
        frames_read=done,
        hits=n_hits,
        hit_rate=n_hits / done if done else 0.0,
        data_reduction_factor=done / n_hits if n_hits else None,
        frames_per_second=done / elapsed if elapsed > 0 else 0.0,
        elapsed_s=elapsed,
        outputs={role: str(path) for role, path in run.paths.items()},
        settings=run.settings,
        unjudged_frames=run.tally.unjudged,
        failed_frames=run.tally.failed,
        hot_pixel_windows=dict(sorted(source.hot_pixel_windows.items())),
        stage_seconds=stage_seconds,
    )
