"""Frames a CNN cannot judge: flagged per frame instead of decided silently.

The network's input is scale- and offset-free (:mod:`sfx_cnnhit.models.preprocess`), so gain, pedestal
and background level never put a frame outside what it was trained on. What does is a frame with
nothing to look at, or a detector fault. :func:`frame_flags` names, per frame, the first that applies:

==============  ================================================================  ===============
flag            condition (on good pixels: mask True and finite)                  decision
==============  ================================================================  ===============
``masked``      fewer than ``MIN_GOOD_FRACTION`` (1 %) of the pixels are good     miss
``non_finite``  more than half of the unmasked pixels are NaN or inf              miss
``constant``    every good pixel has the same value (a dead or blanked frame)     miss
``saturated``   ``SATURATED_FRACTION`` (5 %) or more of the good pixels sit at    the model's
                the frame's maximum, above the median (a flooded detector)
``negative``    more than half of the good pixels (the median) lie below          the model's
                ``-NEGATIVE_PHOTONS`` (5) photons (pedestal subtracted twice, or
                an integer wrap-around)
==============  ================================================================  ===============

The statistics are taken on every ``stride``-th row and column (1/16 of the pixels by default), so the
check costs a small fraction of the veto; a frame found constant there is confirmed on all pixels.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

MIN_GOOD_FRACTION = 0.01
SATURATED_FRACTION = 0.05
NEGATIVE_PHOTONS = 5.0
#: Flags whose frames are decided as misses: the model has nothing to look at.
VETOED_FLAGS = frozenset({"masked", "non_finite", "constant"})
FLAG_HELP = {
    "masked": "fewer than 1 % of the pixels are good (mask)",
    "non_finite": "more than half of the unmasked pixels are NaN or inf",
    "constant": "every good pixel has the same value",
    "saturated": "5 % or more of the good pixels sit at the frame's maximum",
    "negative": "most pixels below -5 photons (pedestal subtracted twice?)",
}


def _flag(frame: NDArray[Any], mask: NDArray[np.bool_] | None, adu_per_photon: float, stride: int) -> str:
    sub = frame[::stride, ::stride]
    unmasked = np.ones(sub.shape, bool) if mask is None else mask[::stride, ::stride]
    finite = np.isfinite(sub) if np.issubdtype(sub.dtype, np.floating) else np.ones(sub.shape, bool)
    good = unmasked & finite
    n_good, n_unmasked = int(good.sum()), int(unmasked.sum())
    if n_good < MIN_GOOD_FRACTION * sub.size:
        return "non_finite" if n_unmasked >= MIN_GOOD_FRACTION * sub.size else "masked"
    if n_unmasked - n_good > 0.5 * n_unmasked:
        return "non_finite"
    values = sub[good]
    top, bottom = values.max(), values.min()
    if top == bottom:
        full = frame if mask is None else frame[mask]
        full = full[np.isfinite(full)] if np.issubdtype(full.dtype, np.floating) else full
        if full.size and full.max() == full.min():
            return "constant"
        return ""
    # Counts instead of a median (a partial sort, 5x the cost): the maximum lies above the median
    # exactly when at most half of the values equal it, and the median is low when most values are.
    at_top = np.count_nonzero(values == top)
    if SATURATED_FRACTION * values.size <= at_top <= values.size // 2:
        return "saturated"
    if np.count_nonzero(values < -NEGATIVE_PHOTONS * adu_per_photon) > values.size // 2:
        return "negative"
    return ""


def frame_flags(
    frames: NDArray[Any], masks: NDArray[np.bool_] | None = None, *, adu_per_photon: float = 1.0, stride: int = 4
) -> list[str]:
    """Per frame of ``(n, ss, fs)`` ``frames``, the first flag of the module table that applies, or ``""``.

    ``masks``: True = good, ``(n, ss, fs)``, ``(ss, fs)`` or None; ``adu_per_photon``: the detector's gain.
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    static = masks is None or np.ndim(masks) == 2
    return [
        # not static: masks is a stack, not None
        _flag(frames[i], masks if static else cast("NDArray[np.bool_]", masks)[i], adu_per_photon, stride)
        for i in range(frames.shape[0])
    ]
