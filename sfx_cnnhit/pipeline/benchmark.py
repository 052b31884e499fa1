"""Frames per second and peak memory of every method on the same frames (``sfx-cnnhit benchmark``).

Frames are simulated once per detector (:mod:`sfx_cnnhit.simulate`; by default a 512x512 detector and
the 1-Mpx, 16-module AGIPD layout) with a realistic share of hits, repeated into an in-memory pool,
and every method then runs on that same pool:

=====================  ===============================================================================
``cnn_veto``           the default model's veto: preprocessing (panel tiling, masked max-pool binning,
                       normalisation) and the forward pass, batched (:class:`CnnHitFinder.hit_probability`)
``cnn_veto_gradcam``   the veto, then Grad-CAM maps (on the frame's pixel grid) of the frames it passes
``reduce``             the whole ``sfx-cnnhit reduce`` job on a CXI file of the pool's frames: reading,
                       veto, peakfinder8 and Grad-CAM on hits, writing the reduced CXI (gzip) and tables
``peakfinder8``        our peakfinder8 (numba), frame by frame
``om_peakfinder8``     OM 23.8.3's compiled peakfinder8 (the reference; needs ``ondamonitor``)
``dials_dispersion``   our built-in DIALS ``dispersion_extended`` spot finder
``dials``              real DIALS in its own interpreter (``--full`` only, when installed)
``alexnet``            the seed's AlexNet, untrained, 512x512 only (preprocessing + forward pass)
``resnet101``          the seed's ResNet-101, untrained, 512x512 only
=====================  ===============================================================================

Every method runs in a fresh Python process, so its peak resident memory (``ru_maxrss``) is its own.
Timing starts after imports, set-up and one warm-up batch (JIT compilation, caches) and includes
everything per frame (preprocessing, masks, peak lists). A method is timed on at most ``max_frames``
frames or for about ``seconds_per_method``. ``frames_per_second`` is frames over wall time;
``frames_per_cpu_second`` is frames over the CPU time of all the process's threads (steadier on a
busy machine; equal to frames/s for a single-threaded method on an idle core). Every figure is also
given as a ratio to ``om_peakfinder8`` measured in the same run on the same frames.

Until the shipped default model exists, an untrained network of the same architecture stands in
(speed does not depend on the weights); its decision threshold is then set so that the veto passes
as many frames as there are true hits, so the work done on hits is realistic.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError, NotAvailableError

if TYPE_CHECKING:
    from sfx_cnnhit.models.tasks import Task

REFERENCE = "om_peakfinder8"
SQUARE_DETECTOR = "square512"
#: peakfinder8 settings for the simulated detectors (1 ADU per photon): CrystFEL's, 100 ADU floor.
PEAKFINDER8_SETTINGS: dict[str, Any] = {"adc_threshold": 100.0, "minimum_snr": 5.0}
#: Architecture that stands in for the default model until its weights exist.
STANDIN_ARCHITECTURE: tuple[str, Task] = ("hitnet", "fiveclass")


@dataclass(frozen=True)
class Method:
    """A benchmarked method: what it runs, on which frames, in which batches."""

    name: str
    description: str
    square_only: bool = False
    full_only: bool = False
    batch_size: int | None = None  # None: the run's batch size
    seed_net: bool = False  # timed on fewer frames


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cnn_veto", "default model: preprocessing + forward pass, batched"),
        Method("cnn_veto_gradcam", "veto + Grad-CAM maps of the frames it passes"),
        Method("reduce", "sfx-cnnhit reduce: read, veto, peakfinder8 + Grad-CAM on hits, write CXI"),
        Method("peakfinder8", "our peakfinder8 (numba), one frame at a time"),
        Method(REFERENCE, "OM 23.8.3 compiled peakfinder8, one frame at a time"),
        Method("dials_dispersion", "built-in DIALS dispersion_extended spot finding"),
        Method("dials", "real DIALS spot finding (subprocess per batch)", full_only=True),
        Method("alexnet", "seed AlexNet, untrained: preprocessing + forward", square_only=True, batch_size=8,
               seed_net=True),
        Method("resnet101", "seed ResNet-101, untrained: preprocessing + forward", square_only=True, batch_size=2,
               seed_net=True),
    )
}
DEFAULT_METHODS = tuple(name for name, m in METHODS.items() if not m.full_only)
CNN_METHODS = ("cnn_veto", "cnn_veto_gradcam", "reduce")
TORCH_METHODS = (*CNN_METHODS, "alexnet", "resnet101")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark run measures.

    Attributes:
        detectors: simulated detectors (:data:`sfx_cnnhit.simulate.DETECTORS`); the largest frames
            give the headline figures.
        methods: names from :data:`METHODS`.
        distinct_frames: frames simulated per detector.
        pool_frames: frames held in memory (the distinct ones repeated); methods cycle through them.
        max_frames: frames timed per method at most (seed networks: ``seed_net_frames``).
        seed_net_frames: frames timed for ``alexnet`` and ``resnet101`` at most.
        reduce_frames: frames in the file ``reduce`` processes.
        seconds_per_method: timing stops after the batch that passes this wall time.
        hit_rate: fraction of hits among the simulated frames.
        batch_size: frames per batch of the CNN and the reduction.
        model: checkpoint path or shipped name (None: the shipped default, or a stand-in).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
        precision: the CNN veto's forward-pass arithmetic (:class:`CnnHitFinder`'s ``precision``).
        threads: torch threads in every method (None: torch's default, one per core).
        seed: simulator seed.
        worker_timeout_s: a method taking longer is stopped and reported as failed.
    """

    detectors: tuple[str, ...] = (SQUARE_DETECTOR, "agipd1m")
    methods: tuple[str, ...] = DEFAULT_METHODS
    distinct_frames: int = 8
    pool_frames: int = 32
    max_frames: int = 256
    seed_net_frames: int = 8
    reduce_frames: int = 32
    seconds_per_method: float = 3.0
    hit_rate: float = 0.25
    batch_size: int = 16
    model: str | None = None
    device: str = "auto"
    precision: str = "float32"
    threads: int | None = None
    seed: int = 0
    worker_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"benchmark: unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if not self.detectors:
            raise ConfigError("benchmark: no detector given")
        if min(self.distinct_frames, self.pool_frames, self.max_frames, self.seed_net_frames, self.reduce_frames,
               self.batch_size) < 1:
            raise ConfigError("benchmark: frame counts and the batch size must be at least 1")
        if not 0.0 <= self.hit_rate <= 1.0:
            raise ConfigError(f"benchmark: hit_rate must lie in [0, 1], got {self.hit_rate}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"benchmark: threads must be at least 1, got {self.threads}")

    @classmethod
    def full(cls, **overrides: Any) -> BenchmarkConfig:
        """The longer ``--full`` run: more frames, and real DIALS."""
        values: dict[str, Any] = {
            "methods": tuple(METHODS),
            "distinct_frames": 16,
            "pool_frames": 64,
            "max_frames": 1024,
            "seed_net_frames": 16,
            "reduce_frames": 128,
            "seconds_per_method": 10.0,
        }
        values.update(overrides)
        return cls(**values)


# ---------------------------------------------------------------------------------------------------
# Machine


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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU, torch (version, threads, device) and the reference tools present."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ondamonitor": _version("ondamonitor"),
        "load_average": list(os.getloadavg()),
    }


