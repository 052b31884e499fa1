"""CrystFEL geometry files: read and write a :class:`~sfx_cnnhit.detector.DetectorGeometry`.

The text itself is parsed and formatted by :mod:`sfx_cnnhit.io.crystfel_geom`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    **format_options: Any,
) -> Path:
    """Write :func:`~sfx_cnnhit.io.crystfel_geom.format_geometry` text to ``path`` atomically (never onto
    an input file or one of ``protect``); ``format_options`` are ``format_geometry``'s keywords
    (``data_path`` may name an extra ``(N, ss, fs)`` dataset such as ``/entry_1/result_1/gradcam``:
    the file then opens that dataset in CrystFEL's viewer with the same panels)."""
    return write_text_atomic(path, format_geometry(geometry, **format_options) + "\n", protect=protect)
