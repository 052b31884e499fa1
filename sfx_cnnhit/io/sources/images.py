"""Image inputs read with fabio (CBF, SMV ``.img``, EDF, TIFF; the suffixes are
:data:`sfx_cnnhit.io.images.IMAGE_SUFFIXES`): one input per file, its frames read by
:func:`sfx_cnnhit.io.images.read_image_frame`."""

from __future__ import annotations

import numpy as np

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.io.images import read_image_info
from sfx_cnnhit.io.sources.base import _Input, _MetaSource
from sfx_cnnhit.io.sources.metadata import _metadata_sources


def _image_input(path: str, *, header_only: bool, geometry: DetectorGeometry | None) -> _Input:
    """An image file; after the first one only headers are read when opening (shapes checked on read)."""
    info = read_image_info(path, header_only=header_only)
    inp = _Input(
        path=path,
        kind="image",
        n_total=info.n_frames,
        raw_shape=info.shape or (0, 0),
        dtype=info.dtype or np.dtype(np.float32),
        metadata={key: _MetaSource(label, constant=value) for key, (label, value) in info.metadata.items()},
        header_saturation=info.saturation,
    )
    inp.metadata.update(_metadata_sources(None, inp.n_total, geometry))
    return inp
