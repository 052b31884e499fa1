"""CrystFEL geometry files: read and write a :class:`~sfx_cnnhit.detector.DetectorGeometry`.

The text itself is parsed and formatted by :mod:`sfx_cnnhit.io.crystfel_geom`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.atomic import write_text_atomic
from sfx_cnnhit.io.crystfel_geom import format_geometry, parse_geometry


def read_geometry(path: str | os.PathLike[str]) -> DetectorGeometry:
    """Read a CrystFEL ``.geom`` file (see :mod:`sfx_cnnhit.io.crystfel_geom` for what is supported).

    Raises:
        ConfigError: the file cannot be read, or names the file and line of the first problem.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read geometry file ({err.strerror or err})") from None
    return parse_geometry(text, str(path))


def write_geometry(
    geometry: DetectorGeometry,
    path: str | os.PathLike[str],
    *,
    protect: tuple[str | os.PathLike[str], ...] = (),
    data_path: str | None = None,
    stacked: bool = True,
    peak_list: str | None = "/entry_1/result_1",
    photon_energy: float | str | None = None,
    clen: float | str | None = None,
    mask_path: str | None = None,
    mask_file: str | None = None,
) -> Path:
    """Write :func:`~sfx_cnnhit.io.crystfel_geom.format_geometry` text to ``path`` atomically (never onto
    an input file or one of ``protect``); the other arguments are those of ``format_geometry``.

    ``data_path`` may name an extra ``(N, ss, fs)`` dataset such as ``/entry_1/result_1/gradcam``: the
    file then opens that dataset in CrystFEL's viewer with the same panels."""
    text = format_geometry(
        geometry,
        data_path=data_path,
        stacked=stacked,
        peak_list=peak_list,
        photon_energy=photon_energy,
        clen=clen,
        mask_path=mask_path,
        mask_file=mask_file,
    )
    return write_text_atomic(path, text + "\n", protect=protect)
