"""Measurements in a fresh interpreter: the worker-process protocol and a process's own memory.

The parent writes a task (JSON) and runs ``python -m MODULE TASK.json``; the worker measures and
writes its result (JSON) to the task's ``result`` path. Both the simulated benchmark and
``--end-to-end`` (:mod:`sfx_cnnhit.pipeline.end_to_end`) measure this way, so each figure, peak
memory included, is that of the measured work alone.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process image so far (MB = 2**20 bytes).

    Linux: ``VmHWM`` of ``/proc/self/status``. ``getrusage``'s ``ru_maxrss`` is not used there:
    Linux carries it over from the parent through ``fork`` and ``exec``, so a worker started by a
    large parent would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    import psutil

    rss: int = psutil.Process().memory_info().rss
    return rss / 2**20


def usable_cores() -> int | None:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_worker(
    module: str, task: dict[str, Any], tag: str, workdir: Path, timeout_s: float, *, cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``python -m module`` on ``task`` (kept as ``workdir/<tag>.task.json``) in a fresh interpreter
    started in ``cwd``; its result dict, or ``{"error": ...}`` when it fails or takes over ``timeout_s`` (s)."""
    task_path, result_path = workdir / f"{tag}.task.json", workdir / f"{tag}.result.json"
    result_path.unlink(missing_ok=True)
    task_path.write_text(json.dumps({**task, "result": str(result_path)}))
    try:
        proc = subprocess.run([sys.executable, "-m", module, str(task_path)], capture_output=True, text=True,
                              timeout=timeout_s, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode or not result_path.exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": f"exit code {proc.returncode}: {lines[-1] if lines else 'no output'}"}
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def worker_main(measure: Callable[[dict[str, Any]], dict[str, Any]], task_path: str) -> None:
    """The worker's side of :func:`run_worker`: read the task, ``measure`` it, write the result."""
    task = json.loads(Path(task_path).read_text())
    Path(task["result"]).write_text(json.dumps(measure(task)))