def om_available() -> bool:
    """Whether OM's compiled peakfinder8 can be imported."""
    try:
        from om.algorithms._crystallography import peakfinder_8  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Frames


@dataclass
class FrameSet:
    """One detector's frames for the benchmark (written to ``folder`` for the workers)."""

    detector: str
    frame_shape: tuple[int, int]
    n_panels: int
    labels: list[int]
    pool_frames: int
    hit_fraction: float
    folder: Path
    files: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "frame_shape": list(self.frame_shape),
            "megapixels": self.frame_shape[0] * self.frame_shape[1] / 1e6,
            "panels": self.n_panels,
            "distinct_frames": len(self.labels),
            "labels": self.labels,
            "pool_frames": self.pool_frames,
            "hit_fraction": self.hit_fraction,
        }


def make_frames(detector: str, config: BenchmarkConfig, folder: Path) -> FrameSet:
    """Simulate ``config.distinct_frames`` frames of ``detector`` and write what the workers read.

    Files: ``pool.npz`` (``data`` float32 and ``mask`` bool ``(pool_frames, ss, fs)``, the distinct
    frames repeated, one static mask: the good pixels of every frame; ``hit`` bool), ``detector.geom``,
    ``run.cxi`` (``reduce_frames`` frames of the pool, uncompressed) and ``warm.cxi`` (one batch).
    """
    from sfx_cnnhit.io.cxi import CXIWriter
    from sfx_cnnhit.io.geometry import write_geometry
    from sfx_cnnhit.simulate import SimulationConfig, Simulator

    folder.mkdir(parents=True, exist_ok=True)
    sim = Simulator(SimulationConfig().with_overrides(detector__name=detector), seed=config.seed, split="test")
    labels = sim.labels_for(config.distinct_frames, hit_rate=config.hit_rate)
    batch = sim.generate(labels)
    mask = np.logical_and.reduce(batch.mask, axis=0)
    take = np.arange(config.pool_frames) % len(labels)
    data = np.ascontiguousarray(batch.data[take], dtype=np.float32)
    masks = np.ascontiguousarray(np.broadcast_to(mask, data.shape))
    hit = batch.hit[take]
    files = {"pool": str(folder / "pool.npz"), "geometry": str(folder / "detector.geom")}
    np.savez(files["pool"], data=data, mask=masks, hit=hit)
    write_geometry(sim.geometry, files["geometry"])
    if "reduce" in config.methods:
        for name, n in (("run", config.reduce_frames), ("warm", config.batch_size)):
            files[name] = str(folder / f"{name}.cxi")
            rows = np.arange(n) % config.pool_frames
            with CXIWriter(files[name], frame_shape=sim.frame_shape, compression="none", mask=mask,
                           geometry=sim.geometry) as writer:
                for i0 in range(0, n, config.batch_size):
                    part = rows[i0 : i0 + config.batch_size]
                    writer.append(data[part], event_ids=[f"frame {i}" for i in part], source_files="benchmark",
                                  source_indices=part)
                writer.finalize()
    return FrameSet(
        detector=detector,
        frame_shape=sim.frame_shape,
        n_panels=len(sim.geometry.panels),
        labels=[int(v) for v in labels],
        pool_frames=config.pool_frames,
        hit_fraction=float(batch.hit.mean()) if len(labels) else 0.0,
        folder=folder,
        files=files,
    )


