"""The reduced-CXI writer: selected frames, their peak lists and extra per-frame datasets.

The layout is the one Cheetah writes and CrystFEL reads with ``peak_list_type = cxi`` (see
``docs/formats.md`` for every dataset, shape, dtype and unit). The file grows one batch at a time
(never more than one batch in memory) and is crash-safe: until it is complete, ``<name>.inprogress``
is a folder of *segments*, one small HDF5 file per :meth:`CXIWriter.commit`, each written as
``segment_N.h5.tmp`` and renamed when closed, plus ``state.json`` (written atomically) naming the
committed segments. A segment is built in memory (one batch of selected frames) and written with
plain file I/O at the commit, so a full disk is a clean error. A process killed at any moment
(SIGKILL, OOM, a batch-queue limit) leaves at most one unfinished ``.tmp`` segment, which a resumed
writer deletes; no committed byte is ever rewritten.
:meth:`CXIWriter.finalize` joins the segments into ``<name>`` (written inside the folder, renamed
into place, then the folder is removed; a kill during the join is resumed by joining again, and a
full disk during the join is a clean error that leaves the segments for the next try).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

try:  # ISA-L writes the same zlib streams about five times faster than zlib at level 1
    from isal.isal_zlib import compress as deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    from zlib import compress as deflate

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import InputError, OutputError
from sfx_cnnhit.io.atomic import check_output_path, inprogress_path, write_errors, write_text_atomic
from sfx_cnnhit.io.crystfel_geom import format_geometry
from sfx_cnnhit.io.geometry import write_geometry
from sfx_cnnhit.types import PeakList

DATA_PATH = "/entry_1/data_1/data"
MASK_PATH = "/entry_1/data_1/mask"
RESULT_PATH = "/entry_1/result_1"
EVENT_ID_PATH = "/entry_1/experiment_identifier"
SOURCE_FILE_PATH = f"{RESULT_PATH}/source_file"
SOURCE_INDEX_PATH = f"{RESULT_PATH}/source_index"
N_PEAKS_PATH = f"{RESULT_PATH}/nPeaks"
PHOTON_ENERGY_PATH = "/LCLS/photon_energy_eV"
ENCODER_VALUE_PATH = "/LCLS/detector_1/EncoderValue"
GEOMETRY_TEXT_PATH = "/entry_1/instrument_1/detector_1/crystfel_geometry"
METADATA_GROUP = "/entry_1/metadata"

#: CXI peak-array name -> PeakList field. CrystFEL reads the first three; Cheetah/OM tools all six.
PEAK_DATASETS = {
    "peakXPosRaw": "fs",
    "peakYPosRaw": "ss",
    "peakTotalIntensity": "intensity",
    "peakNPixels": "num_pixels",
    "peakMaximumValue": "max_pixel_intensity",
    "peakSNR": "snr",
}

#: metadata key -> (dataset path, factor from the key's unit to the file's unit).
KNOWN_METADATA = {
    "photon_energy_ev": (PHOTON_ENERGY_PATH, 1.0),
    "clen_m": (ENCODER_VALUE_PATH, 1e3),  # Cheetah's EncoderValue is in mm
}

STATE_FILE = "state.json"
JOINED_FILE = "joined.cxi"
EXTRAS_ATTR = "sfx_cnnhit_extra_datasets"
_STANDARD_PATHS = {
    DATA_PATH, MASK_PATH, EVENT_ID_PATH, SOURCE_FILE_PATH, SOURCE_INDEX_PATH, N_PEAKS_PATH, PHOTON_ENERGY_PATH,
    ENCODER_VALUE_PATH, GEOMETRY_TEXT_PATH, *(f"{RESULT_PATH}/{name}" for name in PEAK_DATASETS),
}
COMPRESSIONS = ("gzip", "bitshuffle-lz4", "zstd", "none")
#: deflate level of ``gzip``: level 1 writes about twice as fast as 4 for a few % more bytes
GZIP_LEVEL = 1

_STR = h5py.string_dtype("utf-8")


def result_path(name: str) -> str:
    """HDF5 path of an extra dataset or table: ``name`` if absolute, else ``/entry_1/result_1/<name>``."""
    return name if name.startswith("/") else f"{RESULT_PATH}/{name}"


def _compression_args(compression: str | None) -> dict[str, Any]:
    if compression in (None, "none"):
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True}
    import hdf5plugin

    if compression == "bitshuffle-lz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "zstd":
        return dict(hdf5plugin.Zstd(clevel=3))
    raise OutputError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")


def encode_gzip_chunk(item: NDArray[Any]) -> bytes:
    """One chunk as HDF5's shuffle + deflate filters store it (``GZIP_LEVEL``), for ``write_direct_chunk``.

    The deflate (ISA-L, else zlib) releases the GIL, so chunks encoded in threads compress in
    parallel with other work.
    """
    size = item.dtype.itemsize
    shuffled = np.ascontiguousarray(np.ascontiguousarray(item).reshape(-1).view(np.uint8).reshape(-1, size).T)
    return deflate(shuffled, GZIP_LEVEL)


def _remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _chunk_rows(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """Rows per chunk of an extra dataset of ``shape`` items: about 64 KiB, at least one item."""
    return max(1, 65536 // max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize))


def _encoder_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _DeferredWriteErrors:
    """A file for h5py's ``fileobj`` driver whose failed writes do not fail HDF5.

    HDF5 cannot recover from a write error while it flushes or closes a file (the process may die
    by SIGSEGV), so a write that fails (full disk, quota, file-size limit) is remembered in
    :attr:`error` and it and every later write are skipped; the caller stops, lets HDF5 close
    normally and raises :attr:`error`. Writes go through ``os.pwrite`` (all bytes or an error).
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._pos = 0
        self.error: OSError | None = None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        data = os.pread(self._fd, size if size >= 0 else os.fstat(self._fd).st_size - self._pos, self._pos)
        self._pos += len(data)
        return data

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as err:
                self.error = err
        self._pos += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self.error = err
        return size

    def flush(self) -> None:
        """Nothing is buffered."""

    def __enter__(self) -> _DeferredWriteErrors:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


