"""The GPU figures of docs/throughput.md in one run (``bash benchmarks/gpu_check.sh``, under 4 minutes).

On simulated 1-Mpx AGIPD-like frames (16 modules of 512x128, 128 ASIC panels; 30 % hits):

1. the default model's veto (preprocessing on the device, forward pass, softmax), float32 and
   bfloat16, once with the frames in host memory (upload timed) and once with them already on the
   device;
2. the veto and Grad-CAM maps of the frames it passes (float32);
3. ``sfx-cnnhit benchmark --end-to-end`` on a generated gzip CXI file of the same frames: reading only,
   peakfinder8, ``reduce --explain none`` and ``reduce``, each in its own process.

It prints one table (and writes it as JSON with ``--json``). Without a GPU it runs on the CPU
(``--quick``: tiny frames, a few seconds per step, which is how the tests run it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.io.cxi import CXIWriter
from sfx_cnnhit.io.geometry import write_geometry
from sfx_cnnhit.models.inference import resolve_device
from sfx_cnnhit.models.preprocess import panel_layout_for
from sfx_cnnhit.pipeline.end_to_end import run_end_to_end
from sfx_cnnhit.simulate import SimulationConfig, Simulator


def _simulate(detector: str, size: int | None, distinct: int, hit_rate: float) -> tuple[Simulator, Any]:
    overrides: dict[str, Any] = {"detector__name": detector}
    if size is not None:
        overrides["detector__size"] = size
    sim = Simulator(SimulationConfig().with_overrides(**overrides), seed=0, split="test")
    return sim, sim.generate(sim.labels_for(distinct, hit_rate=hit_rate))


def _rate(step: Any, n_frames: int, batch: int, seconds: float) -> dict[str, Any]:
    """Frames/s of ``step(i0, i1)`` over batches cycled through ``n_frames`` frames for about ``seconds``
    (after one warm-up batch)."""
    step(0, min(batch, n_frames))
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        i0 = done % n_frames
        i1 = min(i0 + batch, n_frames)
        step(i0, i1)
        done += i1 - i0
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"frames": done, "frames_per_second": done / wall}


def _write_run(path: Path, sim: Simulator, data: np.ndarray, mask: np.ndarray, n_frames: int) -> None:
    """``n_frames`` frames of ``data`` (cycled) as a gzip CXI file, with the static mask and geometry."""
    with CXIWriter(path, frame_shape=sim.frame_shape, mask=mask, geometry=sim.geometry) as writer:
        for i0 in range(0, n_frames, len(data)):
            rows = np.arange(i0, min(n_frames, i0 + len(data)))
            writer.append(data[rows % len(data)], event_ids=[f"frame {i}" for i in rows], source_files="gpu_check",
                          source_indices=rows)


def gpu_check(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every measurement of the module docstring; the report (JSON-able)."""
    device = resolve_device(args.device)
    sim, frames = _simulate(args.detector, args.size, args.distinct, args.hit_rate)
    mask = np.logical_and.reduce(frames.mask, axis=0)
    take = np.arange(args.pool) % len(frames.data)
    data = np.ascontiguousarray(frames.data[take], np.float32)
    layout = panel_layout_for(sim.geometry)
    rows: list[dict[str, Any]] = []
    for precision in ("float32", "bfloat16"):
        finder = CnnHitFinder(model=args.model, device=str(device), panel_layout=layout, batch_size=args.batch,
                              precision=precision)  # type: ignore[arg-type]
        on_device = (torch.as_tensor(data).to(device), torch.as_tensor(mask).to(device))
        for where, (d, m) in (("host", (data, mask)), ("device", on_device)):
            result = _rate(lambda a, b, d=d, m=m, f=finder: f.hit_probability(d[a:b], m), len(data), args.batch,
                           args.seconds)
            rows.append({"what": f"veto {precision}, frames in {where} memory", **result})
        del on_device
    finder = CnnHitFinder(model=args.model, device=str(device), panel_layout=layout, batch_size=args.batch)
    finder.explainer("gradcam")

    def veto_and_maps(a: int, b: int) -> None:
        hits = np.flatnonzero(finder.hit_probability(data[a:b], mask) >= finder.threshold)
        if hits.size:
            finder.heatmaps(data[a:b][hits], np.broadcast_to(mask, (hits.size, *mask.shape)))

    rows.append({"what": "veto + Grad-CAM of its hits, float32, host memory",
                 **_rate(veto_and_maps, len(data), args.batch, args.seconds)})
    run_file = workdir / "run.cxi"
    _write_run(run_file, sim, data, mask, args.e2e_frames)
    geometry = workdir / "detector.geom"
    write_geometry(sim.geometry, geometry)
    e2e = run_end_to_end(run_file, geometry=geometry, model=args.model, device=args.device,
                         batch_size=args.batch, workdir=workdir / "end_to_end")
    for name, r in e2e["results"].items():
        rows.append({"what": f"end to end: {name}", "frames": r["frames"], "frames_per_second": r["frames_per_second"],
                     "peak_rss_mb": r["peak_rss_mb"], "hits": r["hits"]})
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "frame_shape": list(sim.frame_shape),
        "batch_size": args.batch,
        "rows": rows,
        "ratios": e2e["ratios"],
        "failed": e2e["failed"],
    }


def format_table(report: dict[str, Any]) -> str:
    ss, fs = report["frame_shape"]
    lines = [f"{report['device']}, torch {report['torch']}, frames {ss}x{fs} ({ss * fs / 1e6:.2f} Mpx), "
             f"batch {report['batch_size']}", "", f"{'measurement':<52} {'frames':>7} {'frames/s':>10} {'RSS MB':>7}"]
    lines.append("-" * len(lines[-1]))
    for row in report["rows"]:
        rss = f"{row['peak_rss_mb']:.0f}" if "peak_rss_mb" in row else ""
        lines.append(f"{row['what']:<52} {row['frames']:>7} {row['frames_per_second']:>10.1f} {rss:>7}")
    lines += [f"{label}: {value:.2f}x" for label, value in report["ratios"].items()]
    lines += [f"failed: {name}: {why}" for name, why in report["failed"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cpu")
    parser.add_argument("--model", default=None, help="checkpoint or shipped model (default: shipped)")
    parser.add_argument("--detector", default="agipd1m")
    parser.add_argument("--size", type=int, default=None, help="square side, for resizable detectors")
    parser.add_argument("--distinct", type=int, default=8, help="distinct simulated frames")
    parser.add_argument("--pool", type=int, default=256, help="frames held in memory, cycled through")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hit-rate", type=float, default=0.3)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per veto measurement")
    parser.add_argument("--e2e-frames", type=int, default=512, help="frames of the end-to-end file")
    parser.add_argument("--quick", action="store_true", help="tiny 64x64 frames, short timings (tests, CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    args = parser.parse_args(argv)
    if args.quick:
        args.detector, args.size, args.distinct, args.pool, args.batch = "square512", 64, 4, 8, 4
        args.seconds, args.e2e_frames = 0.2, 8
    with tempfile.TemporaryDirectory(prefix="sfx_cnnhit_gpu_check_") as tmp:
        report = gpu_check(args, args.workdir or Path(tmp))
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
