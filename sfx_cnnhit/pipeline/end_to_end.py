"""The whole job on one file, as users time it (``sfx-cnnhit benchmark --end-to-end FILE``).

Four runs on the same input, each in a fresh Python process so that its peak resident memory
(``VmHWM``, see :func:`~sfx_cnnhit.pipeline.benchmark.process.peak_rss_mb`) is its own:

==================  ================================================================================
``read``            reading only: the frames as ``reduce`` reads them (decompression, masks, hot-pixel
                    map), in the same batches, and nothing else
``peakfinder8``     ``sfx-cnnhit peakfinder8 FILE -o DIR``: peakfinder8 on every frame, hits written
``reduce_no_maps``  ``sfx-cnnhit reduce FILE -o DIR --explain none``
``reduce``          ``sfx-cnnhit reduce FILE -o DIR``: veto, peakfinder8 and Grad-CAM on hits, written
==================  ================================================================================

Each run is timed from opening the input to the last output file written (model loading, the join of
the reduced CXI and the companion files included; interpreter start and imports excluded, given
separately as ``process_s``). The runs use the commands' defaults (hot-pixel map, CrystFEL's
peakfinder8 settings, the shipped model) so their figures are those of the commands. The stage split
(``stage_seconds``: read, classify and within it preprocess, network, peakfinder8, then maps and
write) is the busy time of each stage; reading and writing run in their own threads, so the
stages overlap and their sum can exceed the wall time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.pipeline.benchmark.process import peak_rss_mb, run_worker, usable_cores, worker_main

RUNS = ("read", "peakfinder8", "reduce_no_maps", "reduce")
#: ``name: (numerator, denominator)`` of the ratios reported (frames/s over frames/s)
RATIOS = {
    "reduce / peakfinder8": ("reduce", "peakfinder8"),
    "reduce / read": ("reduce", "read"),
    "reduce_no_maps / peakfinder8": ("reduce_no_maps", "peakfinder8"),
    "reduce_no_maps / read": ("reduce_no_maps", "read"),
    "peakfinder8 / read": ("peakfinder8", "read"),
}
STAGE_COLUMNS = ("read", "classify", "preprocess", "network", "peakfinder8", "maps", "write")


def run_end_to_end(
    path: str | os.PathLike[str],
    *,
    geometry: str | os.PathLike[str] | None = None,
    model: str | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    device: str = "auto",
    precision: str = "float32",
    runs: tuple[str, ...] = RUNS,
    workdir: str | os.PathLike[str] | None = None,
    timeout_s: float = 3600.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time ``runs`` (:data:`RUNS`) on the input ``path``; returns the report (JSON-able).

    Report keys: ``input``, ``machine`` (cores, load average before and after), ``settings``,
    ``results`` (per run: ``frames``, ``hits``, ``wall_s``, ``frames_per_second``, ``cpu_s`` and
    ``frames_per_cpu_second`` (all threads), ``process_s``, ``peak_rss_mb``, ``stage_seconds``,
    ``threads``), ``ratios`` (:data:`RATIOS` whose runs were measured), ``failed`` (run: reason),
    ``created``.

    Args:
        path: the input file (any format ``reduce`` reads).
        geometry: CrystFEL geometry file for every run (else the commands' default without one).
        model, batch_size, threads, device, precision: ``reduce``'s options.
        workdir: folder for the outputs (default: a temporary folder, removed after).
        timeout_s: a run taking longer is stopped and reported under ``failed``.
        progress: called with a line before each run and with its figures after it.
    """
    unknown = [name for name in runs if name not in RUNS]
    if unknown:
        raise ConfigError(f"end-to-end benchmark: unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
    if not Path(path).is_file():
        raise ConfigError(f"end-to-end benchmark: {path}: no such file")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="sfx_cnnhit_e2e_") as tmp:
            return run_end_to_end(path, geometry=geometry, model=model, batch_size=batch_size, threads=threads,
                                  device=device, precision=precision, runs=runs, workdir=tmp, timeout_s=timeout_s,
                                  progress=progress)
    say = progress or (lambda _line: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {"geometry": None if geometry is None else str(geometry), "model": model, "batch_size": batch_size,
                "threads": threads, "device": device, "precision": precision}
    load_before = list(os.getloadavg())
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for name in runs:
        say(f"{name} on {path}")
        task = {"run": name, "input": str(Path(path).resolve()), "output": str(workdir / name), **settings}
        t0 = time.perf_counter()
        result = run_worker("sfx_cnnhit.pipeline.end_to_end", task, name, workdir, timeout_s)
        if "error" in result:
            failed[name] = result["error"]
            say(f"  failed: {result['error']}")
            continue
        results[name] = {**result, "process_s": time.perf_counter() - t0}
        say(f"  {result['frames_per_second']:.1f} frames/s ({result['frames']} frames, {result['hits']} hits), "
            f"peak RSS {result['peak_rss_mb']:.0f} MB")
    ratios = {
        label: results[a]["frames_per_second"] / results[b]["frames_per_second"]
        for label, (a, b) in RATIOS.items()
        if a in results and b in results and results[b]["frames_per_second"] > 0
    }
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": str(path),
        "machine": {"cores": usable_cores(), "load_average": load_before, "load_average_end": list(os.getloadavg())},
        "settings": settings,
        "results": results,
        "ratios": ratios,
        "failed": failed,
    }


