"""Read-only HDF5 access with one-line errors: open, check filters, find image datasets, read."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import h5py
import numpy as np

from sfx_cnnhit.errors import InputError

hdf5plugin: ModuleType | None
try:  # registers bitshuffle, LZ4, zstd, Blosc ... with HDF5
    import hdf5plugin
except ImportError:  # pragma: no cover - exercised in a subprocess test
    hdf5plugin = None

T = TypeVar("T")

#: CXI frame locations tried, in order, when no data path is given.
CXI_DATA_PATHS = (
    "/entry_1/data_1/data",
    "/entry_1/instrument_1/detector_1/data",
    "/entry_1/instrument_1/detector_1/detector_corrected/data",
    "/data/data",
    "/entry/data/data",
)

_KNOWN_FILTERS = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32001: "Blosc",
    32004: "LZ4",
    32008: "bitshuffle",
    32015: "zstd",
    32026: "Blosc2",
}

#: Smallest frame side (pixels) read as frames.
MIN_FRAME_PX = 8

DEFAULT_CACHE_BYTES = 64 * 2**20
MAX_CACHE_BYTES = 512 * 2**20


def open_hdf5(path: str | os.PathLike[str], *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> h5py.File:
    """Open an HDF5 file read-only (no file locking), turning failures into :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if not h5py.is_hdf5(p):
        raise InputError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(p, "r", locking=False, rdcc_nbytes=int(cache_bytes), rdcc_nslots=10007, rdcc_w0=1.0)
    except OSError as err:
        text = str(err)
        if "truncated" in text or "eof" in text.lower():
            raise InputError(f"{path}: truncated HDF5 file (incomplete copy or still being written?)") from None
        raise InputError(f"{path}: corrupt or unreadable HDF5 file ({_first_line(text)})") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def filter_names(dset: h5py.Dataset) -> list[str]:
    """Names of the HDF5 filters (compression ...) of a dataset, in pipeline order."""
    plist = dset.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(i)
        names.append(_KNOWN_FILTERS.get(code, name.decode(errors="replace") or f"filter {code}"))
    return names


def check_filters(path: str | os.PathLike[str], dset: h5py.Dataset) -> None:
    """Raise :class:`InputError` if a filter of ``dset`` is not available to this HDF5 library."""
    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(i)
        if h5py.h5z.filter_avail(code):  # h5py marks plugin filters "optional", yet reading still needs them
            continue
        label = _KNOWN_FILTERS.get(code) or name.decode(errors="replace").split(";")[0] or "unknown"
        hint = (
            "pip install hdf5plugin"
            if hdf5plugin is None
            else "hdf5plugin does not provide it: pip install hdf5plugin or the filter's HDF5 plugin (HDF5_PLUGIN_PATH)"
        )
        raise InputError(f"{path}:{dset.name}: HDF5 compression filter {code} ({label}) is not available; {hint}")


def is_image_like(obj: object) -> bool:
    """A numeric dataset of rank 2-4 whose last two axes are at least ``MIN_FRAME_PX`` pixels."""
    return (
        isinstance(obj, h5py.Dataset)
        and obj.dtype.kind in "iuf"
        and 2 <= obj.ndim <= 4
        and min(obj.shape[-2:]) >= MIN_FRAME_PX
    )


def image_like_datasets(f: h5py.File) -> list[str]:
    """Paths of every image-like dataset in the file (following soft links once)."""
    found: list[str] = []
    seen: set[object] = set()

    def visit(name: str, obj: object) -> None:
        if is_image_like(obj) and obj.id not in seen:  # type: ignore[attr-defined]
            seen.add(obj.id)  # type: ignore[attr-defined]
            found.append("/" + name)

    f.visititems_links(lambda name, link: visit(name, f.get(name)) if not isinstance(link, h5py.ExternalLink) else None)
    return found


def _linked_file(f: h5py.File, name: str, prefix_variable: str) -> Path | None:
    """Where HDF5 finds the file ``name`` that ``f`` links to: as given (absolute, or relative to the
    working directory), under a folder of ``$prefix_variable`` (``HDF5_EXT_PREFIX``, ``HDF5_VDS_PREFIX``)
    or beside ``f``; None if in none of these places."""
    prefixes = [p for p in os.environ.get(prefix_variable, "").split(":") if p]
    for candidate in (Path(name), *(Path(p) / name for p in prefixes), Path(f.filename).parent / name):
        if candidate.is_file():
            return candidate
    return None


