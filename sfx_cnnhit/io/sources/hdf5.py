"""CXI/HDF5 inputs: a 2-D frame, a 3-D ``(N, ss, fs)`` or 4-D ``(N, modules, ss, fs)`` stack, found by
``data_path``, the geometry, the CXI paths or as the only image-like dataset; and CrystFEL's ``%``
placeholder paths (``/data/%/data``: one 2-D frame per matching path)."""

from __future__ import annotations

import h5py

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.hdf5 import (
    CXI_DATA_PATHS,
    broken_link,
    cache_bytes_for,
    check_filters,
    check_virtual_sources,
    describe_datasets,
    filter_names,
    image_like_datasets,
    open_hdf5,
)
from sfx_cnnhit.io.images import check_dtype
from sfx_cnnhit.io.sources.base import _exists, _Input

EVENT_ID_PATH = "/entry_1/experiment_identifier"


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


def _placeholder_path(pattern: str, name: str) -> str:
    values = iter(name.split("/"))
    return "/".join(next(values) if part == "%" else part for part in pattern.split("/"))
