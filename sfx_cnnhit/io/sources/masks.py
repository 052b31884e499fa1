"""Good pixels of each input: its stored mask (the user's, the geometry's or the CXI file's own; static
or per frame) and its bad-pixel rules (:mod:`sfx_cnnhit.io.masks`)."""

from __future__ import annotations

import h5py
import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.hdf5 import check_filters, guarded_read, open_hdf5
from sfx_cnnhit.io.masks import CXI_MASK_PATHS, BadPixelRules, check_mask, load_mask_file, mask_from_values
from sfx_cnnhit.io.sources.base import _exists, _Input, _MaskSource


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
