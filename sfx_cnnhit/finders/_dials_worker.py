"""Run real DIALS spot finding on frames handed over as ``.npy`` files.

This script is executed by the interpreter DIALS is installed under (Debian: ``/usr/bin/python3``),
never imported by sfx-cnnhit: it uses only the standard library, numpy and DIALS/dxtbx.

Usage: ``python3 _dials_worker.py WORKDIR``, where WORKDIR holds

* ``request.json``: ``{"mode": "spots" | "strong" | "counts", "params": {...}, "panels": [[ss0, ss1, fs0, fs1], ...]}``
  with the DIALS parameter names of ``sfx_cnnhit.finders.dispersion.DialsParams`` and the half-open
  slab rectangle of every detector panel (mode ``counts`` has ``"grid": [{...}, ...]``, several
  parameter sets, instead of ``params``);
* ``frames.npy``: float32 ``(n, ss, fs)``; ``masks.npy``: bool ``(n, ss, fs)``, True = good pixel
  (resolution limits are already in the mask: ``d_min``/``d_max`` are not passed to DIALS).

It writes ``result.npz``. Mode ``spots`` runs ``dials.find_spots``'s library path on an in-memory image
set of stills (``SpotFinderFactory``: threshold extension, 2-D labelling, size and peak-centroid
filters) and stores per spot ``frame``, ``fs``, ``ss`` (slab pixels, DIALS ``xyzobs.px`` minus 0.5),
``intensity`` (``intensity.sum.value``), ``num_pixels`` and ``max_pixel_intensity``. Mode ``strong``
stores ``strong``, bool ``(n, ss, fs)``: the threshold extension's strong pixels before labelling.
Mode ``counts`` runs the spot finder once per parameter set of ``grid`` on the same image set and
stores ``counts``, int ``(n_sets, n)``: spots per frame (one process start for a whole tuning grid).
All add ``seconds``, the time spent inside DIALS (imports and file transfer excluded).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from dxtbx import flumpy

# The spot finder's modules are imported inside the functions that use them: they take 2-4 s to import
# (dxtbx.model pulls in scikit-learn and pandas), which mode "strong" does not need.

# Masked pixels are handed to DIALS as this value, below the panels' trusted range, so that dxtbx's
# trusted-range mask removes them frame by frame (a static lookup mask cannot vary per frame).
MASKED_VALUE = -1.0e30
TRUSTED_RANGE = (-1.0e29, 1.0e300)
# Placeholder geometry: spot finding without d_min/d_max never uses it.
PIXEL_MM, DISTANCE_MM, WAVELENGTH_A = 0.1, 100.0, 1.0


def phil_params(params: dict[str, Any]) -> Any:
    """``dials.find_spots`` parameters from our DIALS-named dict (resolution limits left out)."""
    from dials.command_line.find_spots import phil_scope
    from libtbx.phil import parse

    ky, kx = params["kernel_size"]
    lines = [
        f"spotfinder.threshold.algorithm={params['algorithm']}",
        f"spotfinder.threshold.dispersion.kernel_size={ky} {kx}",
        f"spotfinder.threshold.dispersion.sigma_background={params['sigma_background']!r}",
        f"spotfinder.threshold.dispersion.sigma_strong={params['sigma_strong']!r}",
        f"spotfinder.threshold.dispersion.min_local={params['min_local']}",
        f"spotfinder.threshold.dispersion.global_threshold={params['global_threshold']!r}",
        f"spotfinder.filter.min_spot_size={params['min_spot_size']}",
        f"spotfinder.filter.max_spot_size={params['max_spot_size']}",
        f"spotfinder.filter.max_separation={params['max_separation']!r}",
        "spotfinder.filter.max_strong_pixel_fraction=1.0",
        "spotfinder.mp.nproc=1",
        "output.shoeboxes=True",
    ]
    if params["gain"] is not None:
        lines.append(f"spotfinder.threshold.dispersion.gain={params['gain']!r}")
    return phil_scope.fetch(parse("\n".join(lines))).extract()


class _Frame:
    """One frame as dxtbx's ``MemReader`` wants it: ``get_raw_data()`` gives one flex array per panel."""

    def __init__(self, data: np.ndarray, mask: np.ndarray, panels: list[list[int]]) -> None:
        self._data = data
        self._mask = mask
        self._panels = panels

    def get_raw_data(self) -> tuple[Any, ...]:
        image = np.where(self._mask, self._data, MASKED_VALUE).astype(np.float64)
        return tuple(flumpy.from_numpy(np.ascontiguousarray(image[s0:s1, f0:f1])) for s0, s1, f0, f1 in self._panels)