# ---------------------------------------------------------------------------------------------------
# The parent: one worker process per (method, detector)


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


def _run_worker(task: dict[str, Any], workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its result dict, or ``{"error": ...}``."""
    tag = f"{task['method']}-{task['detector']}"
    task_path, result_path = workdir / f"{tag}.task.json", workdir / f"{tag}.result.json"
    task_path.write_text(json.dumps({**task, "result": str(result_path)}))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sfx_cnnhit.pipeline.benchmark", str(task_path)],
            capture_output=True, text=True, timeout=timeout_s, cwd=workdir,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode or not result_path.exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": f"exit code {proc.returncode}: {lines[-1] if lines else 'no output'}"}
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


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

    workdir = Path(workdir)
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
        by_detector[detector] = {"results": results, "ratio_to_om_peakfinder8": _ratios(results)}
    headline, ratios = _headline(by_detector, frames)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine, "load_average_end": list(os.getloadavg())},
        "config": _plain(asdict(config)),
        "model": model,
        "frames": frames,
        "results": headline,
        "ratio_to_om_peakfinder8": ratios,
        "by_detector": by_detector,
        "skipped": skipped,
        "failed": failed,
        "notes": _notes(model, machine),
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
        result = _run_worker(task, workdir, config.worker_timeout_s)
        if "error" in result:
            failed[f"{method}@{detector}"] = result["error"]
            continue
        threshold = result.get("threshold", threshold)
        results[method] = {"detector": detector, "frame_shape": list(frame_set.frame_shape), **result}
        say(f"  {result['frames_per_second']:.1f} frames/s ({result['frames']} frames, {result['device']}), "
            f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return results


def _task(
    m: Method,
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


def _headline(
    by_detector: dict[str, dict[str, Any]], frames: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Each method's result and ratio to the reference at the largest frames it ran on."""
    headline: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    for detector in sorted(by_detector, key=lambda d: np.prod(frames[d]["frame_shape"])):  # largest last
        for method, result in by_detector[detector]["results"].items():
            headline[method] = result
            ratios.pop(method, None)
            if method in by_detector[detector]["ratio_to_om_peakfinder8"]:
                ratios[method] = by_detector[detector]["ratio_to_om_peakfinder8"][method]
    return headline, ratios


def _notes(model: dict[str, Any] | None, machine: dict[str, Any]) -> list[str]:
    """The report's notes: how to read the figures, the stand-in model, a busy machine."""
    notes = [
        "frames/s = frames / wall time; per CPU-s = frames / CPU time of all the method's threads.",
        "om_peakfinder8 and peakfinder8 use one core; the CNN uses torch's threads (see threads).",
    ]
    if model and model["note"]:
        notes.append(model["note"])
    if machine["load_average"][0] > 0.5 * (machine["usable_cores"] or 1):
        notes.append(f"the machine was busy (load average {machine['load_average'][0]:.1f} on "
                     f"{machine['usable_cores']} cores): wall-time figures are noisy; per-CPU-second figures "
                     "and the ratios are steadier")
    return notes

def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every method's frames/s over the reference's, when the reference was measured."""
    if REFERENCE not in results:
        return {}
    ref = results[REFERENCE]["frames_per_second"]
    return {name: r["frames_per_second"] / ref for name, r in results.items()}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def format_report(report: dict[str, Any]) -> str:
    """The report as readable text: machine, then one table per detector."""
    m = report["machine"]
    lines = [
        f"{m['cpu']}, {m['usable_cores']} cores, torch {m['torch_version']} "
        f"({report['config']['threads'] or m['torch_threads']} threads, "
        f"{m['torch_cpu_capability']}), device {m['cuda'] or 'cpu'}, load average {m['load_average'][0]:.1f}"
        f" -> {m['load_average_end'][0]:.1f}",
    ]
    if report["model"]:
        model = report["model"]
        lines.append(f"model: {model['architecture']} ({'trained' if model['trained'] else 'untrained stand-in'}), "
                     f"input {model['input_size']}x{model['input_size']}, {model['path']}")
    header = f"{'method':<18} {'frames':>6} {'frames/s':>9} {'per CPU-s':>9} {'x OM pf8':>8} {'peak RSS MB':>11}"
    for detector, part in report["by_detector"].items():
        info = report["frames"][detector]
        ss, fs = info["frame_shape"]
        lines += ["", f"{detector}: {ss}x{fs} ({info['megapixels']:.2f} Mpx, {info['panels']} panels), "
                  f"{info['distinct_frames']} distinct frames ({100 * info['hit_fraction']:.0f} % hits) in a pool of "
                  f"{info['pool_frames']}", header, "-" * len(header)]
        for name, r in part["results"].items():
            ratio = part["ratio_to_om_peakfinder8"].get(name)
            lines.append(
                f"{name:<18} {r['frames']:>6} {r['frames_per_second']:>9.1f} {r['frames_per_cpu_second']:>9.1f} "
                f"{'' if ratio is None else f'{ratio:.2f}':>8} {r['peak_rss_mb']:>11.0f}"
            )
    for title, entries in (("skipped", report["skipped"]), ("failed", report["failed"])):
        lines += [f"{title}: {name}: {why}" for name, why in entries.items()]
    lines += ["", *report["notes"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The worker: one method on one detector's frames, in its own process


class _Case:
    """A method set up and ready: ``step`` handles one batch of in-memory frames."""

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        raise NotImplementedError


class _Veto(_Case):
    def __init__(self, task: dict[str, Any], pool: dict[str, NDArray[Any]], gradcam: bool) -> None:
        from sfx_cnnhit.finders.base import create_finder
        from sfx_cnnhit.finders.cnn import CnnHitFinder
        from sfx_cnnhit.io.geometry import read_geometry

        self.finder = cast(CnnHitFinder, create_finder(
            "cnn", {"model": task["model"]}, detector=read_geometry(task["files"]["geometry"]), device=task["device"],
            hot_pixel_map=False, batch_size=task["batch_size"], precision=task["precision"]))
        self.threshold = _threshold(task, lambda: self.finder.hit_probability(pool["data"], pool["mask"]),
                                    int(pool["hit"].sum()))
        self.gradcam = gradcam
        self.passed = 0
        if gradcam:
            self.finder.explainer("gradcam")  # imports pytorch-grad-cam during set-up

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        scores = self.finder.hit_probability(data, mask)
        hits = np.flatnonzero(scores >= self.threshold)
        self.passed += int(hits.size)
        if self.gradcam and hits.size:
            self.finder.heatmaps(data[hits], mask[hits])


def _threshold(task: dict[str, Any], scores: Callable[[], NDArray[np.float64]], n_hits: int) -> float:
    """The decision threshold: the given one, the default for a trained model, or for the stand-in
    the score that passes as many frames as there are true hits."""
    from sfx_cnnhit.models.checkpoint import model_threshold

    if task["threshold"] is not None:
        return float(task["threshold"])
    if task["trained"]:
        return model_threshold(task["model"])
    ranked = np.sort(scores())[::-1]
    return float(ranked[n_hits - 1]) if n_hits else float(np.nextafter(ranked[0], np.inf))


class _Peakfinder8(_Case):
    def __init__(self, task: dict[str, Any]) -> None:
        from sfx_cnnhit.finders.base import create_finder
        from sfx_cnnhit.finders.config import Peakfinder8Params
        from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
        from sfx_cnnhit.io.geometry import read_geometry

        geometry = read_geometry(task["files"]["geometry"])
        self.finder = cast(Peakfinder8Finder, create_finder(
            "peakfinder8", Peakfinder8Params(**PEAKFINDER8_SETTINGS), detector=geometry))

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        for frame, good in zip(data, mask, strict=True):
            self.finder.find_peaks_masked(frame, good)


class _OmPeakfinder8(_Peakfinder8):
    """OM's compiled function with the same detector layout, radius map, settings and mask."""

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task)
        from om.algorithms._crystallography import peakfinder_8

        p, lay = self.finder.params, self.finder.layout
        radius = np.array(self.finder.radius_map, np.float32)  # OM needs a writable array
        self.call: Callable[[NDArray[np.float32], NDArray[np.int8]], Any] = lambda frame, mask8: peakfinder_8(
            p.max_num_peaks, frame, mask8, radius, 0, None, None, 0, lay.asic_nx, lay.asic_ny, lay.nasics_x,
            lay.nasics_y, p.adc_threshold, p.minimum_snr, p.min_pixel_count, p.max_pixel_count, p.local_bg_radius,
        )

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        for frame, good in zip(data, mask, strict=True):
            self.call(frame, good.view(np.int8))  # bool is one byte, 0/1: OM's int8 mask without a copy


