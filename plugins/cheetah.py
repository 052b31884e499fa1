"""Cheetah drop-in: the CNN hit finder configured from a Cheetah ini file.

Our keys sit beside Cheetah's own, in its ``key=value`` style, case-insensitive::

    cnnModel=/path/to/model.pt    ; checkpoint or shipped model name (empty/absent: shipped default)
    cnnThreshold=0.5              ; P(hit) at or above which a frame is a hit (default: the model's own)
    cnnDevice=auto                ; auto (default), cpu, cuda, cuda:1 ...
    cnnExplain=gradcam            ; gradcam | guided | none (default): heat map your script makes on hits
    cnnBatchSize=64               ; frames per forward pass of classify() (default 64)
    cnnADUperPhoton=32            ; detector gain (default 1: photon counter)
    cnnHotPixelMap=1              ; learn hot pixels from the frames seen (hotpixFreq) and mask them (default 1)

Cheetah's ``hitfinder*`` keys (``hitfinderADC``, ``hitfinderMinSNR``, ``hitfinderMinPixCount`` ...)
configure the peakfinder8 that localises the peaks of hits, read as
:func:`sfx_cnnhit.finders.config.from_cheetah_settings` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.finders.config import CnnHitParams, Peakfinder8Params, from_cheetah_settings, read_cheetah_ini
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

#: Our Cheetah ini keys (lower case, as :func:`read_cheetah_ini` gives them) -> setting.
CHEETAH_CNN_KEYS = {
    "cnnmodel": "model",
    "cnnthreshold": "threshold",
    "cnndevice": "device",
    "cnnexplain": "explain",
    "cnnbatchsize": "batch_size",
    "cnnprecision": "precision",
    "cnnaduperphoton": "adu_per_photon",
    "cnnhotpixelmap": "hot_pixel_map",
}
CHEETAH_CNN_PREFIX = "cnn"


def cnn_settings_from_cheetah(entries: Mapping[str, Any], *, source: str = "Cheetah parameters") -> CnnHitParams:
    """:class:`CnnHitParams` from Cheetah ini entries (keys any case); unknown ``cnn*`` keys are errors."""
    values: dict[str, Any] = {}
    for key, value in entries.items():
        lowered = str(key).lower()
        if lowered in CHEETAH_CNN_KEYS:
            values[CHEETAH_CNN_KEYS[lowered]] = value
        elif lowered.startswith(CHEETAH_CNN_PREFIX):
            known = ("cnnModel, cnnThreshold, cnnDevice, cnnExplain, cnnBatchSize, cnnPrecision, cnnADUperPhoton, "
                     "cnnHotPixelMap")
            raise ConfigError(f"{source}: unknown CNN key {key!r} (known: {known})")
    return CnnHitParams.from_values(values, source=source)


def read_cheetah_cnn(path: str | os.PathLike[str]) -> tuple[CnnHitParams, Peakfinder8Params, HitRule]:
    """The CNN settings, the peakfinder8 parameters for hits, and Cheetah's peak-count hit rule.

    The hit rule (``hitfinderNpeaks <= n <= hitfinderNpeaksMax``) is returned for scripts that keep
    Cheetah's test; the CNN alone decides hits in :class:`CnnHitFinder`.

    Raises:
        ConfigError: unreadable file, unknown ``cnn*``/``hitfinder*`` key or invalid value.
    """
    entries = read_cheetah_ini(path)
    settings = cnn_settings_from_cheetah(entries, source=str(path))
    params, rule = from_cheetah_settings(entries, source=str(path))
    return settings, params, rule


def cnn_finder_from_cheetah_ini(
    path: str | os.PathLike[str],
    *,
    radius_map: NDArray[np.floating] | None = None,
    frame_shape: tuple[int, int] | None = None,
    beam_center: tuple[float, float] | None = None,
    layout_info: Mapping[str, int] | None = None,
    panel_layout: PanelLayout | None = None,
) -> CnnHitFinder:
    """A :class:`CnnHitFinder` configured by a Cheetah ini file.

    Args:
        path: the ini file.
        radius_map: ``(ss, fs)`` distance of each pixel from the beam in pixels (Cheetah's pixel map
            radius); or give ``frame_shape`` (and ``beam_center`` ``(fs, ss)``, default the centre)
            for a flat detector.
        layout_info: OM's ASIC grid ``{asic_nx, asic_ny, nasics_x, nasics_y}`` (default one ASIC);
            with the ini's ``cnnADUperPhoton`` also sets the CNN's panel tiling and gain unless
            ``panel_layout`` is given.
        panel_layout: the CNN's panel tiling (see :class:`~sfx_cnnhit.detector.PanelLayout`).

    Raises:
        ConfigError: neither ``radius_map`` nor ``frame_shape`` (or both), or any error of
            :func:`read_cheetah_cnn`.
    """
    if (radius_map is None) == (frame_shape is None):
        raise ConfigError(f"{Path(path)}: give the detector as either radius_map or frame_shape")
    settings, params, rule = read_cheetah_cnn(path)
    if radius_map is not None:
        peakfinder = Peakfinder8Finder(params, radius_map=radius_map, layout=layout_info, hit_rule=rule)
    else:
        assert frame_shape is not None
        asic_shape = None if layout_info is None else (int(layout_info["asic_ny"]), int(layout_info["asic_nx"]))
        peakfinder = Peakfinder8Finder.from_beam_center(
            frame_shape, params, rule, beam_center=beam_center, asic_shape=asic_shape
        )
    if panel_layout is None and (layout_info is not None or settings.adu_per_photon is not None):
        panel_layout = PanelLayout.from_layout_info(peakfinder.layout, settings.adu_per_photon)
    return CnnHitFinder.from_params(settings, peakfinder=peakfinder, panel_layout=panel_layout)
