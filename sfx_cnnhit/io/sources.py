"""Frame sources: one reader API over CXI/HDF5 stacks, ``%`` paths, fabio images and ``.lst`` lists.

:func:`open_frames` inspects every input once (shapes, dtypes, masks, event ids, metadata) and returns
a :class:`FrameSource`; :meth:`FrameSource.batches` then streams :class:`~sfx_cnnhit.types.FrameBatch`
objects of at most ``chunk_size`` frames, so memory is bounded whatever the file size. Frames are
float32 ``(ss, fs)`` slabs: a 4-D ``(N, modules, y, x)`` stack (Cheetah's modular layout, European
XFEL's CXI) is presented with its modules stacked along ss. Bad pixels (see :mod:`sfx_cnnhit.io.masks`)
are False in ``FrameBatch.mask`` and set to 0 in ``FrameBatch.data``. Inputs are only ever read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.io.atomic import register_input
from sfx_cnnhit.io.crystfel_geom import HC_EV_M, parse_length, parse_photon_energy
from sfx_cnnhit.io.geometry import DetectorGeometry
from sfx_cnnhit.io.hdf5 import (
    CXI_DATA_PATHS,
    MIN_FRAME_PX,
    broken_link,
    cache_bytes_for,
    check_filters,
    check_virtual_sources,
    decode_strings,
    describe_datasets,
    filter_names,
    guarded_read,
    image_like_datasets,
    open_hdf5,
)
from sfx_cnnhit.io.hotpixels import HotPixelRule
from sfx_cnnhit.io.images import IMAGE_SUFFIXES, check_dtype, read_image_frame, read_image_info
from sfx_cnnhit.io.lists import LIST_SUFFIXES, read_lst
from sfx_cnnhit.io.masks import (
    CXI_MASK_PATHS,
    BadPixelRules,
    MaskConvention,
    check_mask,
    convention_bits,
    describe_convention,
    load_mask_file,
    mask_from_values,
)
from sfx_cnnhit.types import FailedFrame, FrameBatch

EVENT_ID_PATH = "/entry_1/experiment_identifier"
STAGING_BYTES = 16 * 2**20  # read buffer for frames stored in another dtype than float32
JOULE_PER_EV = 1.602176634e-19

#: File datasets read as photon energy, with the factor to eV (None: a wavelength in Å).
PHOTON_ENERGY_SOURCES: tuple[tuple[str, float | None], ...] = (
    ("/LCLS/photon_energy_eV", 1.0),
    ("/instrument/photon_energy_eV", 1.0),
    ("/entry_1/instrument_1/source_1/energy", 1.0 / JOULE_PER_EV),
    ("/entry/instrument/beam/incident_wavelength", None),
)
#: File datasets read as detector distance, with the factor to metres.
CLEN_SOURCES = (
    ("/LCLS/detector_1/EncoderValue", 1e-3),
    ("/instrument/detector_1/EncoderValue", 1e-3),
    ("/entry_1/instrument_1/detector_1/distance", 1.0),
    ("/entry/instrument/detector/detector_distance", 1.0),
)


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


def _layout_name(inp: _Input) -> str:
    if inp.kind == "hdf5-%":
        return "one 2-D frame per path matching the % placeholder"
    if inp.kind == "image":
        return "image file"
    if inp.stored_rank == 4:
        return "4-D (N, modules, ss, fs) stack, modules stacked along ss"
    return "3-D (N, ss, fs) stack" if inp.stored_rank == 3 else "2-D single frame"


class FrameSource:
    """Frames of one or more inputs, streamed in bounded batches (build with :func:`open_frames`).

    Attributes:
        n_frames: frames over all inputs (after any ``.lst`` selection).
        frame_shape: ``(ss, fs)`` of every frame (the raw slab).
        dtype: the stored dtype of the first input's frames (batches are always float32).
        layout_info: OM's ``{asic_nx, asic_ny, nasics_x, nasics_y}`` from the geometry, or for a 4-D
            file one module per ASIC stacked along ss; None when unknown.
        geometry: the detector geometry given to :func:`open_frames`, if any.
    """

    def __init__(
        self,
        inputs: list[_Input],
        *,
        geometry: DetectorGeometry | None,
        rules: list[BadPixelRules],
        static_good: list[NDArray[np.bool_]],
        hot_pixels: HotPixelRule | None = None,
    ) -> None:
        self._inputs = inputs
        self._rules = rules
        self._static_good = static_good
        self.hot_pixels = hot_pixels
        self._hot_maps: dict[int, NDArray[np.bool_] | None] = {}
        self.hot_pixel_windows: dict[int, dict[str, int]] = {}
        self._offsets = np.cumsum([0] + [inp.n_frames for inp in inputs])
        self.geometry = geometry
        self.n_frames = int(self._offsets[-1])
        self.frame_shape = inputs[0].frame_shape
        self.dtype = inputs[0].dtype
        self.layout_info = _layout_info(inputs[0], geometry)

    def __len__(self) -> int:
        return self.n_frames

    @property
    def input_paths(self) -> list[str]:
        """The distinct files frames come from, in reading order (outputs must never replace them)."""
        return list(dict.fromkeys(inp.path for inp in self._inputs))

    def describe(self) -> list[dict[str, Any]]:
        """One dict per input file: path, format, data path, frames, shapes, dtype, compression, mask,
        event ids (first/last) and metadata found (the ``info`` command prints these)."""
        out = []
        for i, inp in enumerate(self._inputs):
            first = self._read_meta_and_ids(inp, np.array([0, inp.n_frames - 1], np.int64))
            rules = self._rules[i].describe()
            static = self._static_good[i]
            out.append(
                {
                    "path": inp.path,
                    "format": _format_name(inp),
                    "data_path": inp.data_path,
                    "n_frames": inp.n_frames,
                    "n_frames_in_file": inp.n_total,
                    "frame_shape": list(inp.frame_shape),
                    "stored_frame_shape": list(inp.raw_shape),
                    "layout": _layout_name(inp),
                    "dtype": str(inp.dtype),
                    "compression": inp.compression,
                    "layout_info": _layout_info(inp, self.geometry),
                    "mask": {
                        "source": inp.mask.label if inp.mask else None,
                        "per_frame": bool(inp.mask and inp.mask.per_frame),
                        "convention": describe_convention(inp.mask.goodbits, inp.mask.badbits) if inp.mask else None,
                        "static_bad_pixels": int(static.size - np.count_nonzero(static)),
                        **rules,
                    },
                    "event_ids": {
                        "source": inp.event_id_path or ("path placeholder" if inp.kind == "hdf5-%" else "file //index"),
                        "first": first[0][0],
                        "last": first[0][1],
                    },
                    "metadata": {
                        key: {"source": meta.label, "first": _json_float(first[1][key][0])}
                        for key, meta in inp.metadata.items()
                    },
                }
            )
        return out

    def batches(
        self,
        chunk_size: int = 64,
        *,
        start: int = 0,
        stop: int | None = None,
        stride: int = 1,
        skip_bad: bool = False,
    ) -> Iterator[FrameBatch]:
        """Yield batches of at most ``chunk_size`` frames of ``range(start, stop, stride)`` (global indices).

        A batch never spans two files. Frames are read only when their batch is requested, so memory
        is bounded by ``chunk_size`` (the batch being built, plus the one the caller still holds).
        With ``skip_bad``, a batch that cannot be read is read again frame by frame, and the frames
        that still fail are left out and listed in ``FrameBatch.failed`` (such a batch may hold no
        frame at all); one bad frame never costs its neighbours.

        Raises:
            InputError: when a file cannot be read or decompressed part-way (without ``skip_bad``).
        """
        if chunk_size < 1 or stride < 1 or start < 0:
            raise ValueError("chunk_size and stride must be >= 1 and start >= 0")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        for i, inp, lo, mine in self._by_input(np.arange(start, stop, stride, dtype=np.int64)):
            with _Reader(inp) as reader:
                for k in range(0, mine.size, chunk_size):
                    glob = mine[k : k + chunk_size]
                    try:
                        batch = self._batch(i, inp, reader, glob, glob - lo)
                    except InputError:
                        if not skip_bad:
                            raise
                        batch = self._batch_skipping_bad(i, inp, reader, glob, lo)
                    yield batch

    def _by_input(self, wanted: NDArray[np.int64]) -> Iterator[tuple[int, _Input, int, NDArray[np.int64]]]:
        """``(input number, input, its first global index, the global indices of ``wanted`` in it)``."""
        for i, inp in enumerate(self._inputs):
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            mine = wanted[(wanted >= lo) & (wanted < hi)]
            if mine.size:
                yield i, inp, lo, mine

    def __iter__(self) -> Iterator[FrameBatch]:
        return self.batches()

    def _batch(
        self, i: int, inp: _Input, reader: _Reader, glob: NDArray[np.int64], local: NDArray[np.int64]
    ) -> FrameBatch:
        file_idx = inp.file_indices(local)
        data, good = self._read_good(i, inp, reader, file_idx)
        if self.hot_pixels is not None:
            windows = self.hot_pixels.window_of(glob)
            for w in np.unique(windows):
                hot = self._hot_map(int(w))
                if hot is not None:
                    good[windows == w] &= ~hot
        np.copyto(data, 0.0, where=~good)
        ids, metadata = self._read_meta_and_ids(inp, local, reader)
        return FrameBatch(
            data=data,
            mask=good,
            event_ids=ids,
            source_file=inp.path,
            source_index=file_idx.astype(np.int64),
            metadata=metadata,
            global_index=glob.astype(np.int64),
        )

    def _batch_skipping_bad(
        self, i: int, inp: _Input, reader: _Reader, glob: NDArray[np.int64], lo: int
    ) -> FrameBatch:
        """The frames of ``glob`` read one by one: the readable ones, and the others as ``failed``."""
        good: list[FrameBatch] = []
        failed: list[FailedFrame] = []
        for g in glob:
            one = np.array([g], np.int64)
            try:
                good.append(self._batch(i, inp, reader, one, one - lo))
            except InputError as err:
                file_idx = int(inp.file_indices(one - lo)[0])
                try:
                    event_id = self._read_meta_and_ids(inp, one - lo, reader)[0][0]
                except (InputError, OSError, KeyError, ValueError):
                    event_id = f"{inp.path} //{file_idx}"
                failed.append(FailedFrame(event_id, inp.path, file_idx, int(g), str(err)))
        if good:
            first = good[0]
            metadata = {
                key: np.concatenate([np.atleast_1d(b.metadata[key]) for b in good]) for key in first.metadata
            }
            return FrameBatch(
                data=np.concatenate([b.data for b in good]),
                mask=np.concatenate([b.mask for b in good]),
                event_ids=[e for b in good for e in b.event_ids],
                source_file=inp.path,
                source_index=np.concatenate([b.source_index for b in good]),
                metadata=metadata,
                global_index=np.concatenate([b.global_index for b in good]),
                failed=tuple(failed),
            )
        shape = (0, *self.frame_shape)
        return FrameBatch(
            data=np.zeros(shape, np.float32),
            mask=np.zeros(shape, bool),
            event_ids=[],
            source_file=inp.path,
            source_index=np.zeros(0, np.int64),
            metadata={},
            global_index=np.zeros(0, np.int64),
            failed=tuple(failed),
        )

    def _read_good(
        self, i: int, inp: _Input, reader: _Reader, file_idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Frames and their good-pixel masks (stored mask, bad-pixel rules), before hot pixels."""
        data = reader.frames(file_idx)
        good = self._rules[i].good(data)
        good &= self._static_good[i]
        if inp.mask is not None and inp.mask.per_frame:
            good &= reader.mask_frames(file_idx)
        return data, good

    def _hot_map(self, window: int) -> NDArray[np.bool_] | None:
        """The hot-pixel map of ``window`` (True = hot), made on first use from frames read across the
        window (see :mod:`sfx_cnnhit.io.hotpixels`); the two most recent maps are kept."""
        if window in self._hot_maps:
            return self._hot_maps[window]
        rule = self.hot_pixels
        assert rule is not None
        wanted = rule.sample_indices(window, self.n_frames)
        samples: list[tuple[NDArray[np.float32], NDArray[np.bool_]]] = []
        for i, inp, lo, mine in self._by_input(wanted):
            with _Reader(inp) as reader:
                for local in mine - lo:
                    try:
                        data, good = self._read_good(i, inp, reader, inp.file_indices(np.array([local])))
                    except InputError:  # an unreadable frame is no sample; the batch reading it reports it
                        continue
                    samples.append((data[0], good[0]))
        hot = rule.hot_map(samples)
        if len(self._hot_maps) >= 2:
            del self._hot_maps[min(self._hot_maps)]
        self._hot_maps[window] = hot
        self.hot_pixel_windows[window] = {
            "first_frame": int(window * rule.window),
            "sampled_frames": len(samples),
            "hot_pixels": -1 if hot is None else int(np.count_nonzero(hot)),
        }
        return hot

    def _read_meta_and_ids(
        self, inp: _Input, local: NDArray[np.int64], reader: _Reader | None = None
    ) -> tuple[list[str], dict[str, NDArray[np.float64]]]:
        if reader is None:
            with _Reader(inp, data=False) as own:
                return self._read_meta_and_ids(inp, local, own)
        file_idx = inp.file_indices(local)
        return reader.event_ids(file_idx), {key: reader.metadata(meta, file_idx) for key, meta in inp.metadata.items()}


