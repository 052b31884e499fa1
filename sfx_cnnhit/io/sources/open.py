""":func:`open_frames`: each input dispatched to its kind (``.lst`` list, HDF5 by content, image by suffix),
checked against the first, and given its good-pixel rules."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.atomic import register_input
from sfx_cnnhit.io.hdf5 import MIN_FRAME_PX, open_hdf5
from sfx_cnnhit.io.hotpixels import HotPixelRule
from sfx_cnnhit.io.images import IMAGE_SUFFIXES
from sfx_cnnhit.io.masks import MaskConvention, convention_bits
from sfx_cnnhit.io.sources.base import _Input
from sfx_cnnhit.io.sources.frames import FrameSource
from sfx_cnnhit.io.sources.hdf5 import _open_hdf5_input
from sfx_cnnhit.io.sources.images import _image_input
from sfx_cnnhit.io.sources.lists import _input_specs, _select
from sfx_cnnhit.io.sources.masks import _pixel_rules
from sfx_cnnhit.io.sources.metadata import _metadata_sources
from sfx_cnnhit.io.sources.reader import _Reader


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


def _first_photon_energy(inp: _Input) -> float | None:
    """The photon energy (eV) of an input's first frame, for a gain given as ``adu_per_eV``; None if unknown."""
    meta = inp.metadata.get("photon_energy_ev")
    if meta is None or inp.n_frames == 0:
        return None
    with _Reader(inp, data=False) as reader:
        value = float(reader.metadata(meta, inp.file_indices(np.zeros(1, np.int64)))[0])
    return value if np.isfinite(value) and value > 0 else None
