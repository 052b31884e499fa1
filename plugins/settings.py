"""What the OM and Cheetah plugins share: the CNN's panel tiling from OM's ``layout_info``. (The CNN
finder's settings, read from both plugins' files, are :class:`~sfx_cnnhit.finders.config.CnnHitParams`.)"""

from __future__ import annotations

from collections.abc import Mapping

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.models.preprocess import PanelLayout


def panel_layout_from_layout_info(
    layout_info: Mapping[str, int], adu_per_photon: float | None = None
) -> PanelLayout:
    """The CNN's panel tiling (and gain, ADU per photon) for OM's ``layout_info`` ASIC grid.

    This is the tiling ``sfx-cnnhit reduce`` uses for a geometry whose panels are these ASICs.
    """
    try:
        n_x, n_y = int(layout_info["nasics_x"]), int(layout_info["nasics_y"])
        a_x, a_y = int(layout_info["asic_nx"]), int(layout_info["asic_ny"])
    except KeyError as exc:
        raise ConfigError(f"layout_info: missing {exc.args[0]!r}") from None
    return PanelLayout.regular(n_y, n_x, a_y, a_x, adu_per_photon)
