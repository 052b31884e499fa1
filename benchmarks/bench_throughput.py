"""Speed steps of the default veto path, each measured against the one before in the same run.

Frames: simulated 1-Mpx AGIPD-like frames (16 modules of 512x128 stacked along ss, 128 ASIC panels;
``--detector square512`` for 512x512), 25 % hits, the same frames for every variant. Rounds
interleave the variants and the best round counts (other processes only ever add time); both wall
time and CPU time (all threads) per frame are printed, and frames/s as a ratio to OM's compiled
peakfinder8 on the same frames (one core).

Steps (``docs/throughput.md`` quotes the output):

1. the model as trained (batch norm, NCHW), one frame at a time;
2. batched (``--batch``);
3. batch norm folded into the convolutions;
4. channels_last memory layout and a reused input buffer: 3 + 4 are ``load_model(optimize=True)``,
   the shipped path, timed through ``CnnHitFinder.hit_probability`` (``precision="float32"``);
5. bfloat16 weights and input (``CnnHitFinder(precision="bfloat16")``, what ``"auto"`` picks on CPUs
   with AVX512-BF16/AMX; agreement with float32 printed);
6. ``--compile``: ``torch.compile`` (inductor; needs a C++ compiler; compile time printed);
7. batch sizes (``--sweep``), preprocessing and forward pass alone;
8. I/O: ``reduce_run`` on a compressed CXI file (veto only) with the reader thread off / on; the
   whole job with 25 % hits and each compression of the reduced CXI; HDF5 chunk cache sizing for
   multi-frame chunks.

Thread settings: run it with ``--threads 1`` and ``--threads 2`` (``torch.set_num_threads``).

    .venv/bin/python benchmarks/bench_throughput.py [--detector agipd1m] [--frames 32] [--batch 16]
        [--threads N] [--rounds 3] [--compile] [--sweep] [--no-io] [--model M]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import torch

from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.hdf5 import cache_bytes_for, open_hdf5
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.models.checkpoint import load_model
from sfx_cnnhit.models.hitnet import fuse_conv_bn_
from sfx_cnnhit.models.preprocess import panel_layout_for, preprocess
from sfx_cnnhit.models.zoo import hit_probability
from sfx_cnnhit.pipeline.benchmark import PEAKFINDER8_SETTINGS, benchmark_model, om_peakfinder8
from sfx_cnnhit.pipeline.reduce import reduce_run
from sfx_cnnhit.simulate import SimulationConfig, Simulator

Run = Callable[[], object]


class Timer:
    """Best wall and CPU seconds of each named variant over interleaved rounds."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[float, float]] = {}
        self.walls: dict[str, list[float]] = {}

    def measure(self, name: str, run: Run) -> None:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        old = self.best.get(name, (np.inf, np.inf))
        self.best[name] = (min(old[0], wall), min(old[1], cpu))
        self.walls.setdefault(name, []).append(wall)

    def rounds(self, variants: dict[str, Run], rounds: int) -> None:
        for run in variants.values():  # warm-up: allocations, oneDNN primitives, numba
            run()
        for _ in range(rounds):
            for name, run in variants.items():
                self.measure(name, run)


def simulate(detector: str, n_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, object]:
    """``n_frames`` frames (8 distinct ones repeated), one static mask for all, and the geometry."""
    sim = Simulator(SimulationConfig().with_overrides(detector__name=detector), seed=seed, split="test")
    batch = sim.generate(sim.labels_for(min(8, n_frames), hit_rate=0.25))
    take = np.arange(n_frames) % len(batch)
    mask = np.logical_and.reduce(batch.mask, axis=0)
    masks = np.ascontiguousarray(np.broadcast_to(mask, (n_frames, *mask.shape)))
    return np.ascontiguousarray(batch.data[take]), masks, sim.geometry


def veto_loop(model: torch.nn.Module, spec, layout, data, mask, batch: int, *, channels_last: bool
              ) -> Callable[[], np.ndarray]:
    """Preprocessing + forward pass + P(hit) over all frames, ``batch`` at a time."""

    def run() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(data), batch):
                x = preprocess(data[i : i + batch], mask[i : i + batch], spec.preprocess, layout)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(hit_probability(torch.softmax(model(x).float(), dim=1), spec).numpy())
        return np.concatenate(out)

    return run


