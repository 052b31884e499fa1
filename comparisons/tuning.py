"""peakfinder8 at its best: its settings tuned on the very frames it is scored on (an upper bound).

(``sfx-cnnhit compare --tune`` is the fair version: tuned on validation frames, scored on others.)

The CNN's model card compares the shipped model with peakfinder8 on the same test frames. To make
that comparison fair to the classical method, peakfinder8 gets every advantage: a grid of ADC
thresholds, SNR limits and minimum peak sizes is run over the labelled frames, and for each the
minimum number of peaks that makes a hit (``min_peaks``, OM's ``min_num_peaks_for_hit``) is chosen
to maximise hit/miss accuracy on those same frames. The best cell is reported with its settings.
The frames are streamed once in batches (:func:`~.contest.collect_scores`); every grid cell runs our
peakfinder8, which is exact to OM's compiled one.
Each file is read with the geometry beside it (``X.geom``, as ``simulate`` writes it: ASIC layout,
beam centre, gain); settings tuned on one detector are scored on another with the ADC threshold
moved to that detector's gain, so that it stands for the same number of photons.

    python -m sfx_cnnhit.comparisons.tuning test_512.cxi --labels /truth/hit --json pf8_best.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import InputError, SfxCnnHitError
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.labels import load_labels
from sfx_cnnhit.io.sources import FrameSource, open_frames

from .contest import Collected, Grid, collect_scores
from .grids import peakfinder8_grid
from .metrics import hit_metrics
from .plan import detector_gain as plan_detector_gain

#: The default grid (ADU for 1 ADU per photon, as simulated frames are).
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "adc_threshold": (20.0, 50.0, 100.0, 200.0),
    "minimum_snr": (3.0, 4.0, 5.0, 6.0, 8.0),
    "min_pixel_count": (1, 2, 3),
}


@dataclass(frozen=True)
class TuningResult:
    """The best grid cell and the whole grid.

    Attributes:
        params: best peakfinder8 settings; ``min_peaks`` the best hit rule on them.
        metrics: :func:`~sfx_cnnhit.comparisons.metrics.hit_metrics` of the best cell.
        grid: every cell: settings, best ``min_peaks``, accuracy.
        n_frames: labelled frames scored.
    """

    params: Peakfinder8Params
    min_peaks: int
    metrics: dict[str, Any]
    grid: list[dict[str, Any]]
    n_frames: int

    def to_dict(self) -> dict[str, Any]:
        return {"n_frames": self.n_frames, "params": asdict(self.params), "min_peaks": self.min_peaks,
                "metrics": self.metrics, "grid": self.grid}


def best_min_peaks(n_peaks: NDArray[np.integer], is_hit: NDArray[np.bool_]) -> tuple[int, float]:
    """The ``min_peaks`` (hit if ``n_peaks >= min_peaks``, at least 1) with the highest accuracy, and it."""
    candidates = np.unique(np.concatenate([[1], n_peaks[n_peaks >= 1], [n_peaks.max() + 1]]))
    accuracy = [(np.equal(n_peaks >= k, is_hit)).mean() for k in candidates]
    i = int(np.argmax(accuracy))
    return int(candidates[i]), float(accuracy[i])


def _grid(source: FrameSource, base: Peakfinder8Params, grid: dict[str, Sequence[float]]) -> Grid:
    """peakfinder8's cells on the source's detector (its geometry, else the beam at the slab centre), frames as read."""
    if source.geometry is not None:
        finder = Peakfinder8Finder.from_geometry(source.geometry, base)
    else:
        finder = Peakfinder8Finder.from_beam_center(source.frame_shape, base)
    return peakfinder8_grid(finder, 1.0, grid={"pedestal": ("none",), **grid})


def _collect(source: FrameSource, label_spec: str, grid: Grid, max_frames: int | None) -> Collected:
    """Peak counts of every cell on the labelled frames, streamed batch by batch."""
    try:
        return collect_scores(source, load_labels(label_spec), [grid], max_frames=max_frames)
    except InputError as err:
        raise InputError(f"peakfinder8 {err}") from None


def score_peakfinder8(
    source: FrameSource, label_spec: str, params: Peakfinder8Params, min_peaks: int, max_frames: int | None = None
) -> dict[str, Any]:
    """:func:`~sfx_cnnhit.comparisons.metrics.hit_metrics` of peakfinder8 with fixed settings (hit if at
    least ``min_peaks`` peaks) on ``source``'s labelled frames: tuned elsewhere, scored here."""
    got = _collect(source, label_spec, _grid(source, params, {}), max_frames)
    return hit_metrics(got.truth, got.scores["peakfinder8"][0] >= min_peaks)


