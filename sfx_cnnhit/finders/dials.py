"""Real DIALS spot finding, run in DIALS's own Python interpreter as a subprocess.

DIALS cannot be imported into our environment (Debian installs it under ``/usr/bin/python3`` with
numpy 1.24; the DIALS bundle ships its own Python). :class:`DialsSpotFinder` therefore writes a chunk
of frames to a temporary directory as ``.npy`` files, runs :mod:`sfx_cnnhit.finders._dials_worker`
under that interpreter once per chunk, and reads the spots back. The worker calls DIALS's
``SpotFinderFactory`` on an in-memory image set of stills: the same library path as
``dials.find_spots`` (threshold extension, 2-D labelling, size and peak-centroid filters) without
writing images in a format dxtbx reads.

The interpreter is ``$SFX_CNNHIT_DIALS_PYTHON`` if set, else ``dials.python`` on ``PATH`` (DIALS
bundle), else ``/usr/bin/python3`` (Debian/Ubuntu ``apt-get install -y dials``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, InputError, NotAvailableError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.dispersion import DialsFinderBase, DialsParams
from sfx_cnnhit.types import Classification, PeakList

WORKER = Path(__file__).with_name("_dials_worker.py")
DIALS_PYTHON_ENV = "SFX_CNNHIT_DIALS_PYTHON"
INSTALL_HINT = (
    "install DIALS with `apt-get install -y dials` (Debian/Ubuntu) or the DIALS bundle "
    "(set SFX_CNNHIT_DIALS_PYTHON to its dials.python), or use the built-in 'dispersion' finder, "
    "which applies the same per-pixel criteria without DIALS"
)
SPOT_KEYS = ("fs", "ss", "intensity", "num_pixels", "max_pixel_intensity")


def dials_python() -> str:
    """Path of the Python interpreter DIALS is installed under (it may not exist)."""
    return os.environ.get(DIALS_PYTHON_ENV) or shutil.which("dials.python") or "/usr/bin/python3"


@functools.cache
def _probe(python: str) -> str | None:
    """None if ``python`` imports DIALS's spot finder, else why not."""
    if not Path(python).exists():
        return f"{python} does not exist"
    probe = subprocess.run(
        [python, "-c", "import dials.algorithms.spot_finding.factory, dxtbx.flumpy"],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        lines = probe.stderr.strip().splitlines()
        return f"{python} cannot import DIALS ({lines[-1] if lines else 'exit code ' + str(probe.returncode)})"
    return None


def dials_available() -> bool:
    """Whether real DIALS can be run (see :func:`dials_python`)."""
    return _probe(dials_python()) is None


def require_dials() -> str:
    """The DIALS interpreter, or :class:`NotAvailableError` saying how to install DIALS."""
    python = dials_python()
    problem = _probe(python)
    if problem:
        raise NotAvailableError(f"real DIALS is not available: {problem}; {INSTALL_HINT}")
    return python


class DialsSpotFinder(DialsFinderBase):
    """Spot counting with real DIALS (``dispersion`` / ``dispersion_extended``), batched per subprocess.

    Same constructor as :class:`~sfx_cnnhit.finders.dispersion.DispersionSpotFinder`, plus
    ``frames_per_call``: frames handed to one DIALS process (each start costs about 1.5 s; each
    1024x1024 frame about 4 MB of temporary disk). Construction fails with
    :class:`~sfx_cnnhit.errors.NotAvailableError` when DIALS is not installed.

    Peaks: ``fs``/``ss`` = DIALS ``xyzobs.px.value`` minus 0.5 (slab pixels, pixel centre at an
    integer), ``intensity`` = ``intensity.sum.value`` (ADU, no background subtracted), ``num_pixels``,
    ``max_pixel_intensity`` (ADU), ``snr`` as :func:`~sfx_cnnhit.finders.dispersion.spot_snr`.
    Resolution limits are applied to the mask before DIALS sees the frames, as DIALS's own
    ``spotfinder.filter.d_min/d_max`` mask does.
    """

    name: ClassVar[str] = "dials"
    OPTIONS: ClassVar[tuple[str, ...]] = ("hit_rule", "frames_per_call")

    def __init__(
        self,
        params: DialsParams | None = None,
        *,
        mask: NDArray[np.bool_] | None = None,
        geometry: DetectorGeometry | None = None,
        resolution_map: NDArray[np.floating] | None = None,
        photon_energy_ev: float | None = None,
        hit_rule: HitRule | None = None,
        frames_per_call: int = 256,
    ) -> None:
        super().__init__(
            params,
            mask=mask,
            geometry=geometry,
            resolution_map=resolution_map,
            photon_energy_ev=photon_energy_ev,
            hit_rule=hit_rule,
        )
        if frames_per_call < 1:
            raise ConfigError(f"frames_per_call must be >= 1, got {frames_per_call}")
        self.frames_per_call = frames_per_call
        self.python = require_dials()
        self.seconds_in_dials = 0.0

    def find_peaks_masked(self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None) -> PeakList:
        masks = None if mask is None else np.asarray(mask)[None]
        return self.find_peaks_batch(np.asarray(data)[None], masks)[0]

    def classify(self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None) -> Classification:
        frames = np.asarray(frames)
        peaks = self.find_peaks_batch(frames[None] if frames.ndim == 2 else frames, masks)
        counts = np.array([p.num_peaks for p in peaks], dtype=np.int64)
        return Classification(scores=counts.astype(np.float64), hits=self.hit_rule.is_hit(counts), peaks=peaks)

    def find_peaks_batch(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> list[PeakList]:
        """Peak lists of a ``(n, ss, fs)`` batch (masks: True = good), ``frames_per_call`` per DIALS run."""
        result: list[PeakList] = []
        for chunk in self._chunks(len(frames)):
            spots = self._run("spots", frames[chunk], None if masks is None else masks[chunk])
            frame_of_spot = spots["frame"].astype(np.int64)
            for i in range(len(frames[chunk])):
                mine = frame_of_spot == i
                result.append(self.peak_list({key: spots[key][mine] for key in SPOT_KEYS}))
        return result

    def strong_pixels(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> NDArray[np.bool_]:
        """DIALS's strong-pixel masks before labelling (its threshold strategy), the shape of ``frames``.

        Args:
            frames: one ``(ss, fs)`` frame or a ``(n, ss, fs)`` batch.
            masks: matching per-frame mask(s), True = good, on top of the finder's own.
        """
        frames = np.asarray(frames)
        if frames.ndim == 2:
            batch = self.strong_pixels(frames[None], None if masks is None else np.asarray(masks)[None])
            return cast("NDArray[np.bool_]", batch[0])
        return np.concatenate(
            [
                self._run("strong", frames[chunk], None if masks is None else masks[chunk])["strong"]
                for chunk in self._chunks(len(frames))
            ]
        )

    def spot_counts(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None, grid: Sequence[DialsParams]
    ) -> NDArray[np.int64]:
        """Spots per frame of a ``(n, ss, fs)`` batch for every parameter set of ``grid``: ``(len(grid), n)``.

        One DIALS process per ``frames_per_call`` frames runs the whole grid (a tuning grid pays one
        process start, not one per setting). The finder's own parameters give only the mask
        (``d_min``/``d_max``); the hit rule is not applied.
        """
        extra = {"grid": [params.as_dict() for params in grid]}
        return np.concatenate(
            [
                self._run("counts", frames[chunk], None if masks is None else masks[chunk], extra)["counts"]
                for chunk in self._chunks(len(frames))
            ],
            axis=1,
        ).astype(np.int64)

    def _chunks(self, n_frames: int) -> list[slice]:
        """Slices of at most ``frames_per_call`` frames: one DIALS process each."""
        return [slice(i, i + self.frames_per_call) for i in range(0, n_frames, self.frames_per_call)]

    def _run(
        self,
        mode: str,
        frames: NDArray[np.floating],
        masks: NDArray[np.bool_] | None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, NDArray[np.generic]]:
        """One DIALS subprocess on a chunk of frames (``extra``: more request entries); returns the
        worker's ``result.npz`` arrays."""
        if frames.ndim != 3:
            raise InputError(f"frames must be (n, ss, fs), got shape {frames.shape}")
        if masks is not None and np.shape(masks) != frames.shape:
            raise InputError(f"masks shape {np.shape(masks)} does not match frames shape {frames.shape}")
        good = np.stack([self.pixel_mask(f, None if masks is None else masks[i]) for i, f in enumerate(frames)])
        panels = [[s.start, s.stop, f.start, f.stop] for s, f in self.panel_slices(frames.shape[1:])]
        with tempfile.TemporaryDirectory(prefix="sfx-cnnhit-dials-") as tmp:
            workdir = Path(tmp)
            np.save(workdir / "frames.npy", np.where(good, frames, 0))
            np.save(workdir / "masks.npy", good)
            request = {"mode": mode, "params": self.params.as_dict(), "panels": panels, **(extra or {})}
            (workdir / "request.json").write_text(json.dumps(request))
            # Run a copy: next to the original, our dials.py would shadow DIALS's own package.
            worker = shutil.copy(WORKER, workdir / "dials_worker.py")
            done = subprocess.run([self.python, str(worker), str(workdir)], capture_output=True, text=True)
            if done.returncode:
                tail = "\n".join(done.stderr.strip().splitlines()[-5:])
                raise NotAvailableError(f"DIALS spot finding failed under {self.python}:\n{tail}")
            with np.load(workdir / "result.npz") as result:
                arrays = {key: result[key] for key in result.files}
        self.seconds_in_dials += float(arrays.pop("seconds"))
        return arrays
