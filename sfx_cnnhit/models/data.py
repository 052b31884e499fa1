"""Labelled frames from files, streamed in batches for training and evaluation.

Each input file is read through the same frame sources as every other command (so simulated files
and real CXI files with a label dataset or a CSV of labels train alike); a batch never spans two files,
so files of different detectors can be mixed, each batch carrying its own panel layout (panels and
gain). A file's detector geometry is the one given, else the CrystFEL geometry ``sfx-cnnhit simulate``
writes beside it (``X.geom`` for ``X.cxi``), else none (the slab is one image of 1 ADU per photon).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from sfx_cnnhit.detector import DetectorGeometry, PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.io.geometry import read_geometry
from sfx_cnnhit.io.hotpixels import HotPixelRule
from sfx_cnnhit.io.labels import load_labels
from sfx_cnnhit.io.prefetch import prefetched
from sfx_cnnhit.io.sources import FrameSource, open_frames
from sfx_cnnhit.models.preprocess import panel_layout_for
from sfx_cnnhit.models.tasks import TASK_CLASSES
from sfx_cnnhit.types import FrameBatch

HITMISS = TASK_CLASSES["hitmiss"]
T = TypeVar("T")


def file_geometry(path: str | os.PathLike[str], geometry: DetectorGeometry | None = None) -> DetectorGeometry | None:
    """``geometry`` if given, else the geometry file beside ``path`` (``X.geom`` for ``X.cxi``), else None."""
    if geometry is not None:
        return geometry
    beside = Path(path).with_suffix(".geom")
    return read_geometry(beside) if beside.is_file() else None


def source_layout(source: FrameSource) -> PanelLayout | None:
    """The panel layout preprocessing uses for a source: its geometry's panels, or its ASIC modules."""
    if source.geometry is not None:
        return panel_layout_for(source.geometry)
    info = source.layout_info
    if info and info["nasics_x"] * info["nasics_y"] > 1:
        return PanelLayout.regular(info["nasics_y"], info["nasics_x"], info["asic_ny"], info["asic_nx"])
    return None


class LabelledFrames:
    """Frames with class labels, re-iterable per epoch: ``for data, mask, labels, layout in frames(epoch)``.

    Args:
        paths: CXI/HDF5 files (or anything :func:`~sfx_cnnhit.io.sources.open_frames` reads), one
            source each.
        labels: a label dataset in each file (``/truth/label``, ``/truth/hit``) or a CSV of
            ``event_id,label`` (see :mod:`sfx_cnnhit.io.labels`).
        class_names: the model's classes; ``("miss", "hit")`` takes hit flags, any other list takes
            class names (or their indices) as written in the labels.
        batch_size: frames per batch (a batch is a contiguous run of one file).
        shuffle: visit the batches in a new order every epoch (seeded by ``seed`` and the epoch).
        max_frames: use at most this many frames of each file.
        geometry: detector geometry of every file; None: each file's own (see the module docstring).
        hot_pixels: mask each file's hot pixels (:mod:`sfx_cnnhit.io.hotpixels`); None: do not.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: str = "/truth/label",
        *,
        class_names: Sequence[str],
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        max_frames: int | None = None,
        data_path: str | None = None,
        geometry: DetectorGeometry | None = None,
        hot_pixels: HotPixelRule | None = None,
    ) -> None:
        if not paths:
            raise InputError("no labelled input files given")
        self.sources = [
            open_frames([p], data_path=data_path, geometry=file_geometry(p, geometry), hot_pixels=hot_pixels)
            for p in paths
        ]
        self.layouts = [source_layout(s) for s in self.sources]
        self.labels = load_labels(labels)
        self.class_names = tuple(class_names)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.sizes = [s.n_frames if max_frames is None else min(s.n_frames, max_frames) for s in self.sources]

    @property
    def n_frames(self) -> int:
        return sum(self.sizes)

    def __len__(self) -> int:
        return sum(math.ceil(n / self.batch_size) for n in self.sizes)

    def targets(self, batch: FrameBatch) -> torch.Tensor:
        """Class indices of a batch's frames."""
        text, hits = self.labels.for_batch(batch)
        if self.class_names == HITMISS:
            if (hits < 0).any():
                raise InputError(f"{batch.source_file}: frames without a label")
            return torch.as_tensor(hits, dtype=torch.long)
        out = []
        for value in text:
            if value in self.class_names:
                out.append(self.class_names.index(value))
            elif value.lstrip("-").isdigit() and 0 <= int(value) < len(self.class_names):
                out.append(int(value))
            else:
                raise InputError(
                    f"{batch.source_file}: label {value!r} is none of the model's classes {', '.join(self.class_names)}"
                )
        return torch.as_tensor(out, dtype=torch.long)

    def for_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        chunks = [(i, s) for i, n in enumerate(self.sizes) for s in range(0, n, self.batch_size)]
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(chunks)
        for i, start in chunks:
            stop = min(start + self.batch_size, self.sizes[i])
            for batch in self.sources[i].batches(self.batch_size, start=start, stop=stop):
                yield (
                    torch.from_numpy(batch.data),
                    torch.from_numpy(batch.mask),
                    self.targets(batch),
                    self.layouts[i],
                )

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        return self.for_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        return self.for_epoch(0)