class _Dials(_Case):
    def __init__(self, task: dict[str, Any], real: bool) -> None:
        from sfx_cnnhit.finders.base import create_finder
        from sfx_cnnhit.io.geometry import read_geometry

        geometry = read_geometry(task["files"]["geometry"])
        options = {"frames_per_call": task["batch_size"]} if real else {}
        self.finder = create_finder("dials" if real else "dispersion", detector=geometry, **options)

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        self.finder.classify(data, mask)


class _SeedNet(_Case):
    def __init__(self, task: dict[str, Any]) -> None:
        import torch

        from sfx_cnnhit.models.hitnet import fuse_conv_bn_
        from sfx_cnnhit.models.inference import resolve_device
        from sfx_cnnhit.models.zoo import create_model

        torch.manual_seed(0)
        model, self.spec = create_model(task["method"], task="fiveclass")
        self.device = resolve_device(task["device"])
        # torch's stubs lack Module.to(device, memory_format=...), which it accepts at run time.
        self.model = fuse_conv_bn_(model.eval()).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        import torch

        from sfx_cnnhit.models.preprocess import preprocess

        with torch.inference_mode():
            x = preprocess(data, mask, self.spec.preprocess).to(self.device)
            self.model(x.contiguous(memory_format=torch.channels_last)).float().cpu()


