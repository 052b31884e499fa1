"""The main job as a library call: CNN veto + peakfinder8 on hits + heat maps, through :func:`reduce_run`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Unpack

import numpy as np
import torch
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.cnn import CnnHitFinder, Precision
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.models.metrics import threshold_for_recall
from sfx_cnnhit.models.preprocess import panel_layout_for
from sfx_cnnhit.pipeline.reduce import MAP_DTYPE, HeatMapExplainer, ReduceSummary, RunOptions, reduce_run

if TYPE_CHECKING:
    from sfx_cnnhit.explain.gradcam import GradCamExplainer


def for_target_recall(finder: CnnHitFinder, target_hit_recall: float | None) -> CnnHitFinder:
    """``finder``, deciding at the threshold its model's stored validation scores give for
    ``target_hit_recall`` (None: unchanged)."""
    if target_hit_recall is None:
        return finder
    return finder.with_threshold(
        threshold_for_recall(finder.checkpoint_metrics, target_hit_recall, source=str(finder.model_path))
    )


Explain = Literal["gradcam", "guided", "hirescam", "none"]


@contextlib.contextmanager
def compute_threads(threads: int | None) -> Iterator[int]:
    """torch's intra-op threads for the block, restored after: ``threads``, else one fewer than torch's
    setting (one per core, or an MPI rank's share), at least one.

    The spare core runs the reader and writer threads: torch's OpenMP threads, when they compete with
    them for the cores, spin and wait, and a 2-core machine then preprocesses ten times slower.
    """
    before = torch.get_num_threads()
    chosen = max(1, threads if threads is not None else before - 1)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)


#: the stored heat maps' dtype (:data:`MAP_DTYPE`), made by torch (faster than numpy's conversion)
_MAP_TORCH_DTYPE: torch.dtype = getattr(torch, np.dtype(MAP_DTYPE).name)


@dataclass
class _HitMaps:
    """A finder's heat-map maker for :func:`reduce_run`: the hits' network inputs are the ones the veto
    just preprocessed (``finder.last_inputs``), not made a second time."""

    finder: CnnHitFinder
    explainer: GradCamExplainer
    dataset: str = field(init=False)

    def __post_init__(self) -> None:
        self.dataset = self.explainer.dataset

    def __call__(
        self, data: NDArray[np.float32], mask: NDArray[np.bool_], rows: NDArray[np.intp]
    ) -> tuple[NDArray[np.floating], NDArray[np.float32]]:
        inputs = self.finder.last_inputs
        return self.explainer(data, mask, dtype=_MAP_TORCH_DTYPE,
                              inputs=None if inputs is None else inputs[torch.as_tensor(rows)])


def make_explainers(finder: CnnHitFinder, explain: Explain) -> tuple[HeatMapExplainer, ...]:
    """The heat-map makers for ``explain`` on the finder's model."""
    return () if explain == "none" else (_HitMaps(finder, finder.explainer(explain)),)


def cnn_reduce(
    source: FrameSource,
    outdir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    target_hit_recall: float | None = None,
    explain: Explain = "gradcam",
    peakfinder: Peakfinder8Finder | None = None,
    peakfinder_settings: Mapping[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 64,
    precision: Precision = "float32",
    threads: int | None = None,
    **run: Unpack[RunOptions],
) -> ReduceSummary:
    """Reduce ``source`` with the CNN hit finder into ``outdir`` (see :func:`reduce_run` for the outputs
    and the ``run`` options: compression, resuming, the reader thread, the MPI share, commits);
    the CNN runs on ``threads`` torch threads (see :func:`compute_threads`)."""
    if threshold is not None and target_hit_recall is not None:
        raise ConfigError("give either a hit threshold or a target hit recall, not both")
    finder = CnnHitFinder(
        model=model,
        threshold=threshold,
        device=device,
        peakfinder=peakfinder,
        panel_layout=panel_layout_for(source.geometry),
        batch_size=batch_size,
        precision=precision,
        hot_pixel_map=False,  # the source masks hot pixels with its run-level map (or was told not to)
    )
    finder = for_target_recall(finder, target_hit_recall)
    settings = {
        "model": str(finder.model_path),
        "threshold": finder.threshold_for(source.frame_shape),
        "explain": explain,
        "precision": finder.precision,
        "peakfinder8": dict(peakfinder_settings or {}),
    }
    with compute_threads(threads):
        return reduce_run(
            source,
            finder,
            outdir,
            method="cnn",
            settings=settings,
            explainers=make_explainers(finder, explain),
            batch_size=batch_size,
            **run,
        )