class CXIWriter:
    """Append frames and their results to a reduced CXI file.

    Args:
        path: final file name; the file lives at ``<path>.inprogress`` until :meth:`finalize`.
        frame_shape: ``(ss, fs)`` of every frame (the raw slab).
        max_peaks: columns of the peak arrays; longer peak lists are truncated with a warning.
        compression: ``"gzip"`` (default, any HDF5 reader and CrystFEL open it), ``"bitshuffle-lz4"``
            or ``"zstd"`` (readers need hdf5plugin) or ``"none"``; used for frames and extra datasets.
        extra_datasets: per-frame datasets to create, ``name -> (shape of one frame's entry, dtype)``;
            a relative name goes under ``/entry_1/result_1``, an absolute one (``/truth/label``) as is.
        protect: input files the output must never replace (files opened by
            :func:`sfx_cnnhit.io.sources.open_frames` are protected anyway).
        geometry: detector geometry; its CrystFEL text is stored in the file and used by
            :meth:`write_geometry`.
        mask: ``(ss, fs)`` bool, True = good; stored as ``/entry_1/data_1/mask`` uint16 in Cheetah's
            convention (0 = good, 1 = bad).
        resume: reopen an existing ``<path>.inprogress``, check that its layout matches, drop everything
            after its last :meth:`commit` and expose that commit's :attr:`state`. Without such a file a
            new one is started.

    Raises:
        OutputError: if ``path`` is an input, its folder is missing, or a resumed file does not match.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        frame_shape: tuple[int, int],
        max_peaks: int = 2048,
        compression: str | None = "gzip",
        extra_datasets: Mapping[str, tuple[tuple[int, ...], DTypeLike]] | None = None,
        protect: Sequence[str | os.PathLike[str]] = (),
        geometry: DetectorGeometry | None = None,
        mask: NDArray[np.bool_] | None = None,
        resume: bool = False,
    ) -> None:
        self.path = check_output_path(path, protect)
        self.tmp_path = inprogress_path(self.path)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.max_peaks = int(max_peaks)
        if self.max_peaks < 1:
            raise OutputError(f"{self.path}: max_peaks must be at least 1")
        self.geometry = geometry
        if geometry is not None and (
            geometry.slab_shape[0] > self.frame_shape[0] or geometry.slab_shape[1] > self.frame_shape[1]
        ):
            raise OutputError(
                f"{self.path}: geometry slab {geometry.slab_shape} exceeds frame shape {self.frame_shape}"
            )
        self._extras = {
            result_path(name): (tuple(int(n) for n in shape), np.dtype(dtype))
            for name, (shape, dtype) in (extra_datasets or {}).items()
        }
        for path in self._extras:
            if path in _STANDARD_PATHS:
                raise OutputError(f"{self.path}: extra dataset {path} clashes with a standard dataset")
        self._mask = None if mask is None else np.asarray(mask, bool)
        if self._mask is not None and self._mask.shape != self.frame_shape:
            raise OutputError(f"{self.path}: mask shape {self._mask.shape} differs from frame shape {self.frame_shape}")
        self._compression = _compression_args(compression)
        #: datasets of one frame per chunk (frames, full-size maps): written and joined chunk by chunk
        self._item_paths = [DATA_PATH, *(path for path, (shape, dtype) in self._extras.items()
                                         if _chunk_rows(shape, dtype) == 1)]
        self._encoder = ThreadPoolExecutor(_encoder_threads(), thread_name_prefix="sfx-cnnhit-gzip") if (
            compression == "gzip") else None
        self._layout = {
            "frame_shape": list(self.frame_shape),
            "max_peaks": self.max_peaks,
            "extras": {path: [list(shape), dtype.str] for path, (shape, dtype) in sorted(self._extras.items())},
        }
        self._state: dict[str, Any] = {}
        self._finalized = False
        self._file: h5py.File | None = None  # the open, uncommitted segment
        self._segments = 0  # committed segments
        self._committed = 0  # frames in them
        # The folder is made complete under another name and renamed into place, and renamed away
        # before it is deleted, so a kill at any moment leaves either a whole folder or none.
        staging, self._trash = (self.tmp_path.with_name(self.tmp_path.name + s) for s in (".new", ".old"))
        try:
            for leftover in (staging, self._trash):
                _remove(leftover)
            if resume and self.tmp_path.exists():
                self._resume()
                return
            _remove(self.tmp_path)
            staging.mkdir()
            self._write_state(staging)
            os.rename(staging, self.tmp_path)
        except OSError as err:
            raise OutputError(f"{self.tmp_path}: cannot create the output ({err})") from None

    # -- layout ---------------------------------------------------------------------------------

    def _create(self, mask: NDArray[np.bool_] | None) -> None:
        """Create every standard and extra dataset, empty, in the open file (a segment or the join)."""
        f = self._file
        assert f is not None
        f.attrs["creator"] = "sfx-cnnhit"
        f.create_dataset("cxi_version", data=140)
        ss, fs = self.frame_shape
        f.create_dataset(
            DATA_PATH,
            shape=(0, ss, fs),
            maxshape=(None, ss, fs),
            dtype=np.float32,
            chunks=(1, ss, fs),
            **self._compression,
        )
        f[DATA_PATH].attrs["axes"] = "experiment_identifier:y:x"
        if mask is not None:
            f.create_dataset(MASK_PATH, data=(~mask).astype(np.uint16), compression="gzip")
            f[MASK_PATH].attrs["convention"] = "Cheetah: 0 = good pixel, non-zero = bad"
        if self.geometry is not None:
            f.create_dataset(GEOMETRY_TEXT_PATH, data=format_geometry(self.geometry), dtype=_STR)
        rows = max(1, 65536 // self.max_peaks)
        f.create_dataset(N_PEAKS_PATH, shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))
        for name in PEAK_DATASETS:
            f.create_dataset(
                f"{RESULT_PATH}/{name}",
                shape=(0, self.max_peaks),
                maxshape=(None, self.max_peaks),
                dtype=np.float32,
                chunks=(rows, self.max_peaks),
                compression="gzip",
                shuffle=True,
            )
        for path, dtype in ((EVENT_ID_PATH, _STR), (SOURCE_FILE_PATH, _STR), (SOURCE_INDEX_PATH, np.int64)):
            f.create_dataset(path, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
        for path, (shape, dtype) in self._extras.items():
            f.create_dataset(
                path,
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=dtype,
                chunks=(_chunk_rows(shape, dtype), *shape),
                **self._compression,
            )
        f.attrs[EXTRAS_ATTR] = json.dumps(sorted(self._extras))

    def _segment_path(self, k: int) -> Path:
        return self.tmp_path / f"segment_{k:06d}.h5"

    def _write_state(self, folder: Path | None = None) -> None:
        record = {"layout": self._layout, "segments": self._segments, "n_frames": self._committed,
                  "state": self._state}
        write_text_atomic((folder or self.tmp_path) / STATE_FILE, json.dumps(record) + "\n")

    def _resume(self) -> None:
        """Pick up the committed segments of ``<path>.inprogress`` and drop everything after them."""

        def refuse(what: str) -> OutputError:
            return OutputError(f"{self.tmp_path}: cannot resume, {what}; delete it or use another output name")

        state_file = self.tmp_path / STATE_FILE
        if not self.tmp_path.is_dir() or not state_file.is_file():
            raise refuse("it is not a reduced CXI in progress written by this version of sfx-cnnhit")
        try:
            record = json.loads(state_file.read_text(encoding="utf-8"))
            layout, segments, n_frames = record["layout"], int(record["segments"]), int(record["n_frames"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise refuse(f"its {STATE_FILE} is unreadable ({err})") from None
        names = {"frame_shape": "frames", "max_peaks": "max_peaks", "extras": "extra datasets"}
        for key, name in names.items():
            if layout.get(key) != self._layout[key]:
                raise refuse(f"it has the {name} {layout.get(key)}, not {self._layout[key]}")
        committed = {self._segment_path(k) for k in range(segments)}
        missing = sorted(p.name for p in committed if not p.is_file())
        if missing:
            raise refuse(f"its committed segment {missing[0]} is missing")
        for leftover in self.tmp_path.iterdir():  # an unfinished segment or join, uncommitted segments
            if leftover.name != STATE_FILE and leftover not in committed:
                leftover.unlink()
        self._segments, self._committed, self._state = segments, n_frames, dict(record["state"])

    def _open_segment(self) -> h5py.File:
        """The segment appends go to, opened on the first append after a commit. It lives in memory (one
        batch) and reaches the disk only in :meth:`commit`, written as ``segment_N.h5.tmp`` by plain file
        I/O and renamed, so a full disk is a clean error and HDF5 never holds a half-written file."""
        if self._file is None:
            name = str(self._segment_path(self._segments))
            self._file = h5py.File(name, "w", driver="core", backing_store=False)
            self._create(None)
        return self._file

    def _per_frame_paths(self, f: h5py.File) -> list[str]:
        paths = [
            DATA_PATH,
            N_PEAKS_PATH,
            EVENT_ID_PATH,
            SOURCE_FILE_PATH,
            SOURCE_INDEX_PATH,
            *(f"{RESULT_PATH}/{name}" for name in PEAK_DATASETS),
            *self._extras,
        ]
        return paths + self._metadata_paths(f)

    @staticmethod
    def _table_paths(f: h5py.File) -> list[str]:
        found: list[str] = []
        f.visititems(lambda name, obj: found.append("/" + name) if obj.attrs.get("sfx_cnnhit_table") else None)
        return found

    # -- appending ------------------------------------------------------------------------------

    @property
    def n_frames(self) -> int:
        """Frames written so far (committed, and appended since the last commit)."""
        return self._committed + (0 if self._file is None else int(self._file[DATA_PATH].shape[0]))

    @property
    def state(self) -> dict[str, Any]:
        """The ``state`` of the last :meth:`commit` (empty for a new file)."""
        return dict(self._state)

    def append(
        self,
        data: ArrayLike,
        *,
        event_ids: Sequence[str],
        source_files: Sequence[str] | str,
        source_indices: ArrayLike,
        peaks: Sequence[PeakList] | None = None,
        extras: Mapping[str, ArrayLike] | None = None,
        metadata: Mapping[str, ArrayLike | float] | None = None,
        tables: Mapping[str, Mapping[str, ArrayLike]] | None = None,
    ) -> None:
        """Append ``n`` frames with their event ids, provenance, peaks and extra datasets.

        Args:
            data: ``(n, ss, fs)`` frames (stored as float32).
            event_ids: ``n`` event identifiers.
            source_files: the source file of each frame (one string for all).
            source_indices: ``(n,)`` index of each frame inside its source file.
            peaks: ``n`` peak lists (None: no peaks, ``nPeaks = 0``).
            extras: one ``(n, *shape)`` array for every dataset declared in ``extra_datasets``.
            metadata: ``(n,)`` arrays or scalars; ``photon_energy_ev`` goes to
                ``/LCLS/photon_energy_eV``, ``clen_m`` to ``/LCLS/detector_1/EncoderValue`` (in mm),
                anything else to ``/entry_1/metadata/<key>``; frames without a value get NaN.
            tables: ``group -> {column -> 1-D array}``: rows appended to growable 1-D columns (a
                relative group goes under ``/entry_1/result_1``); every column of a group has the
                same length and a group keeps the columns of its first append.
        """
        if self._finalized:
            raise OutputError(f"{self.path}: already finalized")
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 3 or data.shape[1:] != self.frame_shape:
            raise ValueError(f"frames must be (n, {self.frame_shape[0]}, {self.frame_shape[1]}), got {data.shape}")
        n = data.shape[0]
        if len(event_ids) != n:
            raise ValueError(f"{len(event_ids)} event ids for {n} frames")
        files = [source_files] * n if isinstance(source_files, str) else list(source_files)
        indices = np.asarray(source_indices, dtype=np.int64).reshape(-1)
        if len(files) != n or indices.size != n:
            raise ValueError(f"source_files and source_indices need {n} entries")
        if peaks is not None and len(peaks) != n:
            raise ValueError(f"{len(peaks)} peak lists for {n} frames")
        extras = dict(extras or {})
        given = {result_path(k): v for k, v in extras.items()}
        missing, unknown = set(self._extras) - set(given), set(given) - set(self._extras)
        if missing or unknown:
            raise ValueError(
                f"extras must be exactly the declared datasets; missing {sorted(missing)}, undeclared {sorted(unknown)}"
            )
        extra_arrays = {}
        for path, value in given.items():
            shape, dtype = self._extras[path]
            arr = np.asarray(value, dtype=dtype)
            if arr.shape != (n, *shape):
                raise ValueError(f"extra {path} must be {(n, *shape)}, got {arr.shape}")
            extra_arrays[path] = arr

        f = self._open_segment()
        n0 = int(f[DATA_PATH].shape[0])
        n1 = n0 + n
        for path in self._per_frame_paths(f):
            f[path].resize(n1, axis=0)
        arrays = {DATA_PATH: data, **extra_arrays}
        if self._encoder is not None:  # every frame's chunks encoded at once, in threads, written in order
            encoded = {path: self._encoder.map(encode_gzip_chunk, arrays.pop(path))
                       for path in self._item_paths}
            for path, chunks in encoded.items():
                zeros = (0,) * (f[path].ndim - 1)
                for j, chunk in enumerate(chunks):
                    f[path].id.write_direct_chunk((n0 + j, *zeros), chunk)
        for path, arr in arrays.items():
            f[path][n0:n1] = arr
        f[EVENT_ID_PATH][n0:n1] = np.array(event_ids, dtype=object)
        f[SOURCE_FILE_PATH][n0:n1] = np.array(files, dtype=object)
        f[SOURCE_INDEX_PATH][n0:n1] = indices
        self._write_peaks(n0, n1, peaks)
        self._write_metadata(n0, n1, metadata or {})
        for group, columns in (tables or {}).items():
            self._append_table(result_path(group), columns)

    def _write_peaks(self, n0: int, n1: int, peaks: Sequence[PeakList] | None) -> None:
        f, n = self._open_segment(), n1 - n0
        counts = np.zeros(n, np.int32)
        arrays = {name: np.zeros((n, self.max_peaks), np.float32) for name in PEAK_DATASETS}
        truncated = 0
        for i, pl in enumerate(peaks or ()):
            k = min(pl.num_peaks, self.max_peaks)
            truncated += pl.num_peaks > self.max_peaks
            counts[i] = k
            for name, attr in PEAK_DATASETS.items():
                arrays[name][i, :k] = getattr(pl, attr)[:k]
        if truncated:
            warnings.warn(
                f"{self.path}: {truncated} frame(s) had more than max_peaks={self.max_peaks} peaks; "
                "their peak lists were truncated",
                stacklevel=3,
            )
        f[N_PEAKS_PATH][n0:n1] = counts
        for name, arr in arrays.items():
            f[f"{RESULT_PATH}/{name}"][n0:n1] = arr

    def _write_metadata(self, n0: int, n1: int, metadata: Mapping[str, ArrayLike | float]) -> None:
        f, n = self._open_segment(), n1 - n0
        written = set()
        for key, value in metadata.items():
            path, factor = KNOWN_METADATA.get(key, (f"{METADATA_GROUP}/{key}", 1.0))
            if path not in f:
                f.create_dataset(
                    path, shape=(n1,), maxshape=(None,), dtype=np.float64, chunks=(4096,), fillvalue=np.nan
                )
            f[path][n0:n1] = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)) * factor
            written.add(path)
        for path in self._metadata_paths(f):
            if path not in written:
                f[path][n0:n1] = np.nan

    @staticmethod
    def _metadata_paths(f: h5py.File) -> list[str]:
        paths = [path for path, _ in KNOWN_METADATA.values() if path in f]
        if METADATA_GROUP in f:
            paths += [f"{METADATA_GROUP}/{name}" for name in f[METADATA_GROUP]]
        return paths

    def _append_table(self, group_path: str, columns: Mapping[str, ArrayLike]) -> None:
        f = self._open_segment()
        arrays = {name: np.asarray(col).reshape(-1) for name, col in columns.items()}
        lengths = {a.size for a in arrays.values()}
        if len(lengths) > 1:
            raise ValueError(f"table {group_path}: columns have different lengths {sorted(lengths)}")
        rows = lengths.pop() if lengths else 0
        if group_path not in f:
            group = f.create_group(group_path)
            group.attrs["sfx_cnnhit_table"] = True
            for name, arr in arrays.items():
                dtype = _STR if arr.dtype.kind in "OUS" else arr.dtype
                group.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(16384,), compression="gzip"
                )
        group = f[group_path]
        if set(group) != set(arrays):
            raise ValueError(f"table {group_path}: columns {sorted(arrays)} differ from {sorted(group)}")
        for name, arr in arrays.items():
            ds = group[name]
            r0 = ds.shape[0]
            ds.resize(r0 + rows, axis=0)
            ds[r0:] = arr.astype(object) if ds.dtype.kind == "O" else arr

    # -- committing and finishing ---------------------------------------------------------------

    def commit(self, state: Mapping[str, Any] | None = None) -> None:
        """Close the open segment, rename it into place and record ``state`` (JSON-serialisable) as the
        point a resumed run restarts from. A segment without frames or table rows is dropped."""
        self._state = dict(state or {})
        f = self._file
        if f is not None:
            n = int(f[DATA_PATH].shape[0])
            rows = sum(next(iter(f[path].values())).shape[0] for path in self._table_paths(f) if len(f[path]))
            f.flush()
            image = f.id.get_file_image()
            f.close()
            self._file = None
            if n or rows:
                target = self._segment_path(self._segments)
                tmp = target.with_suffix(".h5.tmp")
                with write_errors(tmp):
                    try:
                        with tmp.open("wb") as out:
                            out.write(image)
                    except OSError:  # disk full, quota, file size limit: the batch is not committed
                        tmp.unlink(missing_ok=True)
                        raise
                os.replace(tmp, target)
                self._segments += 1
                self._committed += n
        try:
            self._write_state()
        except OSError as err:
            raise OutputError(f"{self.tmp_path}: cannot record the progress ({err})") from None

    def finalize(self) -> Path:
        """Commit, join the segments into ``path`` and remove ``<path>.inprogress``; returns ``path``.

        Raises:
            OutputError: a write failed (full disk, quota, file-size limit); the committed segments stay,
                and a writer resumed later joins them again.
        """
        if not self._finalized:
            self.commit(self._state)
            joined = self.tmp_path / JOINED_FILE
            with write_errors(self.path):
                try:
                    self._join(joined)
                except OSError:
                    joined.unlink(missing_ok=True)
                    raise
            os.replace(joined, self.path)
            os.rename(self.tmp_path, self._trash)
            shutil.rmtree(self._trash)
            self._finalized = True
            self._stop_encoder()
        return self.path

    def _join(self, out_path: Path) -> None:
        """Write every committed segment, in order, into one reduced CXI at ``out_path``.

        Raises:
            OSError: a write failed (full disk, quota, file-size limit); the segments are untouched.
        """
        with _DeferredWriteErrors(out_path) as sink:
            with h5py.File(sink, "w", driver="fileobj") as out:
                self._file = out
                try:
                    self._create(self._mask)
                    for k in range(self._segments):
                        with h5py.File(self._segment_path(k), "r") as segment:
                            self._append_segment(segment)
                        if sink.error is not None:
                            break
                finally:
                    self._file = None
            if sink.error is not None:
                raise sink.error

    def _append_segment(self, segment: h5py.File) -> None:
        f = self._file
        assert f is not None
        n0 = int(f[DATA_PATH].shape[0])
        n1 = n0 + int(segment[DATA_PATH].shape[0])
        for path in self._metadata_paths(segment):
            if path not in f:
                f.create_dataset(path, shape=(n0,), maxshape=(None,), dtype=np.float64, chunks=(4096,),
                                 fillvalue=np.nan)
        for path in self._per_frame_paths(f):
            f[path].resize(n1, axis=0)
            if path in self._item_paths:  # the stored chunks as they are: no decoding, no encoding
                zeros = (0,) * (f[path].ndim - 1)
                for j in range(n1 - n0):
                    filter_mask, chunk = segment[path].id.read_direct_chunk((j, *zeros))
                    f[path].id.write_direct_chunk((n0 + j, *zeros), chunk, filter_mask)
            else:
                f[path][n0:n1] = segment[path][()] if path in segment else np.nan
        for path in self._table_paths(segment):
            self._append_table(path, {name: column[()] for name, column in segment[path].items()})

    def close(self) -> None:
        """Close without finalizing: the open segment (uncommitted) is dropped, the committed ones stay."""
        if not self._finalized and self._file is not None:
            self._file.close()
            self._file = None
        self._stop_encoder()

    def _stop_encoder(self) -> None:
        if self._encoder is not None:
            self._encoder.shutdown()
            self._encoder = None

    def __enter__(self) -> CXIWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()

    # -- companions -----------------------------------------------------------------------------

    def write_geometry(
        self,
        path: str | os.PathLike[str],
        *,
        data_path: str = DATA_PATH,
        protect: Sequence[str | os.PathLike[str]] = (),
    ) -> Path:
        """Write a CrystFEL geometry for this file whose ``data =`` is ``data_path`` (e.g. an extra heat map).

        Photon energy and camera length point at ``/LCLS/...`` when every frame so far recorded them,
        else the geometry's own values are written; the mask is referenced when one was stored.
        """
        if self.geometry is None:
            raise OutputError(f"{path}: no geometry was given to the writer of {self.path}")
        data_path = result_path(data_path) if data_path != DATA_PATH else data_path
        if data_path != DATA_PATH and data_path not in self._extras:
            raise OutputError(f"{path}: {data_path} is not a dataset of {self.path}")
        if data_path != DATA_PATH and self._extras[data_path][0] != self.frame_shape:
            raise OutputError(f"{path}: {data_path} is not a stack of {self.frame_shape} frames")
        return write_geometry(
            self.geometry,
            path,
            data_path=data_path,
            photon_energy=self._recorded(PHOTON_ENERGY_PATH),
            clen=self._recorded(ENCODER_VALUE_PATH),
            mask_path=MASK_PATH if self._mask is not None else None,
            protect=(*protect, self.path, self.tmp_path),
        )

    def _recorded(self, path: str) -> str | None:
        """``path`` if every frame written so far has a finite value there, else None."""
        files = [self.path] if self._finalized else [self._segment_path(k) for k in range(self._segments)]
        parts: list[h5py.File] = []
        try:
            parts = [h5py.File(p, "r") for p in files]
            if self._file is not None:
                parts.append(self._file)
            filled = [f for f in parts if f[DATA_PATH].shape[0]]
            complete = bool(filled) and all(path in f and np.all(np.isfinite(f[path][()])) for f in filled)
        finally:
            for f in parts:
                if f is not self._file:
                    f.close()
        return path if complete else None


def write_lst(
    path: str | os.PathLike[str],
    cxi_path: str | os.PathLike[str],
    n_events: int,
    *,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write a CrystFEL event list (``<cxi_path> //<i>`` per line) for ``indexamajig -i``."""
    lines = "".join(f"{cxi_path} //{i}\n" for i in range(int(n_events)))
    return write_text_atomic(path, lines, protect=[*protect, cxi_path])