def _time_batches(case: _Case, pool: dict[str, NDArray[Any]], task: dict[str, Any]) -> tuple[int, float, float]:
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


def _reduce(task: dict[str, Any]) -> dict[str, Any]:
    """``cnn_reduce`` on ``run.cxi`` after a warm-up run on ``warm.cxi``."""
    from sfx_cnnhit.finders.base import create_finder
    from sfx_cnnhit.finders.cnn import CnnHitFinder
    from sfx_cnnhit.finders.config import Peakfinder8Params
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
    from sfx_cnnhit.io.geometry import read_geometry
    from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
    from sfx_cnnhit.io.sources import open_frames
    from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce

    geometry = read_geometry(task["files"]["geometry"])
    pf8 = cast(Peakfinder8Finder, create_finder("peakfinder8", Peakfinder8Params(**PEAKFINDER8_SETTINGS),
                                                detector=geometry))

    def stand_in_scores() -> NDArray[np.float64]:
        finder = cast(CnnHitFinder, create_finder("cnn", {"model": task["model"]}, detector=geometry,
                                                  device=task["device"]))
        source = open_frames([task["files"]["run"]], geometry=geometry)
        return np.concatenate([finder.hit_probability(b.data, b.mask) for b in source.batches(task["batch_size"])])

    with np.load(task["files"]["pool"]) as pool:
        share = float(pool["hit"].mean())
    n_run = open_frames([task["files"]["run"]], geometry=geometry).n_frames
    threshold = _threshold(task, stand_in_scores, round(share * n_run))
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
            "threshold": threshold, "passed": summary.hits}


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    """Set up ``task['method']``, warm it up on one batch and time it (see :func:`run_benchmark`).

    torch is imported only by the methods that use it, so the others' memory does not include it.
    """
    method = task["method"]
    cnn = method in TORCH_METHODS
    threads, device = 1, "cpu"
    if cnn:
        import torch

        from sfx_cnnhit.models.inference import resolve_device

        if task["threads"]:
            torch.set_num_threads(task["threads"])
        threads, device = torch.get_num_threads(), str(resolve_device(task["device"]))
    if method == "reduce":
        out = _reduce(task)
    else:
        with np.load(task["files"]["pool"]) as stored:
            pool = {key: stored[key] for key in ("data", "mask", "hit")}
        cases: dict[str, Callable[[], _Case]] = {
            "cnn_veto": lambda: _Veto(task, pool, gradcam=False),
            "cnn_veto_gradcam": lambda: _Veto(task, pool, gradcam=True),
            "peakfinder8": lambda: _Peakfinder8(task),
            REFERENCE: lambda: _OmPeakfinder8(task),
            "dials_dispersion": lambda: _Dials(task, real=False),
            "dials": lambda: _Dials(task, real=True),
            "alexnet": lambda: _SeedNet(task),
            "resnet101": lambda: _SeedNet(task),
        }
        case = cases[method]()
        size = task["batch_size"]
        case.step(pool["data"][:size], pool["mask"][:size])  # warm-up: compilation, caches, allocations
        if isinstance(case, _Veto):
            case.passed = 0
        ready = current_rss_mb()
        frames, wall, cpu = _time_batches(case, pool, task)
        out = {"frames": frames, "wall_s": wall, "cpu_s": cpu, "ready_rss_mb": ready,
               "pool_mb": (pool["data"].nbytes + pool["mask"].nbytes) / 2**20}
        if isinstance(case, _Veto):
            out.update(threshold=case.threshold, passed=case.passed)
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


def _worker_main(task_path: str) -> None:
    task = json.loads(Path(task_path).read_text())
    result = _measure(task)
    Path(task["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    _worker_main(sys.argv[1])
