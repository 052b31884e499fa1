"""Which true Bragg spots does a SpotNet find? Per-spot recall against ``/truth/bragg_mask``, by brightness.

For every connected component of a hit frame's Bragg mask (a spot), it reads the network input
``x`` at the spot's brightest pixel (``log(1 + z)``, ``z`` the local z-score), whether the spot logit
is above 0 anywhere on the spot ("found"), and how compact the spot is: the second-brightest pixel's
``x`` over the brightest's, and its pixel count. Grouped by the brightest pixel's ``x``, this shows
whether a model misses a data set's spots because they are faint or because they look different
(docs/models.md, session 13: nanoBragg's spots against ours). Frames are taken as one panel, as
square single-module files are (``nanobragg_dev.cxi``, ``simulate`` without ``-d``).

    python -m sfx_cnnhit.comparisons.spot_recall ../shared/data/nanobragg_dev.cxi --model spotnet_hitmiss
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.hdf5 import open_hdf5
from sfx_cnnhit.models.checkpoint import load_model
from sfx_cnnhit.models.preprocess import preprocess
from sfx_cnnhit.models.spotnet import SpotNet

#: Edges of the brightest-pixel ``x`` bins of the table (``x = 2`` is z 6.4, ``x = 3`` is z 19).
X_EDGES = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
DATA, MASK = "/entry_1/data_1/data", "/entry_1/data_1/mask"


def spot_rows(path: str | Path, model: SpotNet, spec: Any, max_frames: int | None = None) -> NDArray[np.float64]:
    """One row per true spot of the hit frames of ``path``: brightest ``x``, second ``x``, pixels, max logit."""
    rows = []
    with open_hdf5(path) as f:
        for name in (DATA, "/truth/bragg_mask", "/truth/hit"):
            if name not in f:
                raise InputError(f"{path}: no {name} (a simulated or nanoBragg file with truth is needed)")
        mask = f[MASK][()] if MASK in f else None
        frames = np.flatnonzero(f["/truth/hit"][()])[:max_frames]
        for i in frames:
            good = None if mask is None else torch.as_tensor((mask if mask.ndim == 2 else mask[i]) == 0)[None]
            with torch.no_grad():
                x = preprocess(torch.as_tensor(f[DATA][i].astype(np.float32))[None], good, spec.preprocess, None)
                logits = model.spot_logits(x)[0, 0].numpy()
            x_map, stride = x[0, 0].numpy(), x.shape[-1] // logits.shape[-1]
            labels, n = ndimage.label(f["/truth/bragg_mask"][i])
            for k, box in enumerate(ndimage.find_objects(labels)[:n], start=1):
                ss, fs = np.nonzero(labels[box] == k)
                ss, fs = ss + box[0].start, fs + box[1].start
                values = np.sort(x_map[ss, fs])[::-1]
                second = values[1] if values.size > 1 else 0.0
                rows.append((values[0], second, values.size, logits[ss // stride, fs // stride].max()))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def recall_table(rows: NDArray[np.float64]) -> list[dict[str, float]]:
    """Per ``x`` bin: spots, share found, median second/brightest ``x``, median pixels, median logit."""
    table = []
    for lo, hi in itertools.pairwise(X_EDGES):
        sel = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)]
        if len(sel):
            table.append({
                "x_low": lo, "x_high": hi, "spots": len(sel), "found": float(np.mean(sel[:, 3] > 0)),
                "second_over_peak": float(np.median(sel[:, 1] / np.maximum(sel[:, 0], 1e-6))),
                "pixels": float(np.median(sel[:, 2])), "median_logit": float(np.median(sel[:, 3])),
            })
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="CXI/HDF5 files with /truth/bragg_mask and /truth/hit")
    parser.add_argument("--model", default=None, help="SpotNet checkpoint or shipped name (default: the default)")
    parser.add_argument("--max-frames", type=int, default=None, help="hit frames per file at most")
    parser.add_argument("--json", type=Path, default=None, help="also write the tables as JSON")
    args = parser.parse_args(argv)
    model, spec = load_model(args.model)
    if not isinstance(model, SpotNet):
        parser.error(f"{spec.name} is not a SpotNet: it has no spot map")
    out = {}
    for path in args.files:
        table = recall_table(spot_rows(path, model, spec, args.max_frames))
        out[str(path)] = table
        print(f"{path} ({spec.name})")
        print("  x of brightest pixel   spots  found  2nd/peak  pixels  median logit")
        for r in table:
            print(f"  [{r['x_low']:.1f}, {r['x_high']:.1f})            {r['spots']:6d}  {r['found']:.2f}   "
                  f"{r['second_over_peak']:.2f}     {r['pixels']:4.0f}    {r['median_logit']:6.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
