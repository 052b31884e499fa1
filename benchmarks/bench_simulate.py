"""Simulator throughput: frames/s at 512x512 and on a ~1 Mpx multi-panel detector, and the time to
write a DiffraNet-sized set (25 000 frames of 512x512, five equal classes).

Every figure is printed next to a reference measured in the same run: the cost of the Poisson draw
alone for one frame of the same size (the floor any photon-counting simulator pays), and the
issue's targets (20 frames/s at 512x512 and 5 frames/s at 1 Mpx, on 2 cores). On a shared machine
wall-clock rates depend on the load, so the CPU time per frame of a single process is printed too.

Usage: .venv/bin/python benchmarks/bench_simulate.py [--frames 200] [--file-frames 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sfx_cnnhit.simulate import SimulationConfig, Simulator
from sfx_cnnhit.simulate.output import simulate_to_file

DIFFRANET_FRAMES = 25_000


def poisson_floor(shape: tuple[int, int], repeats: int = 20) -> float:
    """Seconds per frame for one Poisson draw at a typical background (2 photons/pixel)."""
    rng = np.random.default_rng(0)
    lam = np.full(shape, 2.0)
    rng.poisson(lam)
    start = time.perf_counter()
    for _ in range(repeats):
        rng.poisson(lam)
    return (time.perf_counter() - start) / repeats


def frames_per_second(config: SimulationConfig, n_frames: int, workers: int) -> tuple[float, float]:
    """Wall-clock frames/s, and CPU seconds per frame of this process (meaningful for workers=1)."""
    with Simulator(config, seed=1, workers=workers) as sim:
        sim.generate(sim.labels_for(2 * workers))  # warm caches and worker processes
        start, cpu = time.perf_counter(), time.process_time()
        done = sum(len(batch) for batch in sim.stream(n_frames, batch_size=32))
        return done / (time.perf_counter() - start), (time.process_time() - cpu) / done


def file_rate(config: SimulationConfig, n_frames: int, workers: int, compression: str) -> tuple[float, float]:
    """Frames/s and MB/frame of ``simulate_to_file`` (simulation, compression and writing)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.cxi"
        start = time.perf_counter()
        simulate_to_file(path, n_frames, 1, config, workers=workers, compression=compression)
        elapsed = time.perf_counter() - start
        return n_frames / elapsed, path.stat().st_size / n_frames / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="frames per throughput measurement")
    parser.add_argument("--file-frames", type=int, default=256, help="frames written for the file-rate subset")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("classes in equal shares (DiffraNet); frames/s measured over a stream of frames\n")

    layouts = {
        "square512 (512x512)": (SimulationConfig(), 20.0),
        "agipd1m (1.05 Mpx, 128 panels)": (SimulationConfig().with_overrides(detector__name="agipd1m"), 5.0),
    }
    for label, (config, target) in layouts.items():
        shape = Simulator(config).frame_shape
        floor = poisson_floor(shape)
        print(f"{label}: Poisson draw alone {1 / floor:.1f} frames/s")
        n = args.frames if "512" in label else max(args.frames // 4, 20)
        for workers in (1, 2):
            fps, cpu = frames_per_second(config, n, workers)
            print(
                f"  workers={workers}: {fps:6.1f} frames/s  ({fps / target:.2f} x target {target:.0f}, "
                f"{fps * floor:.2f} x the Poisson-only rate)"
            )
            if workers == 1:
                print(
                    f"    CPU time {cpu * 1e3:.1f} ms/frame: {1 / cpu:.1f} frames/s per free core, "
                    f"{2 / cpu:.1f} on 2 free cores ({2 / cpu / target:.2f} x target)"
                )

    print(f"\nDiffraNet-sized set ({DIFFRANET_FRAMES} frames, 512x512), extrapolated from {args.file_frames} written:")
    for compression in ("gzip", "bitshuffle-lz4"):
        for workers in (1, 2):
            fps, mb = file_rate(SimulationConfig(), args.file_frames, workers, compression)
            minutes = DIFFRANET_FRAMES / fps / 60
            print(
                f"  {compression:15s} workers={workers}: {fps:6.1f} frames/s, {mb:.3f} MB/frame -> "
                f"{minutes:5.1f} min, {mb * DIFFRANET_FRAMES / 1e3:.1f} GB"
            )


if __name__ == "__main__":
    main()