def om_loop(finder: Peakfinder8Finder, data: np.ndarray, mask: np.ndarray) -> Run | None:
    try:
        call = om_peakfinder8(finder)
    except ImportError:
        return None

    def run() -> None:
        for frame, good in zip(data, mask, strict=True):
            call(frame, good)

    return run


def print_table(timer: Timer, n_frames: int, reference: str | None, title: str) -> None:
    print(f"\n{title}")
    print(f"{'variant':<44} {'wall ms/frame':>13} {'CPU ms/frame':>12} {'frames/s':>9} {'x OM pf8':>8} "
          f"{'median wall':>11}")
    ref = timer.best[reference][0] if reference in timer.best else None
    for name, (wall, cpu) in timer.best.items():
        ratio = f"{ref / wall:.2f}" if ref else ""
        print(f"{name:<44} {1e3 * wall / n_frames:13.2f} {1e3 * cpu / n_frames:12.2f} {n_frames / wall:9.1f} "
              f"{ratio:>8} {1e3 * statistics.median(timer.walls[name]) / n_frames:11.2f}")


def agreement(reference: np.ndarray, other: np.ndarray, threshold: float = 0.5) -> str:
    return (f"max |dP(hit)| {np.abs(reference - other).max():.2e}, decisions changed at {threshold}: "
            f"{int(np.sum((reference >= threshold) != (other >= threshold)))} of {len(reference)}")


