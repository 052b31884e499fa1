"""Memory stays flat while a long run streams through the CNN veto (issue 9: 20 000 frames).

Writes a 20 000-frame CXI file cheaply: 64 simulated 512x512 frames (25 % hits), uint16, compressed
with bitshuffle-LZ4 once each, then repeated with HDF5 direct chunk writes (about 4 GB on disk, in a
temporary folder removed at the end). Then streams it through the default model's veto, batch by
batch through the prefetching reader (``--mode veto``), or through the whole ``reduce`` job
(``--mode reduce``: veto, peakfinder8 and Grad-CAM on hits, writing the reduced CXI; with an
untrained stand-in model every frame is a hit, the worst case), and prints the
resident memory (RSS) at the start, every ``--every`` frames and at the end, with the peak. Flat =
bounded: memory grows in the first batches (buffers, allocator pools) and then stays level.

    .venv/bin/python benchmarks/bench_memory.py [--frames 20000] [--every 2000] [--mode veto|reduce]
        [--batch 16] [--threads N] [--model M] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from sfx_cnnhit.pipeline.benchmark import benchmark_model, current_rss_mb, peak_rss_mb

DATA_PATH = "/entry_1/data_1/data"


def write_repeated_file(path: Path, n_frames: int, *, distinct: int = 64, seed: int = 0) -> float:
    """``n_frames`` 512x512 uint16 frames, the ``distinct`` simulated ones repeated; returns GB on disk."""
    from sfx_cnnhit.simulate import SimulationConfig, Simulator

    sim = Simulator(SimulationConfig().with_overrides(detector__name="square512"), seed=seed, split="test")
    batch = sim.generate(sim.labels_for(distinct, hit_rate=0.25))
    frames = np.clip(np.rint(batch.data), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    shape = frames.shape[1:]
    compression = hdf5plugin.Bitshuffle(cname="lz4")
    with h5py.File(path, "w") as f:
        # Compress each distinct frame once, then copy its compressed chunk into every repetition.
        pool = f.create_dataset("/pool", data=frames, chunks=(1, *shape), **compression)
        chunks = [pool.id.read_direct_chunk((i, 0, 0)) for i in range(distinct)]
        data = f.create_dataset(DATA_PATH, shape=(n_frames, *shape), dtype=np.uint16, chunks=(1, *shape),
                                **compression)
        for i in range(n_frames):
            filter_mask, chunk = chunks[i % distinct]
            data.id.write_direct_chunk((i, 0, 0), chunk, filter_mask)
        del f["/pool"]
    return path.stat().st_size / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=2_000, help="print the RSS every this many frames")
    parser.add_argument("--mode", choices=("veto", "reduce"), default="veto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--model", default=None, help="checkpoint or shipped model (default: the shipped one)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the file (default: temporary)")
    args = parser.parse_args()

    import torch

    from sfx_cnnhit.finders.cnn import CnnHitFinder
    from sfx_cnnhit.io.prefetch import prefetched
    from sfx_cnnhit.io.sources import open_frames
    from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sfx_cnnhit_mem_", dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        size_gb = write_repeated_file(work / "long_run.cxi", args.frames)
        print(f"wrote {args.frames} frames (512x512 uint16, bitshuffle-LZ4, {size_gb:.2f} GB) in "
              f"{time.perf_counter() - t0:.0f} s")
        model = benchmark_model(args.model, work)
        print(f"model: {model['architecture']} ({'trained' if model['trained'] else 'untrained stand-in'}); "
              f"mode {args.mode}, batch {args.batch}, torch threads {torch.get_num_threads()}")
        source = open_frames([work / "long_run.cxi"])
        rows: list[tuple[int, float]] = []
        t0 = time.perf_counter()

        def report(done: int, _total: int = 0) -> None:
            if done == 0:
                return
            if done // args.every > rows[-1][0] // args.every or done >= args.frames:
                rows.append((done, current_rss_mb()))
                rate = done / (time.perf_counter() - t0)
                print(f"  {done:>6} frames  RSS {rows[-1][1]:7.1f} MB  peak {peak_rss_mb():7.1f} MB  "
                      f"{rate:6.1f} frames/s", flush=True)

        rows.append((0, current_rss_mb()))
        print(f"start (model loaded, file open): RSS {rows[0][1]:.1f} MB")
        if args.mode == "veto":
            finder = CnnHitFinder(model=model["path"], batch_size=args.batch)
            done = 0
            for batch in prefetched(source.batches(args.batch)):
                finder.hit_probability(batch.data, batch.mask)
                done += len(batch)
                report(done)
        else:
            # An untrained stand-in passes every frame (threshold 0): the worst case for memory.
            summary = cnn_reduce(source, work / "reduced", model=model["path"], batch_size=args.batch, progress=report,
                                 threshold=None if model["trained"] else 0.0)
            print(f"reduce: {summary.hits} hits written with their peaks and Grad-CAM maps")
        first = next((rss for done, rss in rows if done >= args.every), rows[-1][1])
        print(f"end: RSS {rows[-1][1]:.1f} MB (start {rows[0][1]:.1f} MB, after {args.every} frames {first:.1f} MB; "
              f"growth since then {rows[-1][1] - first:+.1f} MB), peak {peak_rss_mb():.1f} MB, "
              f"{args.frames / (time.perf_counter() - t0):.1f} frames/s")


if __name__ == "__main__":
    main()