def tune_peakfinder8(
    source: FrameSource,
    label_spec: str,
    *,
    grid: dict[str, Sequence[float]] | None = None,
    base: Peakfinder8Params | None = None,
    max_frames: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> TuningResult:
    """Grid-search peakfinder8 on ``source``'s labelled frames (see the module docstring), streamed in
    batches: memory holds one batch of frames and the peak counts.

    Args:
        source: frames with hit/miss labels; the geometry (if any) gives the ASIC layout and beam.
        label_spec: hit/miss labels, :func:`~sfx_cnnhit.io.labels.load_labels` form (``/truth/hit``).
        grid: values per :class:`Peakfinder8Params` field (default :data:`DEFAULT_GRID`).
        base: settings of the fields the grid leaves alone (default CrystFEL's).
        max_frames: use at most this many frames (the first ones).
        progress: called with a line per grid cell.
    """
    cells = _grid(source, base or Peakfinder8Params(), dict(grid or DEFAULT_GRID))
    got = _collect(source, label_spec, cells, max_frames)
    is_hit = got.truth
    table: list[dict[str, Any]] = []
    best: tuple[float, int, int] | None = None
    for i, (cell, n_peaks) in enumerate(zip(cells.cells, got.scores["peakfinder8"], strict=True)):
        k, accuracy = best_min_peaks(n_peaks.astype(np.int64), is_hit)
        table.append({**{f: v for f, v in cell.items() if f != "pedestal"}, "min_peaks": k, "accuracy": accuracy})
        if progress:
            progress(f"{table[-1]}")
        if best is None or accuracy > best[0]:
            best = (accuracy, i, k)
    assert best is not None
    _, i, k = best
    params = replace(base or Peakfinder8Params(), **{f: v for f, v in cells.cells[i].items() if f != "pedestal"})
    return TuningResult(params=params, min_peaks=k, metrics=hit_metrics(is_hit, got.scores["peakfinder8"][i] >= k),
                        grid=table, n_frames=int(is_hit.size))


def _open(paths: Sequence[Path]) -> FrameSource:
    """Frames of ``paths`` with the geometry beside the first one (``X.geom``, as ``simulate`` writes it)."""
    from sfx_cnnhit.models.data import file_geometry

    return open_frames([str(p) for p in paths], geometry=file_geometry(paths[0]))


def detector_gain(source: FrameSource) -> float:
    """ADU per photon of ``source``: its geometry's gain (as the CNN's preprocessing takes it), else 1."""
    return plan_detector_gain(None, source.geometry)[0]


def in_gain_of(params: Peakfinder8Params, tuned: FrameSource, scored: FrameSource) -> Peakfinder8Params:
    """``params`` tuned on ``tuned`` with the ADC threshold moved to ``scored``'s gain (the same photons)."""
    return replace(params, adc_threshold=params.adc_threshold * detector_gain(scored) / detector_gain(tuned))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfx_cnnhit.comparisons.tuning", description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="labelled CXI/HDF5 files")
    parser.add_argument("--labels", default="/truth/hit", help="hit/miss labels (dataset or CSV)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--score", nargs="+", type=Path, default=[],
                        help="labelled files to score the best settings on (tuned on INPUTS, scored here)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)

    def line(name: str, m: dict[str, Any]) -> str:
        return (f"{name}: {m['n_labelled']} frames, accuracy {m['accuracy']:.4f}, hit recall {m['hit_recall']:.4f}, "
                f"miss rejection {m['miss_rejection']:.4f}")

    try:
        source = _open(args.inputs)
        result = tune_peakfinder8(source, args.labels, max_frames=args.max_frames,
                                  progress=lambda text: print(text, file=sys.stderr, flush=True))
        scored = {}
        for path in args.score:
            target = _open([path])
            params = in_gain_of(result.params, source, target)
            scored[str(path)] = {**score_peakfinder8(target, args.labels, params, result.min_peaks),
                                 "adc_threshold": params.adc_threshold}
    except SfxCnnHitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"best of {len(result.grid)} settings: adc_threshold {result.params.adc_threshold}, minimum_snr "
          f"{result.params.minimum_snr}, min_pixel_count {result.params.min_pixel_count}, min_peaks {result.min_peaks}")
    print(line("tuned on " + " ".join(map(str, args.inputs)), result.metrics))
    for name, m in scored.items():
        print(line(name, m))
    if args.json:
        args.json.write_text(json.dumps({**result.to_dict(), "scored": scored}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
