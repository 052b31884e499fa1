"""What the OM and Cheetah plugins share: the CNN's panel tiling from OM's ``layout_info``. (The CNN
finder's settings, read from both plugins' files, are :class:`~sfx_cnnhit.finders.config.CnnHitParams`.)"""

from __future__ import annotations

from collections.abc import Mapping

from sfx_cnnhit.finders.peakfinder8 import DetectorLayout
from sfx_cnnhit.models.preprocess import PanelLayout


def panel_layout_from_layout_info(
    layout_info: Mapping[str, int] | DetectorLayout, adu_per_photon: float | None = None
) -> PanelLayout:
    """The CNN's panel tiling (and gain, ADU per photon) for OM's ``layout_info`` ASIC grid.

    This is the tiling ``sfx-cnnhit reduce`` uses for a geometry whose panels are these ASICs.
    """
    grid = DetectorLayout.from_layout_info(layout_info)
    return PanelLayout.regular(grid.nasics_y, grid.nasics_x, grid.asic_ny, grid.asic_nx, adu_per_photon)
