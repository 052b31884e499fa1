"""OM 23.8.3's compiled peakfinder8, the reference every ratio of the benchmark is to."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

#: ``(frame (ss, fs) float32, good-pixel mask (ss, fs) bool) -> OM's peak lists``
OmPeakfinder8 = Callable[[NDArray[np.float32], NDArray[np.bool_]], Any]


def om_available() -> bool:
    """Whether OM's compiled peakfinder8 can be imported."""
    try:
        from om.algorithms._crystallography import peakfinder_8  # noqa: F401
    except ImportError:
        return False
    return True


def om_peakfinder8(finder: Peakfinder8Finder) -> OmPeakfinder8:
    """OM's compiled function with ``finder``'s detector layout, radius map and settings, on one frame
    and its mask (no fast-mode pixel sample). Raises ImportError without OM."""
    from om.algorithms._crystallography import peakfinder_8

    p, lay = finder.params, finder.layout
    radius = np.array(finder.radius_map, np.float32)  # OM needs a writable array

    def run(frame: NDArray[np.float32], good: NDArray[np.bool_]) -> Any:
        # bool is one byte, 0/1: OM's int8 mask without a copy
        return peakfinder_8(p.max_num_peaks, frame, good.view(np.int8), radius, 0, None, None, 0, lay.asic_nx,
                            lay.asic_ny, lay.nasics_x, lay.nasics_y, p.adc_threshold, p.minimum_snr,
                            p.min_pixel_count, p.max_pixel_count, p.local_bg_radius)

    return run
