"""Plain data types shared by every layer.

Conventions: frames are float32 arrays of shape ``(ss, fs)`` in the detector's raw "slab" layout
(all panels stacked the way the file stores them); masks are bool arrays of the same shape with
``True`` = good pixel; peak positions are in raw slab pixels with the pixel centre at an integer
(CrystFEL adds 0.5 itself when it reads a CXI peak list).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

PEAK_FIELDS = ("fs", "ss", "intensity", "num_pixels", "max_pixel_intensity", "snr")
#: ``progress(description)``: a context giving the ``update(frames done, total)`` callback of a progress
#: bar (the command line's ``frame_progress``)
ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]


@dataclass(frozen=True)
class PeakList:
    """Peaks found on one frame, with OM's field names.

    Attributes:
        fs, ss: centroids in raw slab pixels (pixel centre = integer), shape ``(num_peaks,)``.
        intensity: integrated intensity (ADU): above the local background for peakfinder8, the raw
            sum of the spot's pixels for the DIALS-style finders (as DIALS reports it).
        num_pixels: pixels in each peak.
        max_pixel_intensity: brightest pixel above the local background (ADU).
        snr: true signal-to-noise ratio ``intensity / local_sigma``. OM 23.8.3 stores the local
            background sigma under this name by mistake; ours is the ratio.
        hit_score: the CNN's hit probability for the frame, when a CNN decided it (else None).
    """

    fs: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    ss: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    intensity: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    num_pixels: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    max_pixel_intensity: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    snr: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    hit_score: float | None = None

    def __post_init__(self) -> None:
        n = None
        for name in PEAK_FIELDS:
            arr = np.asarray(getattr(self, name), dtype=np.float32).reshape(-1)
            object.__setattr__(self, name, arr)
            if n is None:
                n = arr.size
            elif arr.size != n:
                raise ValueError(f"PeakList field {name!r} has {arr.size} entries, expected {n}")

    @property
    def num_peaks(self) -> int:
        """Number of peaks (OM's ``num_peaks``)."""
        return int(self.fs.size)

    def __len__(self) -> int:
        return self.num_peaks

    def __getitem__(self, key: str) -> Any:
        """Dict-style access, so code written against OM's ``TypePeakList`` dict keeps working."""
        if key == "num_peaks":
            return self.num_peaks
        if key == "hit_score" and self.hit_score is not None:
            return self.hit_score
        if key in PEAK_FIELDS:
            return getattr(self, key).tolist()
        raise KeyError(key)

    def keys(self) -> tuple[str, ...]:
        extra = ("hit_score",) if self.hit_score is not None else ()
        return ("num_peaks", *PEAK_FIELDS, *extra)

    def as_om_dict(self) -> dict[str, Any]:
        """The peak list as OM's ``TypePeakList`` dict (lists of Python floats)."""
        return {key: self[key] for key in self.keys()}

    def truncated(self, max_peaks: int) -> PeakList:
        """The first ``max_peaks`` peaks."""
        return replace(self, **{name: getattr(self, name)[:max_peaks] for name in PEAK_FIELDS})

    @classmethod
    def empty(cls) -> PeakList:
        return cls()


@dataclass(frozen=True)
class FailedFrame:
    """A frame that could not be read (corrupt chunk, short read ...), skipped instead of ending the run."""

    event_id: str
    source_file: str
    source_index: int
    global_index: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FrameBatch:
    """A chunk of frames from one source, as every reader yields them.

    Attributes:
        data: float32 ``(n, ss, fs)`` frames in the raw slab layout.
        mask: bool ``(n, ss, fs)``, True = good pixel (file mask, user mask and computed bad pixels).
        event_ids: ``n`` event identifiers (e.g. ``"run.cxi //12"`` or ``"trainId:pulseId"``).
        source_file: path of the file the frames came from.
        source_index: ``(n,)`` int64 index of each frame inside its source dataset.
        metadata: per-batch metadata (``photon_energy_ev``, ``clen_m`` ... ; arrays of length ``n``
            or scalars) as far as the file records it.
        global_index: ``(n,)`` int64 index of each frame in the whole multi-file source (empty when
            the producer does not know it).
        failed: frames of this batch's slot that could not be read and are not in ``data`` (only
            when the reader was asked to skip bad frames).
    """

    data: NDArray[np.float32]
    mask: NDArray[np.bool_]
    event_ids: list[str]
    source_file: str
    source_index: NDArray[np.int64]
    metadata: dict[str, Any] = field(default_factory=dict)
    global_index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    failed: tuple[FailedFrame, ...] = ()

    def __len__(self) -> int:
        return int(self.data.shape[0])


@dataclass(frozen=True)
class Classification:
    """Hit/miss decisions for a batch of frames.

    Attributes:
        scores: ``(n,)`` float, the method's hit score (P(hit) for a CNN, the peak count for
            peakfinder8 and DIALS).
        hits: ``(n,)`` bool, the hit decision from the method's hit rule.
        peaks: per-frame peak lists where the method localises peaks (empty for misses of the CNN).
        flags: per frame, why the method could not judge it (``""``: judged); see
            :mod:`sfx_cnnhit.models.guards`. None: the method flags nothing.
    """

    scores: NDArray[np.float64]
    hits: NDArray[np.bool_]
    peaks: list[PeakList] | None = None
    flags: list[str] | None = None
