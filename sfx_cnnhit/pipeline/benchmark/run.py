"""The parent of a benchmark run: frames per detector, one worker process per (method, detector), the report."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sfx_cnnhit.errors import NotAvailableError

from .config import (
    CNN_METHODS,
    METHODS,
    REFERENCE,
    SQUARE_DETECTOR,
    STANDIN_ARCHITECTURE,
    BenchmarkConfig,
    BenchmarkMethod,
)
from .frames import FrameSet, make_frames
from .machine import machine_info
from .process import run_worker
from .reference import om_available
from .report import headline_results, ratios_to_reference, report_notes

#: The module a worker process runs (:mod:`.worker`).
WORKER = "sfx_cnnhit.pipeline.benchmark.worker"


def benchmark_model(model: str | None, workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """The model to measure: ``model`` (path or shipped name) or the shipped default, else an untrained
    stand-in of the default architecture saved in ``workdir``; ``{path, architecture, input_size, trained, note}``."""
    from sfx_cnnhit.models.checkpoint import load_checkpoint, resolve_model_path, save_checkpoint
    from sfx_cnnhit.models.zoo import create_model

    try:
        path = resolve_model_path(model)
    except NotAvailableError:
        if model is not None:
            raise
        name, task = STANDIN_ARCHITECTURE
        network, spec = create_model(name, task=task)
        path = save_checkpoint(Path(workdir) / f"{name}_{task}_untrained.pt", network.eval(), spec)
        return {
            "path": str(path),
            "architecture": spec.name,
            "input_size": spec.input_size,
            "trained": False,
            "note": f"the shipped default model is not available yet: an untrained {name} ({task}) of the same "
            "architecture stands in (speed does not depend on the weights); its threshold passes as many "
            "frames as there are true hits",
        }
    spec = load_checkpoint(path).spec
    return {"path": str(path), "architecture": spec.name, "input_size": spec.input_size, "trained": True,
            "note": None}


def _skip_reason(method: str, detector: str, available: dict[str, bool]) -> str | None:
    m = METHODS[method]
    if m.square_only and detector != SQUARE_DETECTOR:
        return "512x512 frames only"
    if method == REFERENCE and not available["om"]:
        return "OM's compiled peakfinder8 is not installed (pip install --no-deps ondamonitor==23.8.3)"
    if method == "dials" and not available["dials"]:
        return "real DIALS is not installed (apt-get install dials)"
    return None


def run_benchmark(
    config: BenchmarkConfig | None = None,
    *,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every method of ``config`` on every detector; returns the report (JSON-able).

    Report keys: ``machine``, ``config``, ``model``, ``frames`` (per detector), ``results`` (per
    method, at the largest frames it ran on), ``ratio_to_om_peakfinder8`` (same frames),
    ``by_detector`` (``results`` and ratios for every detector), ``skipped`` and ``failed`` (reasons),
    ``notes``. Each result holds ``frames_per_second``, ``frames_per_cpu_second``, ``peak_rss_mb``,
    ``ready_rss_mb`` (after set-up and warm-up), ``pool_mb`` (frames held in memory), ``frames``,
    ``wall_s``, ``cpu_s``, ``batch_size``, ``threads``, ``device``, ``load_1min``.

    Args:
        config: what to measure (default :class:`BenchmarkConfig()`).
        workdir: folder for frames, models and outputs (default: a temporary folder, removed after).
        progress: called with a line of text before each measurement and with its figures after it
            (so a run stopped early has still shown what it measured).
    """
    config = config or BenchmarkConfig()
    say = progress or (lambda _line: None)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="sfx_cnnhit_bench_") as tmp:
            return run_benchmark(config, workdir=tmp, progress=progress)
    from sfx_cnnhit.finders.dials import dials_available

    workdir = Path(workdir).resolve()  # the workers start in it
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    available = {"om": om_available(), "dials": "dials" in config.methods and dials_available()}
    model = benchmark_model(config.model, workdir) if any(m in config.methods for m in CNN_METHODS) else None
    detectors = sorted(config.detectors, key=lambda d: d != SQUARE_DETECTOR)  # seed nets' frames first
    by_detector: dict[str, dict[str, Any]] = {}
    frames: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for detector in detectors:
        say(f"simulating {config.distinct_frames} {detector} frames")
        frame_set = make_frames(detector, config, workdir / detector)
        frames[detector] = frame_set.describe()
        results = _measure_methods(frame_set, config, workdir, model, available, say, skipped, failed)
        by_detector[detector] = {"results": results, "ratio_to_om_peakfinder8": ratios_to_reference(results)}
    headline, ratios = headline_results(by_detector, frames)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine, "load_average_end": list(os.getloadavg())},
        "config": json.loads(json.dumps(asdict(config), default=list)),
        "model": model,
        "frames": frames,
        "results": headline,
        "ratio_to_om_peakfinder8": ratios,
        "by_detector": by_detector,
        "skipped": skipped,
        "failed": failed,
        "notes": report_notes(model, machine),
        "elapsed_s": time.perf_counter() - started,
    }


def _measure_methods(
    frame_set: FrameSet,
    config: BenchmarkConfig,
    workdir: Path,
    model: dict[str, Any] | None,
    available: dict[str, bool],
    say: Callable[[str], None],
    skipped: dict[str, str],
    failed: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Every method of ``config`` on one detector's frames, each in a worker process, the reference first;
    their results by method (methods left out or failed are added to ``skipped`` and ``failed``)."""
    detector = frame_set.detector
    results: dict[str, dict[str, Any]] = {}
    threshold: float | None = None  # the CNN's, set by the first CNN method, reused by the others
    for method in sorted(config.methods, key=lambda name: name != REFERENCE):  # the reference first
        reason = _skip_reason(method, detector, available)
        if reason:
            if not METHODS[method].square_only:
                skipped[method] = reason
            continue
        say(f"{method} on {detector} frames")
        task = _task(METHODS[method], frame_set, config, workdir, model, threshold)
        result = run_worker(WORKER, task, f"{method}-{detector}", workdir, config.worker_timeout_s, cwd=workdir)
        if "error" in result:
            failed[f"{method}@{detector}"] = result["error"]
            continue
        threshold = result.get("threshold", threshold)
        results[method] = {"detector": detector, "frame_shape": list(frame_set.frame_shape), **result}
        say(f"  {result['frames_per_second']:.1f} frames/s ({result['frames']} frames, {result['device']}), "
            f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return results


def _task(
    m: BenchmarkMethod,
    frame_set: FrameSet,
    config: BenchmarkConfig,
    workdir: Path,
    model: dict[str, Any] | None,
    threshold: float | None,
) -> dict[str, Any]:
    """What a worker process measures (JSON): method ``m`` on ``frame_set``'s files, with its limits."""
    return {
        "method": m.name,
        "detector": frame_set.detector,
        "files": frame_set.files,
        "model": None if model is None else model["path"],
        "trained": bool(model and model["trained"]),
        "threshold": threshold,
        "batch_size": m.batch_size or config.batch_size,
        "max_frames": config.seed_net_frames if m.seed_net else config.max_frames,
        "seconds": config.seconds_per_method,
        "device": config.device,
        "precision": config.precision,
        "threads": config.threads,
        "workdir": str(workdir / frame_set.detector / m.name),
    }
