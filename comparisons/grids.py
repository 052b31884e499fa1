"""Each method's tuning grid (:class:`~sfx_cnnhit.comparisons.contest.Grid`), and DIALS's gain-aware defaults.

Grid values of thresholds are in photons and converted with the detector's ADU per photon, so one
grid serves photon counters and integrating detectors; the cells record the values in ADU that the
finders run with. A key the user fixed (an explicit option) is held at its value and not searched.

- peakfinder8 (:data:`PEAKFINDER8_GRID`): ADC threshold, minimum SNR, minimum pixels per peak, local
  background radius; frames with the pedestal estimate subtracted; 72 settings.
- DIALS (:data:`DIALS_GRID`): pedestal handling, gain, ``sigma_strong``, global threshold, kernel,
  minimum spot size, algorithm ``dispersion_extended``; 64 settings, all run by one DIALS process
  per batch of frames.
- CNN: the shipped model as it is; only its P(hit) threshold is chosen.

Every cell's hit rule (``min_peaks``, ``n_spots >= N``) is chosen from its counts afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import PHOTON_MIN_PEAKS
from sfx_cnnhit.finders.dials import DialsSpotFinder
from sfx_cnnhit.finders.dispersion import DialsParams, DispersionSpotFinder
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

from .contest import Grid, grid_cells
from .methods import Method
from .pedestal import PEDESTAL_MODES, subtract_pedestal

#: peakfinder8's grid; ``adc_threshold`` in photons above the pedestal.
PEAKFINDER8_GRID: dict[str, tuple[Any, ...]] = {
    "pedestal": ("estimate",),
    "adc_threshold": (5.0, 20.0),
    "minimum_snr": (3.0, 4.0, 5.0, 6.0),
    "min_pixel_count": (1, 2, 3),
    "local_bg_radius": (2, 3, 4),
}
#: DIALS's grid; ``gain`` in units of the detector's ADU per photon, ``global_threshold`` in photons.
DIALS_GRID: dict[str, tuple[Any, ...]] = {
    "pedestal": PEDESTAL_MODES,
    "gain": (1.0, 2.0),
    "sigma_strong": (3.0, 4.0),
    "global_threshold": (5.0, 20.0),
    "kernel_size": ((3, 3), (5, 5)),
    "min_spot_size": (2, 3),
}
#: DIALS's global threshold of the gain-aware defaults, in photons above the pedestal.
DIALS_PHOTON_GLOBAL_THRESHOLD = 10.0


def dials_photon_defaults(adu_per_photon: float) -> tuple[DialsParams, HitRule]:
    """DIALS's defaults with its gain set to the detector's, a global threshold of
    :data:`DIALS_PHOTON_GLOBAL_THRESHOLD` photons and the hit rule of peakfinder8's gain-aware defaults."""
    params = DialsParams(gain=adu_per_photon, global_threshold=DIALS_PHOTON_GLOBAL_THRESHOLD * adu_per_photon)
    return params, HitRule(min_peaks=PHOTON_MIN_PEAKS)


def _in_adu(grid: Mapping[str, Sequence[Any]], photon_keys: Sequence[str], gain: float) -> dict[str, tuple[Any, ...]]:
    return {k: tuple(v * gain for v in values) if k in photon_keys else tuple(values) for k, values in grid.items()}


def _by_pedestal(
    cells: Sequence[Mapping[str, Any]], frames: NDArray[np.float32], masks: NDArray[np.bool_], gain: float
) -> dict[str, NDArray[np.float32]]:
    """The frames as each pedestal mode of ``cells`` wants them."""
    return {mode: frames if mode == "none" else subtract_pedestal(frames, masks, gain)
            for mode in {c["pedestal"] for c in cells}}


def peakfinder8_grid(
    finder: Peakfinder8Finder,
    adu_per_photon: float,
    *,
    fixed: Mapping[str, Any] | None = None,
    fixed_cut: int | None = None,
    grid: Mapping[str, Sequence[Any]] = PEAKFINDER8_GRID,
) -> Grid:
    """peakfinder8's grid on ``finder``'s detector (its other parameters kept).

    Args:
        finder: the detector (radius map, ASICs, mask) and the parameters the grid leaves alone.
        adu_per_photon: converts the photon values of ``grid`` to ADU.
        fixed: keys (``Peakfinder8Params`` names, ``pedestal``) held at these values (ADU).
        fixed_cut: the user's ``min_peaks``; None: chosen.
    """
    cells = grid_cells(_in_adu(grid, ("adc_threshold",), adu_per_photon), fixed)
    finders = [finder.with_params(replace(finder.params, **{k: v for k, v in c.items() if k != "pedestal"}))
               for c in cells]

    def score(frames: NDArray[np.float32], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        prepared = _by_pedestal(cells, frames, masks, adu_per_photon)
        return np.array([[f.find_peaks_masked(x, m).num_peaks for x, m in zip(prepared[c["pedestal"]], masks,
                                                                             strict=True)]
                         for c, f in zip(cells, finders, strict=True)], np.float64)

    return Grid("peakfinder8", cells, score, fixed_cut=fixed_cut)


def dials_grid(
    name: str,
    base: DialsParams,
    adu_per_photon: float,
    *,
    real: bool,
    geometry: DetectorGeometry | None = None,
    fixed: Mapping[str, Any] | None = None,
    fixed_cut: int | None = None,
    grid: Mapping[str, Sequence[Any]] = DIALS_GRID,
) -> Grid:
    """DIALS's grid around ``base`` (the parameters the grid leaves alone).

    Args:
        name: the method's name (``dials`` or ``dispersion``).
        real: score with real DIALS (one process per batch for the whole grid), else the built-in finder.
        fixed: keys (DIALS names, ``pedestal``) held at these values (ADU); fixed_cut: the user's min spots.
    """
    cells = grid_cells(_in_adu(grid, ("gain", "global_threshold"), adu_per_photon), fixed)
    params = [base.with_overrides(**{k: v for k, v in c.items() if k != "pedestal"}) for c in cells]
    if real:
        dials = DialsSpotFinder(base, geometry=geometry)

        def count(x: NDArray[np.float32], masks: NDArray[np.bool_], rows: list[int]) -> NDArray[np.float64]:
            return dials.spot_counts(x, masks, [params[k] for k in rows]).astype(np.float64)
    else:
        finders = [DispersionSpotFinder(p, geometry=geometry) for p in params]

        def count(x: NDArray[np.float32], masks: NDArray[np.bool_], rows: list[int]) -> NDArray[np.float64]:
            return np.array([finders[k].classify(x, masks).scores for k in rows], np.float64)

    def score(frames: NDArray[np.float32], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        out = np.empty((len(cells), len(frames)))
        for mode, x in _by_pedestal(cells, frames, masks, adu_per_photon).items():
            rows = [k for k, c in enumerate(cells) if c["pedestal"] == mode]
            out[rows] = count(x, masks, rows)
        return out

    return Grid(name, cells, score, fixed_cut=fixed_cut)


def cnn_grid(method: Method, fixed_cut: float | None = None) -> Grid:
    """The CNN as it is (one cell); only its P(hit) threshold is chosen (``fixed_cut``: the user's)."""

    def score(frames: NDArray[np.float32], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.asarray(method.finder.classify(frames, masks).scores, np.float64)[None]

    return Grid("cnn", [{"model": method.settings.get("model", "default")}], score, counts=False,
                fixed_cut=fixed_cut, what="threshold")
