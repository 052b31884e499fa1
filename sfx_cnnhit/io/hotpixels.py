"""Run-level hot-pixel maps, in the spirit of Cheetah's ``hotpixFreq``.

A hot pixel reads high in frame after frame; a Bragg spot moves with the crystal. A per-frame finder
cannot tell a one-pixel spot from a hot pixel, so unmasked hot pixels make misses look like weak hits.
:class:`HotPixelRule` flags, in each window of ``window`` consecutive frames of a run, the pixels that
are a *strict local maximum* (above all eight neighbours) in at least ``frequency`` of ``samples``
frames read evenly across the window. Background noise makes a pixel the maximum of its 3x3
neighbourhood in about 1 frame of 9 (1 of 4 at a panel corner), so at the defaults (18 of 24) a
false flag has odds below 1e-6 per pixel; a hot pixel a few noise sigmas above its background is the
maximum in nearly every frame. The test is free of units and gains, and works on photon counters
with zero background (a pixel that counts in most frames while its neighbours do not is hot).

Windows are fixed by frame index, so a map depends only on the run's frames, never on the order or
the resumption of processing (restarted and MPI runs see the same maps). Windows with fewer than
``min_samples`` readable frames get no map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class HotPixelRule:
    """How hot-pixel maps are made.

    Attributes:
        window: frames per map (consecutive frame indices of the run; hot pixels come and go slowly).
        samples: frames read per window, evenly spaced (the extra reading costs ``samples / window``).
        min_samples: windows with fewer readable frames get no map (single images, short files).
        frequency: fraction of the sampled frames in which a pixel must be a strict local maximum.
    """

    window: int = 500
    samples: int = 24
    min_samples: int = 16
    frequency: float = 0.75

    def __post_init__(self) -> None:
        if self.window < 1 or self.samples < 1 or self.min_samples < 1:
            raise ValueError("hot-pixel window, samples and min_samples must be >= 1")
        if not 0.5 <= self.frequency <= 1.0:
            raise ValueError("hot-pixel frequency must lie in [0.5, 1]")

    def window_of(self, index: NDArray[np.int64]) -> NDArray[np.int64]:
        """The window number of each frame index."""
        return np.asarray(index, np.int64) // self.window

    def sample_indices(self, window: int, n_frames: int) -> NDArray[np.int64]:
        """Frame indices read to make the map of ``window`` in a run of ``n_frames`` frames."""
        lo, hi = window * self.window, min((window + 1) * self.window, n_frames)
        if hi <= lo:
            return np.zeros(0, np.int64)
        n = min(self.samples, hi - lo)
        return np.unique(np.round(np.linspace(lo, hi - 1, n)).astype(np.int64))

    def hot_map(self, frames: Iterable[tuple[NDArray[np.float32], NDArray[np.bool_]]]) -> NDArray[np.bool_] | None:
        """``(ss, fs)`` bool, True = hot, from ``(frame, good)`` pairs (``(ss, fs)`` each, good = True);
        None when fewer than ``min_samples`` frames were given."""
        count: NDArray[np.int32] | None = None
        n = 0
        for frame, good in frames:
            peak = strict_local_maxima(frame, good)
            count = peak.astype(np.int32) if count is None else count + peak
            n += 1
        if count is None or n < self.min_samples:
            return None
        return count >= np.ceil(self.frequency * n)


#: What every command uses unless told ``--no-hot-pixel-map``.
DEFAULT_HOT_PIXELS = HotPixelRule()


def strict_local_maxima(frame: NDArray[np.float32], good: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``(ss, fs)`` bool: good pixels above every good pixel of their 3x3 neighbourhood (bad pixels
    and the frame's border count as lower than anything)."""
    x = np.where(good, frame, -np.inf).astype(np.float32, copy=False)
    padded = np.pad(x, 1, constant_values=-np.inf)
    ss, fs = x.shape
    peak = good & np.isfinite(x)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            peak &= x > padded[dy : dy + ss, dx : dx + fs]
    return peak
