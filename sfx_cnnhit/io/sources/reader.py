"""Reading an opened input during streaming: frames, per-frame masks, event ids and metadata, for every
input kind (:class:`_Reader`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import h5py
import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.crystfel_geom import HC_EV_M
from sfx_cnnhit.io.hdf5 import decode_strings, guarded_read, open_hdf5
from sfx_cnnhit.io.images import read_image_frame
from sfx_cnnhit.io.masks import mask_from_values
from sfx_cnnhit.io.sources.base import _Input, _MetaSource
from sfx_cnnhit.io.sources.hdf5 import _placeholder_path

#: Read buffer (bytes) for frames stored in another dtype than float32, converted a block at a time.
STAGING_BYTES = 16 * 2**20


class _Reader:
    """An open input during streaming: one HDF5 file handle (or fabio), read-only."""

    def __init__(self, inp: _Input, *, data: bool = True) -> None:
        self.inp = inp
        self.file: h5py.File | None = None
        if inp.kind in ("hdf5", "hdf5-%"):
            self.file = open_hdf5(inp.path, cache_bytes=inp.cache_bytes if data else 2**20)
        self._mask_file: h5py.File | None = None

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self.file, self._mask_file):
            if f is not None:
                f.close()

    def frames(self, file_idx: NDArray[np.int64]) -> NDArray[np.float32]:
        inp = self.inp
        out = np.empty((file_idx.size, *inp.frame_shape), np.float32)
        if inp.kind == "image":
            for j, idx in enumerate(file_idx):
                out[j] = read_image_frame(inp.path, int(idx), inp.frame_shape)
            return out
        assert self.file is not None
        if inp.kind == "hdf5-%":
            for j, idx in enumerate(file_idx):
                path = _placeholder_path(inp.data_path or "", inp.event_names[int(idx)])
                dset = self.file[path]
                if dset.shape != inp.raw_shape:
                    raise InputError(f"{inp.path}:{path}: frame shape {dset.shape} differs from {inp.raw_shape}")
                # mypy cannot infer a lambda with default arguments (python/mypy#15459).
                guarded_read(inp.path, path, lambda d=dset, j=j: d.read_direct(out[j]))  # type: ignore[misc]
            return out
        dset = self.file[inp.data_path]
        view = out.reshape((file_idx.size, *inp.raw_shape))
        if inp.stored_rank == 2:
            guarded_read(inp.path, inp.data_path or "", lambda: dset.read_direct(view[0]))
            return out
        # Non-float32 data goes through a small staging buffer: numpy converts faster than HDF5 does.
        per = max(1, STAGING_BYTES // (int(np.prod(inp.raw_shape)) * dset.dtype.itemsize))
        staging = None if dset.dtype == np.float32 else np.empty((min(per, file_idx.size), *inp.raw_shape), dset.dtype)
        for a, b, dest in _runs(file_idx):
            what = f"{inp.data_path} frames {a}..{b - 1}"
            # mypy cannot infer a lambda with default arguments (python/mypy#15459).
            if staging is None:
                guarded_read(inp.path, what, lambda a=a, b=b, dest=dest: dset.read_direct(view, np.s_[a:b], dest))  # type: ignore[misc]
                continue
            for s0 in range(a, b, staging.shape[0]):
                k = min(b, s0 + staging.shape[0]) - s0
                guarded_read(
                    inp.path, what, lambda s0=s0, k=k: dset.read_direct(staging, np.s_[s0 : s0 + k], np.s_[:k])  # type: ignore[misc]
                )
                view[dest.start + s0 - a : dest.start + s0 - a + k] = staging[:k]
        return out

    def mask_frames(self, file_idx: NDArray[np.int64]) -> NDArray[np.bool_]:
        mask = self.inp.mask
        assert mask is not None and mask.dataset is not None
        if mask.file == self.inp.path:
            f = self.file
        else:
            if self._mask_file is None:
                self._mask_file = open_hdf5(mask.file)
            f = self._mask_file
        assert f is not None
        dset = f[mask.dataset]
        values = np.empty((file_idx.size, *dset.shape[1:]), dset.dtype)
        for a, b, dest in _runs(file_idx):
            what = f"mask {mask.dataset} frames {a}..{b - 1}"
            # mypy cannot infer a lambda with default arguments (python/mypy#15459).
            guarded_read(mask.file, what, lambda a=a, b=b, dest=dest: dset.read_direct(values, np.s_[a:b], dest))  # type: ignore[misc]
        good = mask_from_values(values, goodbits=mask.goodbits, badbits=mask.badbits)
        return good.reshape((file_idx.size, *self.inp.frame_shape))

    def event_ids(self, file_idx: NDArray[np.int64]) -> list[str]:
        inp = self.inp
        if inp.kind == "hdf5-%":
            return [f"{inp.path} {inp.event_names[int(i)]}//" for i in file_idx]
        if inp.event_id_path is not None and self.file is not None:
            dset = self.file[inp.event_id_path]
            return decode_strings(guarded_read(inp.path, inp.event_id_path, lambda: _take(dset, file_idx)))
        return [f"{inp.path} //{int(i)}" for i in file_idx]

    def metadata(self, meta: _MetaSource, file_idx: NDArray[np.int64]) -> NDArray[np.float64]:
        if meta.constant is not None:
            return np.full(file_idx.size, meta.constant, np.float64)
        assert self.file is not None and meta.dataset is not None
        dset = self.file[meta.dataset]
        raw = guarded_read(self.inp.path, meta.dataset, lambda: dset[()] if dset.size == 1 else _take(dset, file_idx))
        values = np.broadcast_to(np.asarray(raw, np.float64).reshape(-1), (file_idx.size,))
        if meta.wavelength:
            with np.errstate(divide="ignore"):
                return HC_EV_M / (values * 1e-10)
        return values * meta.factor


def _take(dset: h5py.Dataset, file_idx: NDArray[np.int64]) -> np.ndarray:
    """``dset[file_idx]`` along the first axis for any order and repeats (h5py wants increasing indices)."""
    if file_idx.size and np.all(np.diff(file_idx) == 1):
        return cast(np.ndarray, dset[int(file_idx[0]) : int(file_idx[-1]) + 1])
    unique, inverse = np.unique(file_idx, return_inverse=True)
    return cast(np.ndarray, dset[unique][inverse])


def _runs(file_idx: NDArray[np.int64]) -> Iterator[tuple[int, int, slice]]:
    """Split file indices into contiguous increasing runs: ``(first, end, destination slice)``."""
    start = 0
    for k in range(1, file_idx.size + 1):
        if k == file_idx.size or file_idx[k] != file_idx[k - 1] + 1:
            yield int(file_idx[start]), int(file_idx[k - 1]) + 1, np.s_[start:k]
            start = k
