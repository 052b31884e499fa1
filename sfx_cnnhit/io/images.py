"""Single-frame image files read through fabio: CBF/miniCBF, SMV (``.img``), EDF, TIFF, MarCCD."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.crystfel_geom import HC_EV_M

#: Extensions read through fabio.
IMAGE_SUFFIXES = (".cbf", ".img", ".smv", ".edf", ".tif", ".tiff", ".mccd", ".mar3450", ".mar2300")

_CBF_VALUE = re.compile(r"#\s*(Wavelength|Detector_distance|Count_cutoff)\s+([-+0-9.eE]+)\s*(\S*)")


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header tells.

    Attributes:
        n_frames: frames in the file (multi-frame EDF/TIFF may hold several).
        shape, dtype: of the first frame, or None when only the header was read.
        metadata: ``key -> (label, value)`` for ``photon_energy_ev`` (eV) and ``clen_m`` (m).
        saturation: a miniCBF ``Count_cutoff``, if any.
    """

    n_frames: int
    shape: tuple[int, int] | None
    dtype: np.dtype | None
    metadata: dict[str, tuple[str, float]] = field(default_factory=dict)
    saturation: float | None = None


def check_dtype(where: str, dtype: np.dtype) -> None:
    """Frames must be integers or floats (not complex, strings, bool ...)."""
    if np.dtype(dtype).kind not in "iuf":
        raise InputError(f"{where}: unsupported dtype {dtype} (frames must be integers or floats)")


def read_image_info(path: str, *, header_only: bool) -> ImageInfo:
    """Open an image file (its header only, when ``header_only``)."""
    import fabio

    try:
        img = fabio.openheader(path) if header_only else fabio.open(path)
    except Exception as err:  # fabio raises many types for unreadable files
        raise InputError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    with img:
        header = dict(img.header or {})
        n = int(getattr(img, "nframes", 1) or 1)
        data = None if header_only else img.data
    shape = dtype = None
    if data is not None:
        if data.ndim != 2:
            raise InputError(f"{path}: image of rank {data.ndim}; expected a 2-D frame")
        check_dtype(path, data.dtype)
        shape, dtype = (int(data.shape[0]), int(data.shape[1])), data.dtype
    metadata, saturation = header_metadata(header)
    return ImageInfo(n, shape, dtype, metadata, saturation)


def read_image_frame(path: str, index: int, shape: tuple[int, int]) -> NDArray[np.float32]:
    """Frame ``index`` of an image file as float32, checked against the expected ``shape``."""
    import fabio

    try:
        with fabio.open(path) as img:
            data = np.asarray((img if index == 0 else img.getframe(index)).data)
    except Exception as err:  # fabio raises many types for unreadable files
        raise InputError(f"{path}: cannot read the image ({type(err).__name__}: {err})") from None
    if data.shape != shape:
        raise InputError(f"{path}: frame shape {data.shape} differs from the other inputs' {shape}")
    check_dtype(path, data.dtype)
    return data.astype(np.float32)


def header_metadata(header: dict[str, Any]) -> tuple[dict[str, tuple[str, float]], float | None]:
    """Photon energy (eV), distance (m) and saturation from a miniCBF (Pilatus) or SMV header."""
    meta: dict[str, tuple[str, float]] = {}
    saturation = None
    contents = str(header.get("_array_data.header_contents", ""))
    for key, value, unit in _CBF_VALUE.findall(contents):
        v = float(value)
        if key == "Wavelength" and v > 0:
            meta["photon_energy_ev"] = ("CBF header Wavelength", HC_EV_M / (v * 1e-10))
        elif key == "Detector_distance":
            meta["clen_m"] = ("CBF header Detector_distance", v * (1e-3 if unit == "mm" else 1.0))
        elif key == "Count_cutoff":
            saturation = v
    conversions: tuple[tuple[str, str, Callable[[float], float]], ...] = (
        ("WAVELENGTH", "photon_energy_ev", lambda v: HC_EV_M / (v * 1e-10)),  # Å
        ("DISTANCE", "clen_m", lambda v: v * 1e-3),  # mm
    )
    for key, label, convert in conversions:
        try:
            value = float(header[key])
        except (KeyError, ValueError):
            continue  # absent or malformed optional header value: no metadata rather than no frames
        if value > 0:
            meta[label] = (f"SMV header {key}", convert(value))
    return meta, saturation