def io_steps(
    args: argparse.Namespace, data: np.ndarray, mask: np.ndarray, geometry, model_path: str, work: Path
) -> None:
    """Reader thread off/on in reduce_run, hit compression, and chunk-cache sizing, on compressed files."""
    n = len(data)
    path = work / "io_run.cxi"
    frames16 = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=frames16, chunks=(1, *data.shape[1:]),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
    finder = CnnHitFinder(model=model_path, threshold=1.0, panel_layout=panel_layout_for(geometry),
                          batch_size=args.batch)
    timer = Timer()

    def read_only() -> None:
        for _ in open_frames([path], geometry=geometry).batches(args.batch):
            pass

    def reduce(prefetch: int) -> Run:
        def run() -> None:
            reduce_run(open_frames([path], geometry=geometry), finder, work / f"out{prefetch}", method="cnn",
                       batch_size=args.batch, prefetch=prefetch, overwrite=True, compression="none")

        return run

    variants = {"read + mask only (bitshuffle-LZ4 uint16)": read_only,
                "reduce_run veto only, reader thread off": reduce(0),
                "reduce_run veto only, reader thread on (1 ahead)": reduce(1),
                "reduce_run veto only, reader thread on (2 ahead)": reduce(2)}
    timer.rounds(variants, args.rounds)
    print_table(timer, n, None, f"I/O overlapped with compute: {n} frames from a compressed CXI file, no hits")

    # The whole job on a quarter of hits: peakfinder8 and Grad-CAM on them, hits written compressed.
    scores = finder.hit_probability(data, mask)
    hitting = finder.with_threshold(float(np.quantile(scores, 0.75)))
    pf8 = Peakfinder8Finder.from_geometry(geometry, Peakfinder8Params(**PEAKFINDER8_SETTINGS))
    hitting.peakfinder = pf8
    explainers = (hitting.explainer("gradcam"),)

    def full(compression: str) -> Run:
        def run() -> None:
            reduce_run(open_frames([path], geometry=geometry), hitting, work / f"full_{compression}", method="cnn",
                       explainers=explainers, batch_size=args.batch, overwrite=True, compression=compression)

        return run

    timer = Timer()
    timer.rounds({f"reduce_run, 25 % hits, output {c}": full(c) for c in ("gzip", "bitshuffle-lz4", "none")},
                 args.rounds)
    print_table(timer, n, None, "writing hits: veto + peakfinder8 + Grad-CAM on 25 % hits, reduced CXI compression")

    chunked = work / "chunked.h5"
    with h5py.File(chunked, "w") as f:
        dset = f.create_dataset("/data", data=frames16, chunks=(8, *data.shape[1:]), compression="gzip")
        sized = cache_bytes_for(dset)
    timer = Timer()

    def read_batches(cache: int) -> Run:
        def run() -> None:
            with open_hdf5(chunked, cache_bytes=cache) as f:
                dset = f["/data"]
                for i in range(0, n, 6):  # batches of 6 frames across chunks of 8
                    dset[i : i + 6]

        return run

    timer.rounds({"chunk cache 1 MiB (HDF5 default)": read_batches(2**20),
                  f"chunk cache {sized / 2**20:.0f} MiB (cache_bytes_for: 2 chunks)": read_batches(sized)}, args.rounds)
    print_table(timer, n, None, "HDF5 chunk cache: gzip chunks of 8 frames read in batches of 6")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="agipd1m")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--sweep", action="store_true", help="also time batch sizes 1..64")
    parser.add_argument("--no-io", action="store_true", help="skip the I/O steps")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data, mask, geometry = simulate(args.detector, args.frames)
    layout = panel_layout_for(geometry)
    with tempfile.TemporaryDirectory(prefix="sfx_cnnhit_speed_") as tmp:
        work = Path(tmp)
        info = benchmark_model(args.model, work)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}; "
              f"{args.frames} frames {data.shape[1]}x{data.shape[2]}; model {info['architecture']} "
              f"({'trained' if info['trained'] else 'untrained stand-in'}), batch {args.batch}")
        trained, spec = load_model(info["path"])  # as trained: batch norm, NCHW
        folded = fuse_conv_bn_(copy.deepcopy(trained))
        shipped = CnnHitFinder(model=info["path"], panel_layout=layout, batch_size=args.batch, device="cpu",
                               precision="float32")
        fast = CnnHitFinder(model=info["path"], panel_layout=layout, batch_size=args.batch, device="cpu",
                            precision="bfloat16")
        variants: dict[str, Run] = {}
        pf8 = Peakfinder8Finder.from_geometry(geometry, Peakfinder8Params(**PEAKFINDER8_SETTINGS))
        om = om_loop(pf8, data, mask)
        if om is not None:
            variants["OM peakfinder8 (compiled, one core)"] = om
        variants["1. as trained, one frame at a time"] = veto_loop(trained, spec, layout, data, mask, 1,
                                                                  channels_last=False)
        variants[f"2. + batch {args.batch}"] = veto_loop(trained, spec, layout, data, mask, args.batch,
                                                        channels_last=False)
        variants["3. + batch norm folded"] = veto_loop(folded, spec, layout, data, mask, args.batch,
                                                       channels_last=False)
        variants["4. + channels_last, reused buffer (float32)"] = lambda: shipped.hit_probability(data, mask)
        variants["5. + bfloat16 (CnnHitFinder precision)"] = lambda: fast.hit_probability(data, mask)
        if args.compile:
            t0 = time.perf_counter()
            compiled = torch.compile(shipped.model)
            compiled_run = veto_loop(compiled, spec, layout, data, mask, args.batch, channels_last=True)
            compiled_run()
            print(f"torch.compile: first call (compilation) {time.perf_counter() - t0:.0f} s")
            variants["6. + torch.compile (float32)"] = compiled_run
        timer = Timer()
        timer.rounds(variants, args.rounds)
        reference = "OM peakfinder8 (compiled, one core)" if om is not None else None
        print_table(timer, len(data), reference, "veto (preprocessing + forward pass + P(hit)), best of rounds")
        p32 = shipped.hit_probability(data, mask)
        print(f"bfloat16 vs float32: {agreement(p32, fast.hit_probability(data, mask))}")

        x = preprocess(data[: args.batch], mask[: args.batch], spec.preprocess, layout)
        xc = x.contiguous(memory_format=torch.channels_last)
        parts = Timer()

        def forward(model: torch.nn.Module, x: torch.Tensor) -> Run:
            def run() -> None:
                with torch.inference_mode():
                    model(x)

            return run

        parts.rounds({"preprocessing alone": lambda: preprocess(data[: args.batch], mask[: args.batch],
                                                                 spec.preprocess, layout),
                      "forward pass alone (float32, folded, CL)": forward(shipped.model, xc),
                      "forward pass alone (bfloat16)": forward(fast.forward_model, xc.to(torch.bfloat16))},
                     args.rounds)
        print_table(parts, args.batch, None, f"parts, one batch of {args.batch}")
        if args.sweep:
            sweep = Timer()
            sweep.rounds({f"batch {b}": veto_loop(shipped.model, spec, layout, data, mask, b, channels_last=True)
                          for b in (1, 4, 8, 16, 32, 64) if b <= len(data)}, args.rounds)
            print_table(sweep, len(data), None, "batch size (shipped path)")
        if not args.no_io:
            io_steps(args, data, mask, geometry, info["path"], work)


if __name__ == "__main__":
    main()
