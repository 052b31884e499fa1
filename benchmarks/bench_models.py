"""Frames per second of the CNN veto (preprocessing + forward pass) on this CPU.

Measures, in one run and on the same synthetic frames: HitNet (our default) and HitNet-lite on
512x512 frames and on 1-Mpx frames (a 1024x1024 slab and an AGIPD-like 16-panel 8192x128 slab), with
batch norm folded and channels_last as ``load_model(..., optimize=True)`` gives (and HitNet unfused
once); the seed's AlexNet and ResNet-101 on 512x512 frames; and, where installed, OM's compiled
peakfinder8 on the 1024x1024 frames (one core), the reference of issue 9. Prints ms/frame for
preprocessing and forward pass, frames/s, and ratios. Weights are random: speed does not depend on them.

    .venv/bin/python benchmarks/bench_models.py [--threads 2] [--batch 32] [--rounds 3] [--repeats 6] [--bf16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.models.hitnet import fuse_conv_bn_
from sfx_cnnhit.models.preprocess import plan_input, preprocess
from sfx_cnnhit.models.zoo import create_model


def make_frames(n: int, shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy frames (pedestal 40 ADU, read noise 3 ADU) with 50 bright spots, and a 1 % random mask."""
    rng = np.random.default_rng(seed)
    frames = (40.0 + 3.0 * rng.standard_normal((n, *shape))).astype(np.float32)
    for i in range(n):
        for s, f in zip(rng.integers(0, shape[0] - 2, 50), rng.integers(0, shape[1] - 2, 50), strict=True):
            frames[i, s : s + 2, f : f + 2] += rng.uniform(50, 2000)
    mask = rng.random(shape) > 0.01
    return frames, mask


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, min) seconds of ``fn`` over ``repeats`` calls after one warm-up call.

    The minimum is the figure to quote on a shared machine: other processes only ever add time.
    """
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


class CnnCase:
    """One model on one kind of frame: preprocessing + forward pass, timed per frame."""

    def __init__(self, name: str, frames: np.ndarray, mask: np.ndarray, layout: PanelLayout | None, batch: int,
                 *, optimize: bool, bf16: bool = False) -> None:
        torch.manual_seed(0)
        self.model, self.spec = create_model(name)
        self.model.eval()
        if optimize:
            fuse_conv_bn_(self.model)
            self.model.to(memory_format=torch.channels_last)
        self.data, self.mask, self.layout, self.batch, self.bf16 = frames[:batch], mask, layout, batch, bf16
        self.bin = plan_input(frames.shape[1:], self.spec.preprocess, layout).bin_factor
        size = self.spec.input_size
        self.buffer = torch.empty(batch, 1, size, size)  # reused, as a streaming veto does
        self.best: dict[str, float] = {}
        self.medians: list[float] = []

    def _prep(self) -> torch.Tensor:
        return preprocess(self.data, self.mask, self.spec.preprocess, self.layout, out=self.buffer)

    def _forward(self, x: torch.Tensor) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            self.model(x)

    def measure(self, repeats: int) -> None:
        """One round: best-of-``repeats`` per part; keeps the best over rounds."""
        x = self._prep()
        times = {
            "prep_ms": timed(self._prep, repeats)[1],
            "forward_ms": timed(lambda: self._forward(x), repeats)[1],
        }
        median, times["total_ms"] = timed(lambda: self._forward(self._prep()), repeats)
        self.medians.append(1e3 * median / self.batch)
        for key, value in times.items():
            self.best[key] = min(self.best.get(key, np.inf), 1e3 * value / self.batch)

    @property
    def fps(self) -> float:
        return 1e3 / self.best["total_ms"]


def bench_om(frames: np.ndarray, mask: np.ndarray, repeats: int) -> float | None:
    """Seconds per frame of OM's compiled peakfinder8 (one core), or None if OM is not installed."""
    try:
        from om.algorithms._crystallography import peakfinder_8
    except ImportError:
        return None
    ny, nx = frames.shape[1:]
    yy, xx = np.mgrid[:ny, :nx]
    radius = np.hypot(yy - ny / 2, xx - nx / 2).astype(np.float32)
    mask8 = mask.astype(np.int8)
    imgs = [np.ascontiguousarray(f) for f in frames[:8]]

    def run() -> None:
        for img in imgs:
            peakfinder_8(2048, img, mask8, radius, 0, None, None, 0, nx, ny, 1, 1, 100.0, 5.0, 2, 200, 3)

    return timed(run, repeats)[1] / len(imgs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="HitNet batch size")
    parser.add_argument("--alexnet-batch", type=int, default=8)
    parser.add_argument("--resnet-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time HitNet under bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")

    f512, m512 = make_frames(args.batch, (512, 512))
    f1m, m1m = make_frames(args.batch, (1024, 1024), seed=1)
    agipd = PanelLayout.regular(16, 1, 512, 128)
    fag, mag = make_frames(args.batch, (8192, 128), seed=2)
    cases: dict[str, CnnCase] = {}
    for label, frames, mask, layout in (
        ("512x512", f512, m512, None),
        ("1024x1024", f1m, m1m, None),
        ("AGIPD-like 16x(512x128)", fag, mag, agipd),
    ):
        for name in ("hitnet", "hitnet_lite"):
            cases[f"{name} {label}"] = CnnCase(name, frames, mask, layout, args.batch, optimize=True)
        if args.bf16:
            cases[f"hitnet bf16 {label}"] = CnnCase("hitnet", frames, mask, layout, args.batch, optimize=True,
                                                    bf16=True)
    cases["hitnet unfused BN 512x512"] = CnnCase("hitnet", f512, m512, None, args.batch, optimize=False)
    cases["alexnet 512x512"] = CnnCase("alexnet", f512, m512, None, args.alexnet_batch, optimize=False)
    cases["resnet101 512x512"] = CnnCase("resnet101", f512, m512, None, args.resnet_batch, optimize=False)
    om_best = np.inf
    for _ in range(args.rounds):  # rounds interleave the cases, so a busy spell hits all of them alike
        for name, case in cases.items():
            case.measure(args.repeats if not name.startswith("resnet") else max(2, args.repeats // 3))
        om_best = min(om_best, bench_om(f1m, m1m, args.repeats) or np.inf)

    print(f"\nms per frame, best over {args.rounds} rounds x repeats (other processes only add time); "
          "frames/s = 1 / total; 'median' (of the totals) shows how busy the machine was.")
    print(f"{'model / frames':38s} {'batch':>5s} {'bin':>4s} {'prep':>7s} {'forward':>8s} {'total':>7s} "
          f"{'median':>7s} {'frames/s':>9s}")
    for name, c in cases.items():
        print(f"{name:38s} {c.batch:5d} {c.bin:4d} {c.best['prep_ms']:7.2f} {c.best['forward_ms']:8.2f} "
              f"{c.best['total_ms']:7.2f} {statistics.median(c.medians):7.2f} {c.fps:9.1f}")

    fast512 = cases["hitnet 512x512"].fps
    print("\nratios (frames/s, same run):")
    print(f"  hitnet / alexnet     at 512x512: {fast512 / cases['alexnet 512x512'].fps:7.1f}x")
    print(f"  hitnet / resnet101   at 512x512: {fast512 / cases['resnet101 512x512'].fps:7.1f}x")
    if not np.isfinite(om_best):
        print("  OM's peakfinder8 not installed: no ratio to it")
        return
    print(f"  OM peakfinder8 (1 core) on 1024x1024: {1e3 * om_best:.2f} ms/frame, {1 / om_best:.1f} frames/s")
    for name in ("hitnet", "hitnet_lite"):
        for label in ("1024x1024", "AGIPD-like 16x(512x128)"):
            fps = cases[f"{name} {label}"].fps
            print(f"  {name} {label} / OM peakfinder8 1024x1024: {fps * om_best:7.1f}x")


if __name__ == "__main__":
    main()