def _json_float(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _format_name(inp: _Input) -> str:
    if inp.kind == "image":
        return Path(inp.path).suffix.lstrip(".").lower()
    return "cxi" if inp.data_path in CXI_DATA_PATHS[:3] else "hdf5"


def _layout_info(inp: _Input, geometry: DetectorGeometry | None) -> dict[str, int] | None:
    if geometry is not None:
        try:
            return geometry.layout_info()
        except ConfigError:
            return None
    if len(inp.raw_shape) == 3:
        modules, y, x = inp.raw_shape
        return {"asic_nx": x, "asic_ny": y, "nasics_x": 1, "nasics_y": modules}
    return None


# ---------------------------------------------------------------------------------------------------
# Reading


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


def _placeholder_path(pattern: str, name: str) -> str:
    values = iter(name.split("/"))
    return "/".join(next(values) if part == "%" else part for part in pattern.split("/"))


# ---------------------------------------------------------------------------------------------------
# Opening


def _open_hdf5_input(path: str, data_path: str | None, geometry: DetectorGeometry | None) -> _Input:
    with open_hdf5(path) as f:
        if data_path is None and geometry is not None and _exists(f, geometry.data_path):
            data_path = geometry.data_path
        if data_path is not None and "%" in data_path:
            return _placeholder_input(path, f, data_path)
        if data_path is None:
            data_path = _auto_data_path(path, f)
        elif broken := broken_link(f, data_path):
            raise InputError(f"{path}:{data_path}: {broken}")
        elif not _exists(f, data_path) or not isinstance(f[data_path], h5py.Dataset):
            raise InputError(f"{path}: no dataset {data_path}; {describe_datasets(image_like_datasets(f), f)}")
        dset = f[data_path]
        check_dtype(f"{path}:{data_path}", dset.dtype)
        if dset.ndim not in (2, 3, 4):
            raise InputError(
                f"{path}:{data_path}: rank {dset.ndim} (shape {dset.shape}); expected a 2-D frame, "
                "a 3-D (N, ss, fs) stack or a 4-D (N, modules, ss, fs) stack"
            )
        check_filters(path, dset)
        check_virtual_sources(path, dset)
        n_total = 1 if dset.ndim == 2 else int(dset.shape[0])
        if n_total == 0:
            raise InputError(f"{path}:{data_path}: empty stack (0 frames)")
        raw_shape = tuple(int(s) for s in (dset.shape if dset.ndim == 2 else dset.shape[1:]))
        ids = EVENT_ID_PATH if _exists(f, EVENT_ID_PATH) and f[EVENT_ID_PATH].shape == (n_total,) else None
        if ids is not None and f[EVENT_ID_PATH].dtype.kind not in "SOU":
            ids = None
        return _Input(
            path=path,
            kind="hdf5",
            n_total=n_total,
            raw_shape=raw_shape,
            dtype=dset.dtype,
            stored_rank=dset.ndim,
            data_path=data_path,
            event_id_path=ids,
            compression=filter_names(dset),
            cache_bytes=cache_bytes_for(dset),
        )


def _exists(f: h5py.File, path: str) -> bool:
    try:
        return path in f
    except (KeyError, ValueError, RuntimeError):  # broken links
        return False


def _auto_data_path(path: str, f: h5py.File) -> str:
    for candidate in CXI_DATA_PATHS:
        if broken := broken_link(f, candidate):
            raise InputError(f"{path}:{candidate}: {broken}")
        if _exists(f, candidate) and isinstance(f[candidate], h5py.Dataset):
            return candidate  # its dtype and rank are checked by the caller
    found = image_like_datasets(f)
    stacks = [p for p in found if f[p].ndim >= 3 and "mask" not in p.lower()]
    if len(found) == 1:
        return found[0]
    if len(stacks) == 1:
        return stacks[0]
    reason = "several image-like datasets" if found else "no known frame dataset"
    raise InputError(f"{path}: {reason}, give --data-path; {describe_datasets(found, f)}")


def _placeholder_input(path: str, f: h5py.File, pattern: str) -> _Input:
    parts = [p for p in pattern.split("/") if p]
    matches: list[tuple[list[str], str]] = [([], "")]
    for part in parts:
        nxt = []
        for names, prefix in matches:
            group = f[prefix or "/"]
            if not isinstance(group, h5py.Group):
                continue
            if part == "%":
                nxt += [([*names, key], f"{prefix}/{key}") for key in sorted(group.keys())]
            elif part in group:
                nxt.append((names, f"{prefix}/{part}"))
        matches = nxt
    matches = [(names, p) for names, p in matches if isinstance(f.get(p), h5py.Dataset)]
    if not matches:
        raise InputError(f"{path}: no dataset matches {pattern}; {describe_datasets(image_like_datasets(f), f)}")
    first = f[matches[0][1]]
    check_dtype(f"{path}:{first.name}", first.dtype)
    if first.ndim != 2:
        raise InputError(f"{path}:{first.name}: rank {first.ndim}; with a % path each match must be one 2-D frame")
    check_filters(path, first)
    return _Input(
        path=path,
        kind="hdf5-%",
        n_total=len(matches),
        raw_shape=tuple(int(s) for s in first.shape),
        dtype=first.dtype,
        data_path=pattern,
        event_names=["/".join(names) for names, _ in matches],
        compression=filter_names(first),
        cache_bytes=cache_bytes_for(first),
    )


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


def _metadata_sources(f: h5py.File | None, n_total: int, geometry: DetectorGeometry | None) -> dict[str, _MetaSource]:
    """Photon energy and camera length: the geometry's value or path first (as CrystFEL does), else a
    dataset the file is known to record them in (``f`` None: geometry constants only)."""

    def usable(path: str | None) -> bool:
        return (
            f is not None
            and path is not None
            and _exists(f, path)
            and isinstance(f[path], h5py.Dataset)
            and f[path].size in (1, n_total)
            and f[path].dtype.kind in "iuf"
        )

    meta: dict[str, _MetaSource] = {}
    specs = (
        (
            "photon_energy_ev",
            geometry.photon_energy_ev if geometry else None,
            parse_photon_energy,
            PHOTON_ENERGY_SOURCES,
        ),
        ("clen_m", geometry.panels[0].clen if geometry else None, parse_length, CLEN_SOURCES),
    )
    for key, spec, parse, fallbacks in specs:
        if isinstance(spec, float | int):
            meta[key] = _MetaSource(f"geometry ({key})", constant=float(spec))
        elif isinstance(spec, str):
            _, path, scale = parse(spec)
            if usable(path):
                meta[key] = _MetaSource(f"{path} (geometry)", dataset=path, factor=scale)
        if key not in meta:
            for path, factor in fallbacks:
                if usable(path):
                    meta[key] = _MetaSource(path, dataset=path, factor=factor or 1.0, wavelength=factor is None)
                    break
    return meta


def _first_photon_energy(inp: _Input) -> float | None:
    """The photon energy (eV) of an input's first frame, for a gain given as ``adu_per_eV``; None if unknown."""
    meta = inp.metadata.get("photon_energy_ev")
    if meta is None or inp.n_frames == 0:
        return None
    with _Reader(inp, data=False) as reader:
        value = float(reader.metadata(meta, inp.file_indices(np.zeros(1, np.int64)))[0])
    return value if np.isfinite(value) and value > 0 else None


def _mask_source(
    inp: _Input,
    *,
    mask_path: str | None,
    mask_file: str | None,
    goodbits: int | None,
    badbits: int | None,
    guessed: bool,
    geometry: DetectorGeometry | None,
    loaded: dict[tuple[str, str | None, int | None, int | None], _MaskSource],
) -> _MaskSource | None:
    """The stored mask of an input: the user's, else the geometry's, else the CXI file's own.

    ``guessed``: the bits were not given (neither bits nor a mask convention), so a geometry mask is
    read with the geometry's bits, and :func:`~sfx_cnnhit.io.masks.check_mask` also refuses a mask
    that looks inverted. ``loaded`` caches masks read from separate files, so a list of many inputs
    reads (and holds) one.
    """
    if mask_path is None and mask_file is None and geometry is not None and geometry.mask_path is not None:
        mask_path, mask_file = geometry.mask_path, geometry.mask_file
        if guessed:
            goodbits, badbits = geometry.mask_good, geometry.mask_bad
    if mask_file is not None and not (mask_path and h5py.is_hdf5(mask_file)):
        key = (mask_file, mask_path, goodbits, badbits)
        cached = loaded.get(key)
        if cached is None or cached.static is None or cached.static.shape != inp.frame_shape:
            label = mask_file if mask_path is None else f"{mask_file}:{mask_path}"
            values = load_mask_file(mask_file, mask_path)
            loaded[key] = _static_mask(inp, label, mask_file, None, values, goodbits, badbits, guessed)
        return loaded[key]
    file = mask_file or inp.path
    if mask_path is None:
        if inp.kind != "hdf5":
            return None
        with open_hdf5(inp.path) as f:
            mask_path = next((p for p in CXI_MASK_PATHS if _exists(f, p) and isinstance(f[p], h5py.Dataset)), None)
        if mask_path is None:
            return None
    if mask_file is None and inp.kind == "image":
        raise InputError(f"{inp.path}: a mask dataset path ({mask_path}) needs an HDF5 input; give a mask file")
    with open_hdf5(file) as f:
        if not _exists(f, mask_path) or not isinstance(f[mask_path], h5py.Dataset):
            raise InputError(f"{file}: no mask dataset {mask_path}")
        dset = f[mask_path]
        check_filters(file, dset)
        label = f"{file}:{mask_path}"
        if dset.shape == (inp.n_total, *inp.raw_shape) and inp.kind == "hdf5" and inp.n_total > 1:
            if dset.dtype.kind not in "iub":
                raise InputError(f"{file}:{mask_path}: mask dtype {dset.dtype} (must hold integers)")
            first = guarded_read(file, f"{mask_path} frame 0", lambda: dset[0])
            good = mask_from_values(first, goodbits=goodbits, badbits=badbits)
            check_mask(f"{label} (frame 0)", first, good, goodbits, badbits, guessed=guessed)
            return _MaskSource(label, file, mask_path, goodbits, badbits, per_frame=True)
        values = guarded_read(file, mask_path, lambda: dset[()])
    return _static_mask(inp, label, file, mask_path, values, goodbits, badbits, guessed)


def _static_mask(
    inp: _Input,
    label: str,
    file: str,
    dataset: str | None,
    values: NDArray[np.generic],
    goodbits: int | None,
    badbits: int | None,
    guessed: bool,
) -> _MaskSource:
    """A mask applying to every frame, its shape and values checked (:func:`~sfx_cnnhit.io.masks.check_mask`)."""
    if values.shape not in (inp.raw_shape, inp.frame_shape):
        expected = f"{inp.frame_shape}" + (f" or {inp.raw_shape}" if inp.raw_shape != inp.frame_shape else "")
        per_frame = f" or (N, ...) with N = {inp.n_total}" if inp.kind == "hdf5" and inp.n_total > 1 else ""
        raise InputError(
            f"{label}: mask shape {values.shape} does not match the frames of {inp.path} "
            f"(expected {expected}{per_frame})"
        )
    try:
        good = mask_from_values(values, goodbits=goodbits, badbits=badbits).reshape(inp.frame_shape)
    except ValueError as err:
        raise InputError(f"{label}: {err}") from None
    check_mask(label, values, good, goodbits, badbits, guessed=guessed)
    return _MaskSource(label, file, dataset, goodbits, badbits, static=good)


def _select(inp: _Input, events: list[str], lst: str) -> None:
    """Restrict an input to the events a .lst names for it (in list order)."""
    selected = []
    for event in events:
        names, _, index = event.partition("//")
        try:
            if inp.kind == "hdf5-%":
                if index:
                    raise ValueError
                selected.append(inp.event_names.index(names))
            else:
                if names:
                    raise ValueError
                selected.append(int(index))
        except ValueError:
            raise InputError(
                f"{lst}: event {event!r} of {inp.path} is not in the file ({inp.n_total} frames)"
            ) from None
        if not 0 <= selected[-1] < inp.n_total:
            raise InputError(f"{lst}: event {event!r} is out of range for {inp.path} ({inp.n_total} frames)")
    inp.selection = np.asarray(selected, np.int64)


def open_frames(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    data_path: str | None = None,
    mask_path: str | None = None,
    mask_file: str | os.PathLike[str] | None = None,
    mask_goodbits: int | None = None,
    mask_badbits: int | None = None,
    mask_convention: MaskConvention = "auto",
    geometry: DetectorGeometry | None = None,
    floor: float | None = None,
    saturation: float | None = None,
    hot_pixels: HotPixelRule | None = None,
) -> FrameSource:
    """Open frame files for streaming.

    Args:
        inputs: CXI/HDF5 files, fabio images (CBF, SMV ``.img``, EDF, TIFF) and ``.lst`` lists of them
            (``file``, ``file //N``, ``file name//`` lines).
        data_path: HDF5 dataset of the frames, may contain CrystFEL's ``%`` placeholder
            (``/data/%/data``); default: the geometry's if present, else the CXI paths, else the only
            image-like dataset.
        mask_path: mask dataset inside each input (or inside ``mask_file``).
        mask_file: separate mask file (HDF5, ``.npy``, or an image format fabio reads).
        mask_goodbits, mask_badbits: read masks with CrystFEL's bits instead of Cheetah's 0 = good.
        mask_convention: ``cheetah`` (0 = good) or ``crystfel`` (1 = good, ``goodbits=0x1``) reads every
            stored mask so, the geometry's bits included; ``auto``: the bits given, else the geometry's
            for its mask, else Cheetah's. A stored mask (of a per-frame mask, the first frame's) leaving
            under 1 % of the pixels good is refused; with ``auto`` and no bits given, so is one leaving
            under 10 % when the other convention leaves 50 % or more
            (:func:`~sfx_cnnhit.io.masks.check_mask`).
        geometry: panels, bad regions, ``max_adu``, masks and metadata locations.
        floor: values below it are bad (default 0 for signed integer data, none for float data;
            ``-inf`` disables it).
        saturation: values at or above it are bad (default the geometry's ``max_adu``, a CBF header's
            ``Count_cutoff``, or the integer dtype's maximum; ``inf`` disables it).
        hot_pixels: also mask the hot pixels this rule finds in the run (:mod:`sfx_cnnhit.io.hotpixels`);
            None: only the stored mask and the bad-pixel rules.

    Raises:
        InputError: one line naming the file and the problem.
        ConfigError: ``mask_convention`` together with good/bad bits.
    """
    if not inputs:
        raise InputError("no input files given")
    guessed = mask_convention == "auto" and mask_goodbits is None and mask_badbits is None
    mask_goodbits, mask_badbits = convention_bits(mask_convention, mask_goodbits, mask_badbits)
    opened = _open_inputs(_input_specs(inputs), data_path, geometry)
    _check_frame_shapes(opened)
    geometry = _run_geometry(opened[0], geometry)
    rules, statics = _pixel_rules(
        opened,
        geometry,
        mask_path=mask_path,
        mask_file=str(mask_file) if mask_file is not None else None,
        goodbits=mask_goodbits,
        badbits=mask_badbits,
        guessed=guessed,
        floor=floor,
        saturation=saturation,
    )
    return FrameSource(opened, geometry=geometry, rules=rules, static_good=statics, hot_pixels=hot_pixels)


def _input_specs(inputs: Sequence[str | os.PathLike[str]]) -> list[tuple[str, list[str] | None, str | None]]:
    """The files to open, ``.lst`` lists expanded: ``(file, the events listed for it or None for all, the list
    naming it or None)``; a list's consecutive events of one file form one entry."""
    specs: list[tuple[str, list[str] | None, str | None]] = []  # (file, events or None, listed in)
    for item in inputs:
        item = str(item)
        if not Path(item).exists():
            raise InputError(f"{item}: no such file")
        if Path(item).suffix.lower() in LIST_SUFFIXES and not h5py.is_hdf5(item):
            register_input(item)
            for file, event in read_lst(item):
                if specs and specs[-1][0] == file and specs[-1][2] == item and specs[-1][1] is not None and event:
                    specs[-1][1].append(event)
                else:
                    specs.append((file, [event] if event else None, item))
        else:
            specs.append((item, None, None))
    return specs


def _open_inputs(
    specs: list[tuple[str, list[str] | None, str | None]], data_path: str | None, geometry: DetectorGeometry | None
) -> list[_Input]:
    """Inspect each file of :func:`_input_specs` (HDF5 or image; only the first image is read whole, the
    others' headers only) and restrict it to its listed events."""
    opened: list[_Input] = []
    image_seen = False
    for file, events, listed_in in specs:
        if not Path(file).exists():
            raise InputError(f"{file}: no such file" + (f" (listed in {listed_in})" if listed_in else ""))
        if Path(file).is_dir():
            raise InputError(f"{file}: is a folder, not a file")
        if not os.access(file, os.R_OK):
            raise InputError(f"{file}: cannot read (permission denied)")
        register_input(file)
        if h5py.is_hdf5(file):
            inp = _open_hdf5_input(file, data_path, geometry)
            with open_hdf5(file) as f:
                inp.metadata = _metadata_sources(f, inp.n_total, geometry)
        elif Path(file).suffix.lower() in IMAGE_SUFFIXES:
            inp = _image_input(file, header_only=image_seen, geometry=geometry)
            image_seen = True
        else:
            raise InputError(f"{file}: not an HDF5 file (nor a CBF/SMV/EDF/TIFF image by its extension)")
        if events is not None:
            _select(inp, events, listed_in or file)
        opened.append(inp)
    return opened


def _check_frame_shapes(opened: list[_Input]) -> None:
    """Give header-only images the first input's frame shape and dtype; refuse frames under
    :data:`MIN_FRAME_PX` a side or of another shape than the first input's."""
    first = opened[0]
    for inp in opened:
        if inp.kind == "image" and inp.raw_shape == (0, 0):  # header only: same shape as the first image
            inp.raw_shape, inp.dtype = first.raw_shape, first.dtype
        if min(inp.frame_shape) < MIN_FRAME_PX:
            where = f"{inp.path}:{inp.data_path}" if inp.data_path else inp.path
            ss, fs = inp.frame_shape
            raise InputError(f"{where}: frames of {ss}x{fs} pixels; frames need at least {MIN_FRAME_PX}x{MIN_FRAME_PX}")
        if inp.frame_shape != first.frame_shape:
            raise InputError(
                f"{inp.path}: frames of shape {inp.frame_shape} differ from {first.path}'s {first.frame_shape}"
            )


def _run_geometry(first: _Input, geometry: DetectorGeometry | None) -> DetectorGeometry | None:
    """``geometry`` with a gain given in ADU per eV resolved at the ``first`` input's photon energy, checked
    to fit its frames (None stays None)."""
    if geometry is not None and any(p.adu_per_photon is None and p.adu_per_ev is not None for p in geometry.panels):
        energy = _first_photon_energy(first)
        if energy is not None:
            geometry = geometry.with_photon_energy(energy)
    if geometry is not None:
        slab = geometry.slab_shape
        if slab[0] > first.frame_shape[0] or slab[1] > first.frame_shape[1]:
            raise InputError(
                f"{first.path}: frames of shape {first.frame_shape} are smaller than the geometry's slab {slab}"
            )
    return geometry


def _pixel_rules(
    opened: list[_Input],
    geometry: DetectorGeometry | None,
    *,
    mask_path: str | None,
    mask_file: str | None,
    goodbits: int | None,
    badbits: int | None,
    guessed: bool,
    floor: float | None,
    saturation: float | None,
) -> tuple[list[BadPixelRules], list[NDArray[np.bool_]]]:
    """Set each input's stored mask (:func:`_mask_source`); per input its bad-pixel rules and its static
    ``(ss, fs)`` good-pixel mask (the geometry's and the stored static mask, True = good)."""
    geom_good = geometry.good_pixel_mask(opened[0].frame_shape) if geometry is not None else None
    # Inputs sharing a mask and dtype share their arrays: a list of 10^4 images holds one of each.
    rules: list[BadPixelRules] = []
    statics: list[NDArray[np.bool_]] = []
    loaded: dict[tuple[str, str | None, int | None, int | None], _MaskSource] = {}
    static_cache: dict[object, NDArray[np.bool_]] = {}
    rules_cache: dict[tuple[str, float | None], BadPixelRules] = {}
    for inp in opened:
        inp.mask = _mask_source(
            inp,
            mask_path=mask_path,
            mask_file=mask_file,
            goodbits=goodbits,
            badbits=badbits,
            guessed=guessed,
            geometry=geometry,
            loaded=loaded,
        )
        stored = inp.mask.static if inp.mask is not None else None
        if id(stored) not in static_cache:
            static = np.ones(inp.frame_shape, bool) if geom_good is None else geom_good.copy()
            static_cache[id(stored)] = static if stored is None else static & stored
        statics.append(static_cache[id(stored)])
        rkey = (str(inp.dtype), inp.header_saturation)
        if rkey not in rules_cache:
            rules_cache[rkey] = BadPixelRules.build(
                inp.dtype,
                inp.frame_shape,
                floor=floor,
                saturation=saturation,
                geometry=geometry,
                header_saturation=inp.header_saturation,
            )
        rules.append(rules_cache[rkey])
    return rules, statics