def read_peak_lists(
    path: str | os.PathLike[str], *, group: str = RESULT_PATH, start: int = 0, stop: int | None = None
) -> list[PeakList]:
    """Peak lists of frames ``start:stop`` from a CXI file's ``nPeaks``/``peak*`` arrays (Cheetah, OM or ours).

    Missing optional arrays (``peakNPixels``, ``peakMaximumValue``, ``peakSNR``) read as zeros.
    """
    from sfx_cnnhit.io.hdf5 import guarded_read, open_hdf5

    with open_hdf5(path) as f:
        if f"{group}/nPeaks" not in f:
            raise InputError(f"{path}: no peak list at {group} (expected {group}/nPeaks)")
        counts = guarded_read(path, f"{group}/nPeaks", lambda: f[f"{group}/nPeaks"][start:stop])
        arrays = {}
        for name, attr in PEAK_DATASETS.items():
            if f"{group}/{name}" in f:
                # mypy cannot infer a lambda with default arguments (python/mypy#15459).
                arrays[attr] = guarded_read(path, f"{group}/{name}", lambda n=name: f[f"{group}/{n}"][start:stop])  # type: ignore[misc]
        if "fs" not in arrays or "ss" not in arrays:
            raise InputError(f"{path}: {group} has nPeaks but no peakXPosRaw/peakYPosRaw")
    out = []
    for i, k in enumerate(np.asarray(counts, np.int64)):
        k = int(min(k, arrays["fs"].shape[1]))
        fields: dict[str, Any] = {
            attr: arrays[attr][i, :k] if attr in arrays else np.zeros(k) for attr in PEAK_DATASETS.values()
        }
        out.append(PeakList(**fields))
    return out