def broken_link(f: h5py.File, name: str) -> str | None:
    """Why the link ``name`` cannot be followed (an external link to a missing file or object, a dangling
    soft link), or None when it can, or ``name`` is no link or does not exist."""
    try:
        link = f.get(name, getlink=True)
    except (KeyError, ValueError, RuntimeError, OSError):  # a group on the way is missing or broken
        return None
    if not isinstance(link, h5py.ExternalLink | h5py.SoftLink):
        return None
    try:
        f[name]
        return None
    except (KeyError, ValueError, RuntimeError, OSError) as err:
        cause = _first_line(str(err.args[0] if err.args else err))
    if isinstance(link, h5py.SoftLink):
        return f"soft link to {link.path}, which does not exist"
    target = f"{link.filename}:{link.path}"
    located = _linked_file(f, link.filename, "HDF5_EXT_PREFIX")
    if located is None:
        return f"external link to {target}, whose file does not exist"
    try:
        open_hdf5(located, cache_bytes=2**20).close()
    except InputError as err:
        return f"external link to {target}, whose file is unusable: {err}"
    if "doesn't exist" in cause:
        return f"external link to {target}, which does not exist"
    return f"external link to {target} cannot be followed ({cause})"


def check_virtual_sources(path: str | os.PathLike[str], dset: h5py.Dataset) -> None:
    """Raise :class:`InputError` if a source of the virtual dataset ``dset`` is missing or unreadable
    (HDF5 would silently read its frames as the fill value). Sources named by a printf-like pattern
    (``%b``, for unlimited virtual datasets) are not checked."""
    if not dset.is_virtual:
        return
    where = f"{path}:{dset.name}"
    for file, name in dict.fromkeys((vs.file_name, vs.dset_name) for vs in dset.virtual_sources()):
        if "%" in file + name:
            continue
        located = Path(dset.file.filename) if file == "." else _linked_file(dset.file, file, "HDF5_VDS_PREFIX")
        if located is None:
            raise InputError(f"{where}: virtual dataset source {file} is missing")
        try:
            with open_hdf5(located, cache_bytes=2**20) as source:
                found = isinstance(source.get(name), h5py.Dataset)
        except InputError as err:
            raise InputError(f"{where}: virtual dataset source {err}") from None
        if not found:
            raise InputError(f"{where}: virtual dataset source {file} has no dataset {name}")


def describe_datasets(paths: list[str], f: h5py.File) -> str:
    """``/a (10, 32, 32) uint16, /b ...`` for an error message."""
    if not paths:
        return "it has no image-like datasets"
    shown = [f"{p} {f[p].shape} {f[p].dtype}" for p in paths[:8]]
    more = f" and {len(paths) - 8} more" if len(paths) > 8 else ""
    return "image-like datasets: " + ", ".join(shown) + more


def guarded_read(path: str | os.PathLike[str], what: str, read: Callable[[], T]) -> T:
    """Run ``read`` and turn HDF5 read failures into :class:`InputError` naming ``path`` and ``what``."""
    try:
        return read()
    except (OSError, RuntimeError, KeyError) as err:
        text = _first_line(str(err))
        if "filter" in text.lower() or "plugin" in text.lower():
            raise InputError(
                f"{path}: cannot decompress {what} ({text}); a compression filter is missing or the data is "
                "corrupt (pip install hdf5plugin)"
            ) from None
        raise InputError(f"{path}: cannot read {what}: corrupt or truncated HDF5 data ({text})") from None


def cache_bytes_for(dset: h5py.Dataset) -> int:
    """Chunk cache to give a dataset: two chunks, at least the default, at most 512 MiB."""
    if dset.chunks is None:
        return DEFAULT_CACHE_BYTES
    chunk = int(np.prod(dset.chunks, dtype=np.int64)) * dset.dtype.itemsize
    return int(min(max(2 * chunk, DEFAULT_CACHE_BYTES), MAX_CACHE_BYTES))


def decode_strings(values: np.ndarray) -> list[str]:
    """HDF5 string values (bytes or str, fixed or variable length) as Python strings."""
    return [v.decode(errors="replace").rstrip("\x00") if isinstance(v, bytes) else str(v) for v in values.tolist()]
