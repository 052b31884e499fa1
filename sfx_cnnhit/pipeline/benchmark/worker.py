"""A worker process: one method on one detector's frames (``python -m sfx_cnnhit.pipeline.benchmark.worker TASK``).

Timing starts after imports, set-up and one warm-up batch; see :func:`~.run.run_benchmark`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .cases import Case, Pool, Task, Veto, cnn_finder, make_case, peakfinder8_finder, task_geometry, veto_threshold
from .config import TORCH_METHODS
from .process import current_rss_mb, peak_rss_mb, worker_main


def _time_batches(case: Case, pool: Pool, task: Task) -> tuple[int, float, float]:
    """Frames done, wall and CPU seconds: batches cycled through the pool until the frame or time limit."""
    data, mask = pool["data"], pool["mask"]
    size, n = task["batch_size"], 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while n < task["max_frames"]:
        i0 = n % len(data)
        i1 = min(i0 + size, len(data), i0 + task["max_frames"] - n)
        case.step(data[i0:i1], mask[i0:i1])
        n += i1 - i0
        if time.perf_counter() - wall0 >= task["seconds"]:
            break
    return n, time.perf_counter() - wall0, time.process_time() - cpu0


def _reduce(task: Task) -> dict[str, Any]:
    """``cnn_reduce`` on ``run.cxi`` after a warm-up run on ``warm.cxi``."""
    from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
    from sfx_cnnhit.io.sources import open_frames
    from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce

    geometry = task_geometry(task)
    pf8 = peakfinder8_finder(geometry)

    def stand_in_scores() -> NDArray[np.float64]:
        finder = cnn_finder(task, geometry)
        source = open_frames([task["files"]["run"]], geometry=geometry)
        return np.concatenate([finder.hit_probability(b.data, b.mask) for b in source.batches(task["batch_size"])])

    with np.load(task["files"]["pool"]) as pool:
        share = float(pool["hit"].mean())
    n_run = open_frames([task["files"]["run"]], geometry=geometry).n_frames
    threshold = veto_threshold(task, stand_in_scores, round(share * n_run))  # None: cnn_reduce takes the model's
    out = Path(task["workdir"])

    def run(name: str) -> Any:
        source = open_frames([task["files"][name]], geometry=geometry, hot_pixels=DEFAULT_HOT_PIXELS)  # as reduce
        return cnn_reduce(source, out / name, model=task["model"],
                          threshold=threshold, explain="gradcam", peakfinder=pf8, device=task["device"],
                          batch_size=task["batch_size"], precision=task["precision"], overwrite=True)

    run("warm")
    ready = current_rss_mb()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = run("run")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"frames": summary.frames_read, "wall_s": wall, "cpu_s": cpu, "ready_rss_mb": ready, "pool_mb": 0.0,
            "threshold": summary.settings["threshold"], "passed": summary.hits}


def _batches(task: Task) -> dict[str, Any]:
    """Any method but ``reduce``: set up, warm up on one batch, time batches of the in-memory pool."""
    with np.load(task["files"]["pool"]) as stored:
        pool = {key: stored[key] for key in ("data", "mask", "hit")}
    case = make_case(task, pool)
    size = task["batch_size"]
    case.step(pool["data"][:size], pool["mask"][:size])  # warm-up: compilation, caches, allocations
    if isinstance(case, Veto):
        case.passed = 0
    ready = current_rss_mb()
    frames, wall, cpu = _time_batches(case, pool, task)
    out = {"frames": frames, "wall_s": wall, "cpu_s": cpu, "ready_rss_mb": ready,
           "pool_mb": (pool["data"].nbytes + pool["mask"].nbytes) / 2**20}
    if isinstance(case, Veto):
        out.update(threshold=case.threshold, passed=case.passed)
    return out


def measure(task: Task) -> dict[str, Any]:
    """Set up ``task['method']``, warm it up on one batch and time it (see :func:`~.run.run_benchmark`).

    torch is imported only by the methods that use it, so the others' memory does not include it.
    """
    method = task["method"]
    threads, device = 1, "cpu"
    if method in TORCH_METHODS:
        import torch

        from sfx_cnnhit.models.inference import resolve_device

        if task["threads"]:
            torch.set_num_threads(task["threads"])
        threads, device = torch.get_num_threads(), str(resolve_device(task["device"]))
    out = _reduce(task) if method == "reduce" else _batches(task)
    return {
        **out,
        "frames_per_second": out["frames"] / out["wall_s"],
        "frames_per_cpu_second": out["frames"] / out["cpu_s"] if out["cpu_s"] > 0 else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
        "batch_size": task["batch_size"],
        "threads": threads,
        "device": device,
        "load_1min": os.getloadavg()[0],
    }


if __name__ == "__main__":
    worker_main(measure, sys.argv[1])
