"""Speed of our peakfinder8 against OM 23.8.3's compiled one on the same 1-Mpx frames, one core.

Frames: 1024x1024 slabs with Gaussian spots on a Poisson background (``tests/synthetic.py``), cut
into several ASIC layouts. Each frame is run through both finders in turn, ``--repeats`` times;
the per-frame minimum is kept (robust against other load on the machine). Prints ms/frame,
frames/s and the ratio ours/OM in frames/s (> 1: ours is faster), and checks the peak counts agree.

Usage: ``python benchmarks/bench_peakfinder8.py [--frames 10] [--repeats 5] [--fast-mode]``.
Needs ``pip install --no-deps ondamonitor==23.8.3``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests/synthetic.py

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from tests.synthetic import make_frame

SIZE = 1024
LAYOUTS = {
    "1 ASIC of 1024x1024": PanelLayout.asic_grid(1024, 1024, 1, 1),
    "2x2 ASICs of 512x512": PanelLayout.asic_grid(512, 512, 2, 2),
    "8x2 ASICs of 128x512": PanelLayout.asic_grid(128, 512, 8, 2),
    "16 modules of 1024x64": PanelLayout.asic_grid(1024, 64, 1, 16),
}
PARAMS = Peakfinder8Params(adc_threshold=100.0, minimum_snr=5.0, min_pixel_count=2, max_pixel_count=200,
                           local_bg_radius=3)


def om_runner(peakfinder_8, finder: Peakfinder8Finder):
    """OM's compiled peakfinder8 with the same detector, parameters and (fast mode) pixel sample."""
    params, layout, radius = finder.params, finder.layout, finder.radius_map.copy()
    mask = np.ones(radius.shape, np.int8)
    pidx, rbin = finder.radial_sample if params.fast_mode else (None, None)
    n_sample = 0 if pidx is None else int(pidx.size)

    def run(frame: np.ndarray) -> int:
        return len(peakfinder_8(params.max_num_peaks, frame, mask, radius, n_sample, pidx, rbin,
                                int(params.fast_mode), layout.asic_nx, layout.asic_ny, layout.nasics_x,
                                layout.nasics_y, params.adc_threshold, params.minimum_snr,
                                params.min_pixel_count, params.max_pixel_count, params.local_bg_radius)[0])

    return run


def best_times(runners, frames: list[np.ndarray], repeats: int) -> tuple[np.ndarray, list[list[int]]]:
    """Per-runner, per-frame minimum wall time (s) over ``repeats`` runs, and each runner's peak counts.

    The runners take turns on every frame, so both see the same load on the machine.
    """
    times = np.full((len(runners), len(frames)), np.inf)
    counts: list[list[int]] = [[] for _ in runners]
    for r in range(repeats):
        for i, frame in enumerate(frames):
            for k, run in enumerate(runners):
                t0 = time.perf_counter()
                n = run(frame)
                times[k, i] = min(times[k, i], time.perf_counter() - t0)
                if r == 0:
                    counts[k].append(n)
    return times, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10, help="frames per layout")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each frame; the fastest counts")
    parser.add_argument("--fast-mode", action="store_true", help="also time OM's fast mode (sampled statistics)")
    args = parser.parse_args()
    try:
        from om.algorithms._crystallography import peakfinder_8
    except ImportError:
        sys.exit("OM's compiled peakfinder8 is missing: pip install --no-deps ondamonitor==23.8.3")

    rng = np.random.default_rng(0)
    frames = [make_frame(rng, (SIZE, SIZE), n_spots=int(rng.integers(20, 150)), background=20.0,
                         beam_center=(511.7, 520.2)) for _ in range(args.frames)]
    radius = frames[0].radius
    data = [f.data for f in frames]
    variants = [(name, layout, PARAMS) for name, layout in LAYOUTS.items()]
    if args.fast_mode:
        fast = replace(PARAMS, fast_mode=True)
        variants += [(f"{name}, fast mode", layout, fast) for name, layout in LAYOUTS.items()]

    print(f"{args.frames} frames of {SIZE}x{SIZE}, best of {args.repeats} runs each, one core")
    print(f"{'layout':<32} {'ours ms':>8} {'OM ms':>8} {'ours f/s':>9} {'OM f/s':>8} {'ours/OM':>8} counts")
    ratios = []
    for name, layout, params in variants:
        finder = Peakfinder8Finder(params, radius_map=radius, layout=layout)
        finder.find_peaks(data[0])  # compile / load the cached kernels
        runners = [lambda frame, f=finder: f.find_peaks(frame).num_peaks, om_runner(peakfinder_8, finder)]
        (t_ours, t_om), (n_ours, n_om) = best_times(runners, data, args.repeats)
        ratio = t_om.sum() / t_ours.sum()
        ratios.append(ratio)
        agree = "equal" if n_ours == n_om else f"DIFFER on {sum(a != b for a, b in zip(n_ours, n_om, strict=True))}"
        print(f"{name:<32} {1e3 * t_ours.mean():8.2f} {1e3 * t_om.mean():8.2f} {1 / t_ours.mean():9.1f} "
              f"{1 / t_om.mean():8.1f} {ratio:8.2f} {agree}")
    print(f"ours/OM frames/s, geometric mean over layouts: {np.exp(np.mean(np.log(ratios))):.2f}")


if __name__ == "__main__":
    main()