def format_end_to_end(report: dict[str, Any]) -> str:
    """The report as a table: one row per run, then the ratios."""
    m = report["machine"]
    lines = [f"{report['input']}: {m['cores']} cores, load average {m['load_average'][0]:.1f} -> "
             f"{m['load_average_end'][0]:.1f}", ""]
    header = (f"{'run':<15} {'frames':>6} {'hits':>5} {'wall s':>7} {'frames/s':>9} {'per CPU-s':>9} "
              f"{'RSS MB':>7}  " + " ".join(f"{c:>11}" for c in STAGE_COLUMNS))
    lines += [header, "-" * len(header)]
    for name, r in report["results"].items():
        stages = " ".join(f"{r['stage_seconds'][c]:>11.2f}" if c in r["stage_seconds"] else f"{'-':>11}"
                          for c in STAGE_COLUMNS)
        lines.append(f"{name:<15} {r['frames']:>6} {r['hits'] if r['hits'] is not None else '-':>5} "
                     f"{r['wall_s']:>7.2f} {r['frames_per_second']:>9.1f} {r['frames_per_cpu_second']:>9.1f} "
                     f"{r['peak_rss_mb']:>7.0f}  {stages}")
    lines += ["", *(f"{label:<30} {value:6.2f}x" for label, value in report["ratios"].items())]
    lines += [f"failed: {name}: {why}" for name, why in report["failed"].items()]
    lines += ["", "wall s: opening the input to the last output written (set-up included, imports not); per CPU-s: "
              "frames per CPU second of all the run's threads (steadier on a busy machine); stage columns: busy "
              "seconds per stage (reading and writing run in their own threads, so stages overlap)."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The worker: one run in its own process


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    """Run ``task['run']`` as the command would and time it (see :func:`run_end_to_end`).

    Only the CNN runs import torch, so the other runs' memory is their job's own (the ``sfx-cnnhit``
    command line itself imports torch for every command: about 500 MB more). Imports happen before
    the clock starts.
    """
    from sfx_cnnhit.finders.config import load_finder_config
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
    from sfx_cnnhit.io.geometry import read_geometry
    from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
    from sfx_cnnhit.io.sources import open_frames
    from sfx_cnnhit.pipeline.reduce import batch_frames, reduce_run

    name = task["run"]
    if name.startswith("reduce"):  # imports are not timed (torch; pytorch-grad-cam for the maps)
        import sfx_cnnhit.pipeline.cnn_reduce

        if name == "reduce":
            import sfx_cnnhit.explain.gradcam  # noqa: F401
    t0, cpu0 = time.perf_counter(), time.process_time()
    geometry = read_geometry(task["geometry"]) if task["geometry"] else None
    source = open_frames([task["input"]], geometry=geometry, hot_pixels=DEFAULT_HOT_PIXELS)
    threads: int | None = None
    if name == "read":
        frames = 0
        for batch in source.batches(batch_frames(task["batch_size"], source.frame_shape), skip_bad=True):
            frames += len(batch) + len(batch.failed)
        hits, stages = None, {"read": time.perf_counter() - t0}
    else:
        params, rule = load_finder_config(None)  # the commands' peakfinder8, as sfx_cnnhit.cli.inputs makes it
        if source.geometry is not None:
            pf8 = Peakfinder8Finder.from_geometry(source.geometry, params, rule)
        else:
            layout = source.layout_info
            asic = (layout["asic_ny"], layout["asic_nx"]) if layout else None
            pf8 = Peakfinder8Finder.from_beam_center(source.frame_shape, params, rule, asic_shape=asic)
        if name == "peakfinder8":
            summary = reduce_run(source, pf8, task["output"], method="peakfinder8", overwrite=True,
                                 batch_size=task["batch_size"])
        else:
            from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce, compute_threads

            with compute_threads(task["threads"]) as threads:
                summary = cnn_reduce(source, task["output"], model=task["model"], peakfinder=pf8,
                                     explain="none" if name == "reduce_no_maps" else "gradcam", device=task["device"],
                                     batch_size=task["batch_size"], precision=task["precision"], threads=threads,
                                     overwrite=True)
        frames, hits, stages = summary.frames_read, summary.hits, summary.stage_seconds
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"frames": frames, "hits": hits, "wall_s": wall, "frames_per_second": frames / wall if wall > 0 else 0.0,
            "cpu_s": cpu, "frames_per_cpu_second": frames / cpu if cpu > 0 else 0.0, "peak_rss_mb": peak_rss_mb(),
            "stage_seconds": stages, "threads": threads, "load_1min": os.getloadavg()[0]}


if __name__ == "__main__":
    worker_main(_measure, sys.argv[1])
