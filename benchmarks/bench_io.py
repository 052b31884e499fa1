"""Streaming benchmark of the frame reader: peak memory and frames/s against a raw h5py read.

Creates a CXI file of ``--frames`` uint16 frames (default 2000 of 1024x1024: sparse photon counts,
like SFX data, so gzip is realistic) in a temporary folder, then streams it twice, each time in a
fresh process so that peak RSS is the reader's own:

* ``open_frames(...).batches(chunk_size)``: float32 frames, masks, event ids and metadata;
* the reference, ``h5py`` reading ``dset[i:i + chunk_size]`` in the file's dtype, nothing else.

Usage: ``python benchmarks/bench_io.py [--frames 2000] [--size 1024] [--compression gzip|none]
[--chunk-size 64] [--keep DIR]``. Prints peak RSS (goal < 1 GB), frames/s and their ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def create(path: Path, frames: int, size: int, compression: str) -> float:
    """Write the test file one frame at a time; returns seconds taken."""
    rng = np.random.default_rng(0)
    opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compression == "gzip" else {}
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "/entry_1/data_1/data", shape=(frames, size, size), dtype=np.uint16, chunks=(1, size, size), **opts
        )
        ss, fs = np.mgrid[0:size, 0:size] - size / 2
        mean = 0.3 + 3.0 * np.exp(-np.hypot(ss, fs) / (size / 4))  # diffuse scattering, photons per pixel
        background = rng.poisson(mean).astype(np.uint16)
        for i in range(frames):
            frame = np.roll(background, i * 7, axis=1)
            spots = rng.integers(0, size, (40, 2))
            frame[spots[:, 0], spots[:, 1]] += rng.integers(50, 5000, 40).astype(np.uint16)
            ds[i] = frame
        f["/entry_1/experiment_identifier"] = [f"bench:{i}" for i in range(frames)]
        f["/LCLS/photon_energy_eV"] = np.full(frames, 9500.0)
    return time.perf_counter() - t0


def read(path: Path, mode: str, chunk_size: int) -> dict[str, float]:
    """Stream every frame once; returns frames, seconds and peak RSS (MiB) of this process."""
    from sfx_cnnhit.io.sources import open_frames  # imported before timing, in both modes

    t0 = time.perf_counter()
    n = 0
    checksum = 0.0
    if mode == "ours":
        for batch in open_frames([path]).batches(chunk_size):
            n += len(batch)
            checksum += float(batch.data[:, 0, 0].sum())
    else:
        with h5py.File(path, "r") as f:
            ds = f["/entry_1/data_1/data"]
            for start in range(0, ds.shape[0], chunk_size):
                block = ds[start : start + chunk_size]
                n += block.shape[0]
                checksum += float(block[:, 0, 0].sum())
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return {"frames": n, "seconds": seconds, "peak_rss_mib": peak_mib, "checksum": checksum}


def run_child(path: Path, mode: str, chunk_size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--path", str(path), "--chunk-size", str(chunk_size)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="folder to keep the test file in (default: a temporary one)")
    parser.add_argument("--child", choices=("ours", "h5py"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(read(args.path, args.child, args.chunk_size)))
        return

    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        path = Path(tmp) / "bench.cxi"
        made = create(path, args.frames, args.size, args.compression)
        size_gib = path.stat().st_size / 2**30
        raw_gib = args.frames * args.size * args.size * 2 / 2**30
        print(
            f"file: {args.frames} x {args.size}x{args.size} uint16, {args.compression}, chunks of one frame; "
            f"{size_gib:.2f} GiB on disk ({raw_gib:.2f} GiB raw), written in {made:.0f} s"
        )
        ref = run_child(path, "h5py", args.chunk_size)  # also warms the page cache for both runs
        ref = run_child(path, "h5py", args.chunk_size)
        ours = run_child(path, "ours", args.chunk_size)
    if ours["frames"] != ref["frames"] or ours["checksum"] != ref["checksum"]:
        raise SystemExit(f"mismatch: ours {ours} vs h5py {ref}")
    ours_fps, ref_fps = ours["frames"] / ours["seconds"], ref["frames"] / ref["seconds"]
    print(f"chunk_size = {args.chunk_size} frames")
    print(
        f"open_frames().batches(): {ours_fps:8.1f} frames/s, peak RSS {ours['peak_rss_mib']:7.1f} MiB "
        f"({'within' if ours['peak_rss_mib'] < 1024 else 'ABOVE'} the 1 GB goal)"
    )
    print(f"raw h5py reference     : {ref_fps:8.1f} frames/s, peak RSS {ref['peak_rss_mib']:7.1f} MiB")
    print(
        f"ratio ours / h5py      : {ours_fps / ref_fps:8.2f} (frames/s), "
        f"{ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f} (peak RSS)"
    )


if __name__ == "__main__":
    main()