def build_detector(panels: list[list[int]]) -> Any:
    """Flat pixel-array panels laid out as in the slab (placeholder distance and pixel size)."""
    from dxtbx.model import Detector

    detector = Detector()
    for i, (s0, s1, f0, f1) in enumerate(panels):
        panel = detector.add_panel()
        panel.set_name(f"panel{i}")
        panel.set_type("SENSOR_PAD")
        panel.set_image_size((f1 - f0, s1 - s0))
        panel.set_pixel_size((PIXEL_MM, PIXEL_MM))
        panel.set_trusted_range(TRUSTED_RANGE)
        panel.set_frame((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (f0 * PIXEL_MM, -s0 * PIXEL_MM, -DISTANCE_MM))
    return detector


def experiment_list(frames: np.ndarray, masks: np.ndarray, panels: list[list[int]]) -> Any:
    """The frames as one in-memory image set of stills, in an experiment list."""
    from dxtbx.imageset import ImageSet, ImageSetData, MemReader
    from dxtbx.model import BeamFactory, Experiment, ExperimentList

    detector = build_detector(panels)
    beam = BeamFactory.simple(WAVELENGTH_A)
    n = frames.shape[0]
    imageset = ImageSet(ImageSetData(MemReader([_Frame(frames[i], masks[i], panels) for i in range(n)]), None))
    for i in range(n):
        imageset.set_beam(beam, i)
        imageset.set_detector(detector, i)
    return ExperimentList([Experiment(imageset=imageset, beam=beam, detector=detector)])


def spot_table(experiments: Any, params: dict[str, Any]) -> Any:
    """DIALS's reflection table of strong spots with these parameters."""
    from dials.algorithms.spot_finding.factory import SpotFinderFactory

    finder = SpotFinderFactory.from_parameters(params=phil_params(params), experiments=experiments, is_stills=True)
    return finder.find_spots(experiments)


def spot_counts(frames: np.ndarray, masks: np.ndarray, request: dict[str, Any]) -> dict[str, np.ndarray]:
    """Spots per frame for every parameter set of ``request["grid"]``: ``counts`` ``(n_sets, n)``."""
    experiments = experiment_list(frames, masks, request["panels"])
    n = frames.shape[0]
    counts = np.zeros((len(request["grid"]), n), dtype=np.int64)
    start = time.perf_counter()
    for k, params in enumerate(request["grid"]):
        table = spot_table(experiments, params)
        if table.size():
            z = flumpy.to_numpy(table["xyzobs.px.value"].parts()[2])
            counts[k] = np.bincount(np.floor(z).astype(np.int64), minlength=n)[:n]
    return {"counts": counts, "seconds": np.array(time.perf_counter() - start)}


def find_spots(frames: np.ndarray, masks: np.ndarray, request: dict[str, Any]) -> dict[str, np.ndarray]:
    from dials.algorithms.shoebox import MaskCode

    panels = request["panels"]
    experiments = experiment_list(frames, masks, panels)
    start = time.perf_counter()
    table = spot_table(experiments, request["params"])
    seconds = np.array(time.perf_counter() - start)
    if table.size() == 0:
        empty = {key: np.zeros(0) for key in ("frame", "fs", "ss", "intensity", "num_pixels", "max_pixel_intensity")}
        return {**empty, "seconds": seconds}
    x, y, z = (flumpy.to_numpy(part) for part in table["xyzobs.px.value"].parts())
    panel = flumpy.to_numpy(table["panel"]).astype(np.int64)
    origin = np.array(panels, dtype=np.float64)
    shoeboxes = table["shoebox"]
    return {
        "frame": np.floor(z),
        "fs": x - 0.5 + origin[panel, 2],
        "ss": y - 0.5 + origin[panel, 0],
        "intensity": flumpy.to_numpy(table["intensity.sum.value"]),
        "num_pixels": flumpy.to_numpy(shoeboxes.count_mask_values(MaskCode.Valid | MaskCode.Foreground)),
        "max_pixel_intensity": np.array([flumpy.to_numpy(sb.data).max() for sb in shoeboxes]),
        "seconds": seconds,
    }


def strong_masks(frames: np.ndarray, masks: np.ndarray, request: dict[str, Any]) -> dict[str, np.ndarray]:
    """DIALS's threshold strategy (what its ``dispersion``/``dispersion_extended`` extensions call)."""
    from dials.algorithms.spot_finding import threshold

    params = request["params"]
    strategy = {
        "dispersion": threshold.DispersionThresholdStrategy,
        "dispersion_extended": threshold.DispersionExtendedThresholdStrategy,
    }[params["algorithm"]]
    settings = {
        "kernel_size": tuple(params["kernel_size"]),
        "gain": params["gain"],
        "n_sigma_b": params["sigma_background"],
        "n_sigma_s": params["sigma_strong"],
        "min_count": params["min_local"],
        "global_threshold": params["global_threshold"],
    }
    strong = np.zeros(frames.shape, dtype=bool)
    start = time.perf_counter()
    for i in range(frames.shape[0]):
        for s0, s1, f0, f1 in request["panels"]:
            # A new strategy per image, as DIALS's threshold extensions do (it caches its gain map).
            algorithm = strategy(**settings)
            image = flumpy.from_numpy(np.ascontiguousarray(frames[i, s0:s1, f0:f1], dtype=np.float64))
            mask = flumpy.from_numpy(np.ascontiguousarray(masks[i, s0:s1, f0:f1]))
            strong[i, s0:s1, f0:f1] = flumpy.to_numpy(algorithm(image, mask))
    return {"strong": strong, "seconds": np.array(time.perf_counter() - start)}


def main(workdir: Path) -> None:
    logging.disable(logging.CRITICAL)
    request = json.loads((workdir / "request.json").read_text())
    frames = np.load(workdir / "frames.npy")
    masks = np.load(workdir / "masks.npy")
    run = {"spots": find_spots, "strong": strong_masks, "counts": spot_counts}[request["mode"]]
    result: dict[str, Any] = run(frames, masks, request)
    np.savez(workdir / "result.npz", **result)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
