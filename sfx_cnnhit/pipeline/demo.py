"""The embedded default run: simulate a small SFX run, reduce it with the shipped model, show the hits.

Everything lands in one folder: ``run.cxi`` (the simulated run, ground truth under ``/truth``),
``reduced/`` (what ``sfx-cnnhit reduce`` writes) and ``hits.png`` (a few hits: frame, Grad-CAM
overlay, peaks).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.cxi import DATA_PATH, read_peak_lists
from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce
from sfx_cnnhit.pipeline.reduce import SCORE_DATASET, ReduceSummary

#: peakfinder8 settings that localise the peaks of the hits on the simulated detector (1 ADU per photon):
#: CrystFEL's, with a 100 ADU floor.
DEMO_PEAKFINDER8 = Peakfinder8Params(adc_threshold=100.0, minimum_snr=5.0)


@dataclass
class DemoResult:
    """What the demo made and how the CNN did against the simulator's ground truth."""

    folder: Path
    run: Path
    summary: ReduceSummary
    figure: Path | None
    true_hits: int
    found_true_hits: int
    false_hits: int


def _ground_truth(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(run, "r") as f:
        return f["/truth/hit"][()].astype(bool), f["/truth/label"][()]


def hit_figure(reduced_cxi: Path, run: Path, path: Path, n_hits: int = 4) -> Path | None:
    """A PNG of the first ``n_hits`` hits: frame, Grad-CAM overlay, peakfinder8 peaks, true spots."""
    from sfx_cnnhit.explain.figures import FramePanels, save_explanation_figure

    peaks = read_peak_lists(reduced_cxi, stop=n_hits)
    if not peaks:
        return None
    with h5py.File(reduced_cxi, "r") as out, h5py.File(run, "r") as truth:
        n = len(peaks)
        names = [str(c) for c in truth["/truth"].attrs.get("class_names", [])]
        rows = []
        for i in range(n):
            src = int(out["/entry_1/result_1/source_index"][i])
            label = int(truth["/truth/label"][src])
            rows.append(
                FramePanels(
                    data=out[DATA_PATH][i],
                    cam=out["/entry_1/result_1/gradcam"][i].astype(np.float32)
                    if "/entry_1/result_1/gradcam" in out else None,
                    peaks=peaks[i],
                    truth=truth["/truth/bragg_mask"][src],
                    title=f"frame {src}: {names[label] if names else label}, "
                    f"score {out[f'/entry_1/result_1/{SCORE_DATASET}'][i]:.3g}",
                )
            )
    return save_explanation_figure(path, rows)


def run_demo(
    folder: str | os.PathLike[str] = "sfx_cnnhit_demo",
    *,
    n_frames: int = 300,
    hit_rate: float = 0.1,
    seed: int = 2026,
    model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Simulate ``n_frames`` (test split, never used in training), reduce them with the CNN (the
    shipped model unless ``model``), draw a few hits.

    A simulated run already in ``folder`` is reused; the reduction is redone each time.
    """
    from sfx_cnnhit.simulate import simulate_to_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run.cxi"
    if not run.exists():
        simulate_to_file(run, n_frames, seed, hit_rate=hit_rate, split="test", progress=progress)
    source = open_frames([run], hot_pixels=DEFAULT_HOT_PIXELS)  # as `sfx-cnnhit reduce run.cxi` reads it
    peakfinder = Peakfinder8Finder.from_beam_center(source.frame_shape, DEMO_PEAKFINDER8)
    summary = cnn_reduce(
        source, folder / "reduced", model=model, explain="gradcam", peakfinder=peakfinder,
        peakfinder_settings=asdict(DEMO_PEAKFINDER8), overwrite=True, progress=progress,
    )
    figure = hit_figure(Path(summary.outputs["cxi"]), run, folder / "hits.png")
    truth, _ = _ground_truth(run)
    with h5py.File(summary.outputs["cxi"], "r") as f:
        kept = f["/entry_1/result_1/source_index"][()]
    found = truth[kept]
    return DemoResult(
        folder=folder,
        run=run,
        summary=summary,
        figure=figure,
        true_hits=int(truth.sum()),
        found_true_hits=int(found.sum()),
        false_hits=int((~found).sum()),
    )