def round_robin(iterables: Iterable[Iterable[T]]) -> Iterator[T]:
    """Items of several iterables alternately (one of each in turn), until all are exhausted."""
    iters = [iter(it) for it in iterables]
    while iters:
        for it in list(iters):
            try:
                yield next(it)
            except StopIteration:
                iters.remove(it)


class SimulatedFrames:
    """Fresh simulated frames every epoch (on-the-fly training data): ``n_frames`` per epoch, shared
    evenly by the detectors of ``configs`` (one :class:`SimulationConfig` each), their batches alternating.

    Detector ``i`` in epoch ``e`` uses the simulator's base seed ``seed + e + 10007 i`` on the ``train``
    split, which never shares random streams with the ``val`` and ``test`` splits, whatever their seeds.
    With ``workers > 1`` the detectors simulate at once, each in its own processes (the workers shared in
    proportion to its pixels), and a thread per detector keeps its next batch ready while the network
    trains; the frames do not depend on ``workers``.
    """

    def __init__(
        self,
        n_frames: int,
        *,
        class_names: Sequence[str],
        seed: int = 0,
        batch_size: int = 64,
        configs: Sequence[Any] | None = None,
        workers: int = 1,
        split: str = "train",
    ) -> None:
        from sfx_cnnhit.simulate import SimulationConfig, Simulator

        self._simulator = Simulator
        self.configs = tuple(configs) if configs else (SimulationConfig(),)
        if workers < 1:
            raise ConfigError("workers must be at least 1")
        self.n_frames, self.class_names, self.seed = int(n_frames), tuple(class_names), int(seed)
        self.batch_size, self.workers, self.split = int(batch_size), int(workers), split
        share, extra = divmod(self.n_frames, len(self.configs))
        self.frames_per_detector = [share + (i < extra) for i in range(len(self.configs))]
        self.workers_per_detector = [1] * len(self.configs)
        if self.workers > 1:
            pixels = np.array([math.prod(Simulator(c).frame_shape) for c in self.configs], np.float64)
            self.workers_per_detector = [max(1, round(w)) for w in self.workers * pixels / pixels.sum()]

    def __len__(self) -> int:
        return sum(math.ceil(n / self.batch_size) for n in self.frames_per_detector)

    def _detector(self, i: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        seed, workers = self.seed + epoch + 10007 * i, self.workers_per_detector[i]
        with self._simulator(self.configs[i], seed=seed, split=self.split, workers=workers) as sim:
            layout = panel_layout_for(sim.geometry)
            batches = sim.stream(self.frames_per_detector[i], batch_size=self.batch_size)
            with closing(prefetched(batches, depth=int(self.workers > 1))) as stream:
                for batch in stream:
                    labels = batch.hit.astype(np.int64) if self.class_names == HITMISS else batch.labels
                    yield torch.from_numpy(batch.data), torch.from_numpy(batch.mask), torch.from_numpy(labels), layout

    def for_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        return round_robin(self._detector(i, epoch) for i in range(len(self.configs)))

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        return self.for_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        return self.for_epoch(0)
