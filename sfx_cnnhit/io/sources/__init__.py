"""Frame sources: one reader API over CXI/HDF5 stacks, ``%`` paths, fabio images and ``.lst`` lists.

:func:`open_frames` inspects every input once (shapes, dtypes, masks, event ids, metadata) and returns
a :class:`FrameSource`; :meth:`FrameSource.batches` then streams :class:`~sfx_cnnhit.types.FrameBatch`
objects of at most ``chunk_size`` frames, so memory is bounded whatever the file size. Frames are
float32 ``(ss, fs)`` slabs: a 4-D ``(N, modules, y, x)`` stack (Cheetah's modular layout, European
XFEL's CXI) is presented with its modules stacked along ss. Bad pixels (see :mod:`sfx_cnnhit.io.masks`)
are False in ``FrameBatch.mask`` and set to 0 in ``FrameBatch.data``. Inputs are only ever read.

Modules (each imports only those listed before it):

- ``base``: the ``_Input`` record an opener returns, ``_MaskSource``, ``_MetaSource``, ``_exists``.
- ``metadata``: photon energy and camera length of any input (``_metadata_sources``).
- ``hdf5``: CXI/HDF5 stacks and CrystFEL ``%`` placeholder paths (``_open_hdf5_input``).
- ``images``: fabio images, CBF/SMV/EDF/TIFF (``_image_input``).
- ``lists``: ``.lst`` lists expanded into files (``_input_specs``) and their events selected (``_select``).
- ``masks``: each input's stored mask and bad-pixel rules (``_mask_source``, ``_pixel_rules``).
- ``reader``: ``_Reader``, reading frames, per-frame masks, event ids and metadata of an opened input.
- ``frames``: ``FrameSource`` and its batching.
- ``open``: ``open_frames``, dispatching each input to its kind.

Adding an input kind: write its opener in a new module (returning an ``_Input``, reading headers only),
dispatch to it in ``open._open_inputs``, and teach ``reader._Reader.frames`` to read its frames
(``docs/architecture.md``, "Adding an input kind").
"""

from __future__ import annotations

from sfx_cnnhit.io.sources.frames import FrameSource
from sfx_cnnhit.io.sources.hdf5 import EVENT_ID_PATH
from sfx_cnnhit.io.sources.metadata import CLEN_SOURCES, JOULE_PER_EV, PHOTON_ENERGY_SOURCES
from sfx_cnnhit.io.sources.open import open_frames

__all__ = [
    "CLEN_SOURCES",
    "EVENT_ID_PATH",
    "JOULE_PER_EV",
    "PHOTON_ENERGY_SOURCES",
    "FrameSource",
    "open_frames",
]
