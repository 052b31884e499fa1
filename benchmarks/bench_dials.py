"""Frames per second: built-in dispersion spot finder vs real DIALS, on the same frames, in one run.

Usage: ``python benchmarks/bench_dials.py [--frames 16] [--sizes 512 1024]``

For each frame size and algorithm it prints the built-in finder's frames/s, real DIALS's frames/s
counting only the time inside DIALS (``seconds_in_dials``) and counting the whole call (process start,
imports, frame hand-over), the ratios built-in / DIALS, and whether the spot counts agree.
Real DIALS columns are skipped when DIALS is not installed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sfx_cnnhit.finders.dials import DialsSpotFinder, dials_available
from sfx_cnnhit.finders.dispersion import ALGORITHMS, DialsParams, DispersionSpotFinder


def make_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` Poisson frames (background 0.5-20 photons) with 0-60 Gaussian spots each, float32."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, size, size), np.float32)
    half = 4
    ss, fs = np.mgrid[-half : half + 1, -half : half + 1]
    for i in range(n):
        expected = np.full((size, size), rng.uniform(0.5, 20.0))
        for _ in range(rng.integers(0, 61)):
            c_ss, c_fs = rng.integers(half, size - half, 2)
            g = np.exp(-(ss**2 + fs**2) / (2 * rng.uniform(0.6, 1.2) ** 2))
            box = (slice(c_ss - half, c_ss + half + 1), slice(c_fs - half, c_fs + half + 1))
            expected[box] += rng.uniform(50, 2000) * g / g.sum()
        frames[i] = rng.poisson(expected)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per size (default 16)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square frame sizes")
    args = parser.parse_args()
    real = dials_available()
    if not real:
        print("real DIALS not installed: built-in finder only (apt-get install -y dials)")
    print(f"{'size':>5} {'algorithm':<20} {'built-in f/s':>12} {'DIALS f/s':>10} {'incl. start':>11} "
          f"{'ratio':>6} {'ratio incl.':>11}  counts")
    for size in args.sizes:
        frames = make_frames(args.frames, size, seed=size)
        for algorithm in ALGORITHMS:
            params = DialsParams(algorithm=algorithm)
            built_in = DispersionSpotFinder(params)
            built_in.classify(frames[:1])  # warm-up
            start = time.perf_counter()
            ours = built_in.classify(frames)
            ours_fps = len(frames) / (time.perf_counter() - start)
            line = f"{size:>5} {algorithm:<20} {ours_fps:>12.1f}"
            if real:
                dials = DialsSpotFinder(params)
                start = time.perf_counter()
                theirs = dials.classify(frames)
                wall = time.perf_counter() - start
                dials_fps, wall_fps = len(frames) / dials.seconds_in_dials, len(frames) / wall
                agree = "equal" if np.array_equal(ours.scores, theirs.scores) else "DIFFER"
                line += (f" {dials_fps:>10.1f} {wall_fps:>11.1f} {ours_fps / dials_fps:>6.2f} "
                         f"{ours_fps / wall_fps:>11.2f}  {agree} (total {int(ours.scores.sum())} spots)")
            print(line, flush=True)


if __name__ == "__main__":
    main()
