"""What every input kind shares: the :class:`_Input` record an opener returns, where its stored mask
(:class:`_MaskSource`) and metadata (:class:`_MetaSource`) come from, and :func:`_exists`."""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np
from numpy.typing import NDArray

# ---------------------------------------------------------------------------------------------------
# Masks and metadata attached to an input


@dataclass(frozen=True)
class _MaskSource:
    """Where an input's stored mask comes from and how to read it."""

    label: str  # for describe()
    file: str  # the file holding it
    dataset: str | None
    goodbits: int | None
    badbits: int | None
    static: NDArray[np.bool_] | None = None  # (ss, fs) good, when not per frame
    per_frame: bool = False


@dataclass(frozen=True)
class _MetaSource:
    """A metadata value: a constant or a dataset (scalar or one value per frame)."""

    label: str
    constant: float | None = None
    dataset: str | None = None
    factor: float = 1.0
    wavelength: bool = False  # dataset holds a wavelength in Å


# ---------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class _Input:
    """One file's frames (all of them, or those a .lst selects)."""

    path: str
    kind: str  # "hdf5", "hdf5-%", "image"
    n_total: int  # frames in the file
    raw_shape: tuple[int, ...]  # shape of one frame as stored (2-D, or (modules, y, x))
    dtype: np.dtype
    stored_rank: int = 2  # rank of the stored dataset (2: one frame, 3: stack, 4: modular stack)
    data_path: str | None = None
    selection: NDArray[np.int64] | None = None  # file indices selected by a .lst, in order
    event_names: list[str] = field(default_factory=list)  # % paths: matched placeholder values
    event_id_path: str | None = None
    mask: _MaskSource | None = None
    metadata: dict[str, _MetaSource] = field(default_factory=dict)
    header_saturation: float | None = None
    compression: list[str] = field(default_factory=list)
    cache_bytes: int = 0

    @property
    def n_frames(self) -> int:
        return self.n_total if self.selection is None else int(self.selection.size)

    @property
    def frame_shape(self) -> tuple[int, int]:
        if len(self.raw_shape) == 3:
            return (self.raw_shape[0] * self.raw_shape[1], self.raw_shape[2])
        return (self.raw_shape[0], self.raw_shape[1])

    def file_indices(self, local: NDArray[np.int64]) -> NDArray[np.int64]:
        return local if self.selection is None else self.selection[local]


def _exists(f: h5py.File, path: str) -> bool:
    try:
        return path in f
    except (KeyError, ValueError, RuntimeError):  # broken links
        return False
