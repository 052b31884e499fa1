"""MPI scale-out of a reduction: ``mpirun -n K sfx-cnnhit reduce|peakfinder8 INPUT... -o OUTDIR``.

Rank ``r`` of ``K`` reduces the global frames ``r, r + K, r + 2K, ...`` (every input, in the order
given) into ``OUTDIR/rank_<r:03d>/``: a complete reduction of its own (``hits.cxi``,
``frames.csv``, ``summary.json``, ... see :mod:`sfx_cnnhit.pipeline.reduce`), committed batch by
batch, so a killed job resumes when it is started again with the same ``K``. When every rank is
done, rank 0 writes the merged index at ``OUTDIR``:

==================  ====================================================================
``hits.lst``        every hit of every rank, in global frame order, as ``rank_<r>/hits.cxi //N``
                    (paths relative to ``OUTDIR``: run ``indexamajig -i hits.lst`` from there)
``frames.csv``      one row per frame of the run, in global frame order (the columns of a
                    single-process run)
``hits.geom``       the geometry of the rank files (and ``<map>.geom`` for heat maps)
``summary.json``    totals over the ranks, frames/s from the job's wall time, and each rank's
                    summary under ``settings.ranks``
==================  ====================================================================

The hits, their peaks and heat maps are those of a single-process run; only the files differ.
Without ``mpirun`` (or with one process) nothing changes: :func:`world` returns None and the
caller runs as before. Launched by ``mpirun`` with several processes but without mpi4py, every
process would write the same folder, so :func:`world` refuses instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sfx_cnnhit.errors import NotAvailableError, OutputError, SfxCnnHitError
from sfx_cnnhit.io.atomic import write_text_atomic
from sfx_cnnhit.io.crystfel_recipe import RECIPE_NAME
from sfx_cnnhit.pipeline.reduce import (
    CSV_COLUMNS,
    CSV_NAME,
    CXI_NAME,
    LST_NAME,
    SUMMARY_NAME,
    ReduceSummary,
    output_paths,
)
from sfx_cnnhit.types import ProgressFactory

#: Environment variables in which MPI launchers announce the number of processes (Open MPI, MPICH /
#: Intel MPI / Slurm's PMI-2, MVAPICH).
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")

RunRank = Callable[[Path, int, int], ReduceSummary]
#: ``progress(description)``: a context giving the ``update(frames done, total)`` callback of a progress bar
Progress = ProgressFactory


def launch_size() -> int:
    """Processes the MPI launcher started (1 when this process was not started by ``mpirun``)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def world() -> Any | None:
    """``MPI.COMM_WORLD`` when this process is one of several MPI ranks, else None.

    mpi4py is imported only under an MPI launcher, so a plain run never initialises MPI.

    Raises:
        NotAvailableError: launched by ``mpirun`` with several processes, but mpi4py is missing.
    """
    size = launch_size()
    if size <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise NotAvailableError(
            f"started by mpirun as one of {size} processes, but mpi4py is not installed "
            "(pip install mpi4py, or 'sfx-cnnhit[mpi]'); or run without mpirun"
        ) from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def threads_per_rank(comm: Any) -> int:
    """Compute threads for each rank: the CPUs this process may use, shared by the ranks on its node."""
    from mpi4py import MPI

    on_node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        local: int = on_node.Get_size()
    finally:
        on_node.Free()
    return max(1, len(os.sched_getaffinity(0)) // local)


def rank_dir(outdir: str | os.PathLike[str], rank: int) -> Path:
    """The folder of rank ``rank``'s own reduction inside ``outdir``."""
    return Path(outdir) / f"rank_{rank:03d}"


def check_target(outdir: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse a folder that holds a completed run (merged or single-process) unless ``overwrite``."""
    summary = Path(outdir) / SUMMARY_NAME
    if summary.exists() and not overwrite:
        raise OutputError(f"{outdir}: already holds a completed run ({SUMMARY_NAME}); choose another folder")


def _clear_top_level(outdir: Path) -> None:
    """Remove the outputs of a completed run at the top of ``outdir`` (``overwrite``)."""
    stale = [*output_paths(outdir).values(), outdir / RECIPE_NAME, *outdir.glob("*.geom")]
    for path in stale:
        path.unlink(missing_ok=True)


def run_ranks(
    run_rank: RunRank, outdir: str | os.PathLike[str], *, comm: Any, overwrite: bool = False
) -> ReduceSummary:
    """Run ``run_rank(rank folder, rank, n_ranks)`` on every rank of ``comm``, then merge on rank 0.

    Every rank must call this (it is collective). Each rank's torch threads are set to its share of
    the node's CPUs (:func:`threads_per_rank`). A failure on any rank (an exception) is raised on
    every rank after all have finished, so none is left waiting.

    Returns:
        on rank 0 the merged summary (also written as ``OUTDIR/summary.json``), on the other ranks
        their own.
    """
    import torch

    rank, size = comm.Get_rank(), comm.Get_size()
    outdir = Path(outdir)
    torch.set_num_threads(threads_per_rank(comm))
    check_target(outdir, overwrite)
    comm.Barrier()
    if rank == 0 and overwrite and (outdir / SUMMARY_NAME).exists():
        _clear_top_level(outdir)
    t0 = time.perf_counter()
    summary: ReduceSummary | None = None
    error: Exception | None = None
    try:
        summary = run_rank(rank_dir(outdir, rank), rank, size)
    except Exception as err:  # re-raised below, once every rank has reported
        error = err
    reports = comm.gather(None if summary is None else summary.to_dict(), root=0)
    failed = comm.allgather(None if error is None else f"rank {rank}: {error}")
    problems = [text for text in failed if text is not None]
    if error is not None:
        raise error
    if problems:
        raise SfxCnnHitError("; ".join(problems))
    assert summary is not None
    merged = merge_ranks(outdir, reports, wall_s=time.perf_counter() - t0) if rank == 0 else summary
    comm.Barrier()  # the merged outputs exist when any rank returns
    return merged


def run_reduction(
    run: Callable[..., ReduceSummary], outdir: str | os.PathLike[str], *, overwrite: bool, progress: Progress,
    description: str,
) -> ReduceSummary | None:
    """Run ``run(outdir, progress=..., rank=..., n_ranks=...)`` (a partial of
    :func:`~sfx_cnnhit.pipeline.reduce.reduce_run` or of a function calling it) in this process, or,
    launched by ``mpirun`` with several processes, on every rank with a share of the frames
    (:func:`run_ranks`). Only this process, or rank 0, shows a progress bar.

    Returns:
        the summary (the merged one on rank 0), None on the other ranks.
    """
    comm = world()
    if comm is None:
        with progress(description) as update:
            return run(outdir, progress=update)

    def run_rank(folder: Path, rank: int, n_ranks: int) -> ReduceSummary:
        if rank:
            return run(folder, rank=rank, n_ranks=n_ranks)
        with progress(f"{description}, rank 0 of {n_ranks}") as update:
            return run(folder, rank=rank, n_ranks=n_ranks, progress=update)

    summary = run_ranks(run_rank, outdir, comm=comm, overwrite=overwrite)
    return None if comm.Get_rank() else summary


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != CSV_COLUMNS:
        raise OutputError(f"{path}: not a frame table of this version (header {rows[:1]})")
    return rows[1:]


def merge_ranks(outdir: str | os.PathLike[str], reports: list[dict[str, Any]], *, wall_s: float) -> ReduceSummary:
    """Write the merged index of the rank folders in ``outdir`` (see the module docstring).

    Args:
        outdir: the job's output folder, holding ``rank_000 ... rank_<K-1>``.
        reports: each rank's :meth:`ReduceSummary.to_dict`, in rank order.
        wall_s: the job's wall time (seconds), for frames/s.

    Raises:
        OutputError: if a rank's frame table does not hold exactly its share of the frames.
    """
    outdir = Path(outdir)
    n_ranks = len(reports)
    tables = [_read_rows(rank_dir(outdir, r) / CSV_NAME) for r in range(n_ranks)]
    n_frames = sum(len(t) for t in tables)
    for r, (table, report) in enumerate(zip(tables, reports, strict=True)):
        if len(table) != report["frames_read"] or len(table) != len(range(r, n_frames, n_ranks)):
            raise OutputError(
                f"{rank_dir(outdir, r) / CSV_NAME}: {len(table)} rows for {report['frames_read']} frames read; "
                f"not rank {r}'s share of {n_frames} frames"
            )
    hit_column = CSV_COLUMNS.index("hit")
    rows: list[list[str]] = []
    events: list[str] = []
    next_hit = [0] * n_ranks
    for g in range(n_frames):
        r, j = g % n_ranks, g // n_ranks
        row = tables[r][j]
        rows.append(row)
        if row[hit_column] == "1":
            events.append(f"{rank_dir(outdir, r).name}/{CXI_NAME} //{next_hit[r]}\n")
            next_hit[r] += 1
    for r, report in enumerate(reports):
        if next_hit[r] != report["hits"]:
            raise OutputError(f"{rank_dir(outdir, r)}: frame table lists {next_hit[r]} hits, summary {report['hits']}")

    outputs = {"csv": outdir / CSV_NAME, "lst": outdir / LST_NAME, "summary": outdir / SUMMARY_NAME}
    write_text_atomic(outputs["csv"], _csv_text([list(CSV_COLUMNS), *rows]))
    write_text_atomic(outputs["lst"], "".join(events))
    for role, path in reports[0]["outputs"].items():
        if role == "geometry" or role.startswith("geometry_"):
            outputs[role] = outdir / Path(path).name
            write_text_atomic(outputs[role], Path(path).read_text(encoding="utf-8"))
    outputs["cxi"] = outdir / "rank_*" / CXI_NAME

    hits = sum(int(report["hits"]) for report in reports)
    unjudged: dict[str, int] = {}
    for report in reports:
        for flag, count in report.get("unjudged_frames", {}).items():
            unjudged[flag] = unjudged.get(flag, 0) + int(count)
    settings = {key: value for key, value in reports[0]["settings"].items() if key != "partition"}
    settings["n_ranks"] = n_ranks
    settings["ranks"] = reports
    summary = ReduceSummary(
        method=reports[0]["method"],
        frames_read=n_frames,
        hits=hits,
        hit_rate=hits / n_frames if n_frames else 0.0,
        data_reduction_factor=n_frames / hits if hits else None,
        frames_per_second=n_frames / wall_s if wall_s > 0 else 0.0,
        elapsed_s=wall_s,
        outputs={role: str(path) for role, path in outputs.items()},
        settings=settings,
        unjudged_frames=unjudged,
        failed_frames=sorted((f for report in reports for f in report.get("failed_frames", [])),
                             key=lambda f: f["global_index"]),
    )
    write_text_atomic(outputs["summary"], json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _csv_text(rows: list[list[str]]) -> str:
    """Rows as CSV text, written as the rank tables were."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()
