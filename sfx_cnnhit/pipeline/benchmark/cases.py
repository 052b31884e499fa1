"""A worker's method, set up and ready to time: ``step`` handles one batch of in-memory frames.

The CNN and the DIALS-style finders are built as ``compare`` builds them
(:mod:`sfx_cnnhit.comparisons.methods`), with the benchmark's settings, on the geometry of the simulated
frames; peakfinder8, which ``compare`` is given ready-made, by :func:`create_finder` as every command
builds it (importing the comparison methods would add scipy.ndimage, about 10 MB, to its memory).
Each case's ``step`` is the work timed.
Imports happen here, in set-up, and only those of the method measured (torch only for the CNN and the
seed networks), so a worker's peak memory is its method's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from .config import METHODS, PEAKFINDER8_SETTINGS, REFERENCE

if TYPE_CHECKING:
    from sfx_cnnhit.comparisons.methods import Method
    from sfx_cnnhit.detector import DetectorGeometry
    from sfx_cnnhit.finders.cnn import CnnHitFinder
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

#: A worker's task (JSON; see :func:`sfx_cnnhit.pipeline.benchmark.run.run_benchmark`).
Task = dict[str, Any]
#: ``{"data": (n, ss, fs) float32, "mask": (n, ss, fs) bool, "hit": (n,) bool}``: the frame pool.
Pool = dict[str, NDArray[Any]]


def task_geometry(task: Task) -> DetectorGeometry:
    """The simulated frames' detector."""
    from sfx_cnnhit.io.geometry import read_geometry

    return read_geometry(task["files"]["geometry"])


def comparison_method(name: str, task: Task, geometry: DetectorGeometry) -> Method:
    """The comparison method ``name`` (:attr:`~.config.BenchmarkMethod.finder`: ``cnn``, ``dispersion`` or
    ``dials``) with the benchmark's settings: DIALS's defaults; the task's model and CNN options, its hits
    localised by :func:`peakfinder8_finder`."""
    from sfx_cnnhit.comparisons import methods
    from sfx_cnnhit.finders.config import CnnHitParams
    from sfx_cnnhit.finders.dispersion import DEFAULT_HIT_RULE, DialsParams

    if name == "dispersion":
        return methods.dispersion_method(DialsParams(), DEFAULT_HIT_RULE, geometry=geometry)
    if name == "dials":
        return methods.dials_method(DialsParams(), DEFAULT_HIT_RULE, geometry=geometry,
                                    frames_per_call=task["batch_size"])
    cnn = CnnHitParams(model=task["model"], device=task["device"], batch_size=task["batch_size"],
                       precision=task["precision"])
    return methods.cnn_method(cnn, peakfinder8_finder(geometry), geometry)


def peakfinder8_finder(geometry: DetectorGeometry) -> Peakfinder8Finder:
    """Our peakfinder8 with :data:`PEAKFINDER8_SETTINGS` on ``geometry``."""
    from sfx_cnnhit.finders.base import create_finder
    from sfx_cnnhit.finders.config import Peakfinder8Params
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

    params = Peakfinder8Params(**PEAKFINDER8_SETTINGS)
    return cast(Peakfinder8Finder, create_finder("peakfinder8", params, detector=geometry))


def cnn_finder(task: Task, geometry: DetectorGeometry) -> CnnHitFinder:
    """The CNN hit finder of the task's model, as ``compare`` builds it."""
    from sfx_cnnhit.finders.cnn import CnnHitFinder

    return cast(CnnHitFinder, comparison_method("cnn", task, geometry).finder)


def veto_threshold(task: Task, scores: Callable[[], NDArray[np.float64]], n_hits: int) -> float | None:
    """The decision threshold: the given one, None for a trained model (its own, which its finder picks
    for the frames' binning), or for the stand-in the score that passes as many frames as there are
    true hits."""
    if task["threshold"] is not None:
        return float(task["threshold"])
    if task["trained"]:
        return None
    ranked = np.sort(scores())[::-1]
    return float(ranked[n_hits - 1]) if n_hits else float(np.nextafter(ranked[0], np.inf))


class Case:
    """A method set up and ready: ``step`` handles one batch of in-memory frames."""

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        raise NotImplementedError


class Veto(Case):
    """The CNN veto (preprocessing and forward pass, batched); with ``gradcam`` also Grad-CAM maps
    of the frames it passes. ``passed`` counts them."""

    def __init__(self, task: Task, pool: Pool, gradcam: bool) -> None:
        self.finder = cnn_finder(task, task_geometry(task))
        threshold = veto_threshold(task, lambda: self.finder.hit_probability(pool["data"], pool["mask"]),
                                   int(pool["hit"].sum()))
        self.threshold = self.finder.threshold_for(pool["data"].shape) if threshold is None else threshold
        self.gradcam = gradcam
        self.passed = 0
        if gradcam:
            self.finder.explainer("gradcam")  # imports pytorch-grad-cam during set-up

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        scores = self.finder.hit_probability(data, mask)
        hits = np.flatnonzero(scores >= self.threshold)
        self.passed += int(hits.size)
        if self.gradcam and hits.size:
            self.finder.heatmaps(data[hits], mask[hits])


class Peakfinder8(Case):
    """Our peakfinder8, one frame at a time."""

    def __init__(self, task: Task) -> None:
        self.finder = peakfinder8_finder(task_geometry(task))

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        for frame, good in zip(data, mask, strict=True):
            self.finder.find_peaks_masked(frame, good)


class OmPeakfinder8(Peakfinder8):
    """OM's compiled function with the same detector layout, radius map, settings and mask."""

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        from .reference import om_peakfinder8

        self.call = om_peakfinder8(self.finder)

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        for frame, good in zip(data, mask, strict=True):
            self.call(frame, good)


class Classify(Case):
    """A comparison method's ``classify`` on each batch (the DIALS-style finders)."""

    def __init__(self, task: Task, name: str) -> None:
        self.finder = comparison_method(name, task, task_geometry(task)).finder

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        self.finder.classify(data, mask)


class SeedNet(Case):
    """A seed network, untrained: preprocessing and forward pass (no finder: the bare model)."""

    def __init__(self, task: Task) -> None:
        import torch

        from sfx_cnnhit.models.hitnet import fuse_conv_bn_
        from sfx_cnnhit.models.inference import resolve_device
        from sfx_cnnhit.models.zoo import create_model

        torch.manual_seed(0)
        model, self.spec = create_model(task["method"], task="fiveclass")
        self.device = resolve_device(task["device"])
        # torch's stubs lack Module.to(device, memory_format=...), which it accepts at run time.
        self.model = fuse_conv_bn_(model.eval()).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def step(self, data: NDArray[np.float32], mask: NDArray[np.bool_]) -> None:
        import torch

        from sfx_cnnhit.models.preprocess import preprocess

        with torch.inference_mode():
            x = preprocess(data, mask, self.spec.preprocess).to(self.device)
            self.model(x.contiguous(memory_format=torch.channels_last)).float().cpu()


def make_case(task: Task, pool: Pool) -> Case:
    """The set-up case of ``task['method']`` (any method but ``reduce``)."""
    method = task["method"]
    finder = METHODS[method].finder
    if method in ("cnn_veto", "cnn_veto_gradcam"):
        return Veto(task, pool, gradcam=method == "cnn_veto_gradcam")
    if method == REFERENCE:
        return OmPeakfinder8(task)
    if finder == "peakfinder8":
        return Peakfinder8(task)
    if finder is None:
        return SeedNet(task)
    return Classify(task, finder)
