"""A per-frame pedestal estimate, and hit finders that see frames with it subtracted.

DIALS's dispersion test assumes Poisson counts, ``var = gain x mean``; a detector offset (an ADC
pedestal that was not subtracted) breaks it, and thresholds in photons need a zero to count from.
:func:`poisson_pedestal` estimates, per frame, the constant that restores the Poisson relation of the
background: over small tiles of good pixels ``p = mean - var / gain``, and its median over the tiles
(tiles holding a spot have a large variance and fall below the median). With read noise of variance
``s^2`` (ADU^2) it gives ``offset - s^2 / gain``: the read noise is counted as Poisson background, as
DIALS would need. On frames without an offset (a Pilatus) it is about 0.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.finders.base import HitFinder
from sfx_cnnhit.types import Classification, PeakList

#: Tile edge (pixels) of the pedestal estimate.
TILE = 4
#: Pedestal handling of the classical methods: frames as read, or the estimate subtracted.
PEDESTAL_MODES = ("none", "estimate")


def poisson_pedestal(
    frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None, gain: float = 1.0
) -> NDArray[np.float64]:
    """Per-frame pedestal (ADU) of ``(n, ss, fs)`` frames: the median over ``TILE x TILE`` tiles of good
    pixels of ``mean - var / gain`` (``gain``: ADU per photon). 0 for a frame without a whole good tile."""
    frames = np.asarray(frames, dtype=np.float64)
    n, ss, fs = frames.shape
    ty, tx = ss // TILE, fs // TILE
    out = np.zeros(n)
    if ty == 0 or tx == 0:
        return out
    for i in range(n):
        tiles = frames[i, : ty * TILE, : tx * TILE].reshape(ty, TILE, tx, TILE).swapaxes(1, 2).reshape(-1, TILE * TILE)
        if masks is not None:
            good = np.asarray(masks[i])[: ty * TILE, : tx * TILE].reshape(ty, TILE, tx, TILE).all(axis=(1, 3))
            tiles = tiles[good.ravel()]
        if len(tiles):
            out[i] = float(np.median(tiles.mean(axis=1) - tiles.var(axis=1, ddof=1) / gain))
    return out


def subtract_pedestal(
    frames: NDArray[np.floating], masks: NDArray[np.bool_] | None, gain: float
) -> NDArray[np.float32]:
    """``frames`` (one ``(ss, fs)`` or ``(n, ss, fs)``) minus their :func:`poisson_pedestal`, float32."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 2:
        return subtract_pedestal(frames[None], None if masks is None else np.asarray(masks)[None], gain).reshape(
            frames.shape)
    return frames - poisson_pedestal(frames, masks, gain).astype(np.float32)[:, None, None]


class PedestalSubtracted:
    """A hit finder that sees each frame minus its :func:`poisson_pedestal` (``gain`` ADU per photon).

    Attributes:
        finder: the wrapped finder (its ``params`` and ``hit_rule`` are what it runs with).
    """

    name: ClassVar[str] = "pedestal-subtracted"

    def __init__(self, finder: HitFinder, gain: float) -> None:
        self.finder = finder
        self.gain = float(gain)

    def find_peaks(self, data: NDArray[np.floating]) -> PeakList:
        return self.finder.find_peaks(subtract_pedestal(data, None, self.gain))

    def classify(self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None) -> Classification:
        return self.finder.classify(subtract_pedestal(frames, masks, self.gain), masks)
