"""Bad-pixel masks: file masks in Cheetah's or CrystFEL's convention, and computed bad pixels.

Every mask this package hands out is bool with True = good pixel. A stored mask is converted with
:func:`mask_from_values`: without good/bad bits in Cheetah's convention (0 = good, anything else bad),
with them in CrystFEL's (good iff all ``goodbits`` are set and no ``badbits`` is set; OM's 1 = good
maps are ``goodbits=1``). ``--mask-convention`` (:data:`MaskConvention`) picks one of the two outright.
:func:`check_mask` refuses a stored mask that hides nearly every pixel or looks read in the wrong
convention. Computed bad pixels (:class:`BadPixelRules`) are NaN/inf, values below a
floor, values at or above the saturation level and CrystFEL's ``flag_lessthan/morethan/equal``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.io.crystfel_geom import FLAG_KEYS
from sfx_cnnhit.io.hdf5 import check_filters, guarded_read, open_hdf5

#: Datasets tried, in order, in a separate HDF5 mask file when no dataset path is given.
MASK_FILE_PATHS = ("/data/data", "/mask", "/entry_1/data_1/mask", "/entry_1/instrument_1/detector_1/mask")
#: A CXI file's own mask, used when no other mask is given.
CXI_MASK_PATHS = ("/entry_1/data_1/mask", "/entry_1/instrument_1/detector_1/mask")

#: How stored masks are read: ``auto`` (the good/bad bits given, else the geometry's, else Cheetah's),
#: ``cheetah`` (0 = good) or ``crystfel`` (``goodbits=0x1, badbits=0x0``: 1 = good, OM's maps).
MaskConvention = Literal["auto", "cheetah", "crystfel"]
#: The bits of each explicit convention (None, None: Cheetah's 0 = good), and what they mean.
CONVENTION_BITS: dict[str, tuple[int | None, int | None]] = {"cheetah": (None, None), "crystfel": (1, 0)}
_MEANING = {"cheetah": "0 = good", "crystfel": "1 = good"}
#: A stored mask leaving fewer good pixels than this is refused in any convention: every frame would
#: be a ``masked`` miss (the same 1 % as :data:`sfx_cnnhit.models.guards.MIN_GOOD_FRACTION`).
MIN_GOOD_FRACTION = 0.01
#: With a guessed convention (``auto``), a stored mask leaving fewer good pixels than this (over 90 %
#: masked) is refused as inverted when the other convention leaves at least
#: :data:`PLAUSIBLE_GOOD_FRACTION`. Real masks (detector gaps, shadows: 60 % masked) stay well clear.
SUSPECT_GOOD_FRACTION = 0.1
PLAUSIBLE_GOOD_FRACTION = 0.5


def mask_from_values(
    values: NDArray[Any], *, goodbits: int | None = None, badbits: int | None = None
) -> NDArray[np.bool_]:
    """Convert stored mask values to bool, True = good (see the module docstring for the conventions)."""
    values = np.asarray(values)
    if values.dtype.kind == "b":
        values = values.astype(np.uint8)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError("a mask must hold integers")
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise ValueError(f"a mask must hold integers, not {values.dtype}")
    if goodbits is None and badbits is None:
        return cast("NDArray[np.bool_]", values == 0)
    good, bad = int(goodbits or 0), int(badbits or 0)
    return cast("NDArray[np.bool_]", ((values & good) == good) & ((values & bad) == 0))


def describe_convention(goodbits: int | None, badbits: int | None) -> str:
    """How a stored mask is read, for ``info``."""
    if goodbits is None and badbits is None:
        return "Cheetah (0 = good, non-zero = bad)"
    return f"CrystFEL bits (goodbits={int(goodbits or 0):#x}, badbits={int(badbits or 0):#x})"


def convention_bits(
    convention: MaskConvention, goodbits: int | None, badbits: int | None
) -> tuple[int | None, int | None]:
    """The good/bad bits masks are read with: with ``auto`` the bits given, else the convention's.

    Raises:
        ConfigError: an unknown convention, or an explicit one together with bits.
    """
    if convention == "auto":
        return goodbits, badbits
    if convention not in CONVENTION_BITS:
        raise ConfigError(f"mask convention {convention!r}: expected auto, cheetah or crystfel")
    if goodbits is not None or badbits is not None:
        raise ConfigError("give either --mask-convention or --mask-goodbits/--mask-badbits, not both")
    return CONVENTION_BITS[convention]


def _convention_name(goodbits: int | None, badbits: int | None) -> str | None:
    """``cheetah``/``crystfel`` when the bits are exactly that convention's, else None."""
    key = (None, None) if goodbits is None and badbits is None else (int(goodbits or 0), int(badbits or 0))
    return next((name for name, bits in CONVENTION_BITS.items() if bits == key), None)


def check_mask(
    label: str,
    values: NDArray[np.generic],
    good: NDArray[np.bool_],
    goodbits: int | None,
    badbits: int | None,
    *,
    guessed: bool,
) -> None:
    """Refuse a stored mask that makes the run nonsense.

    ``good`` is ``values`` read with the bits. Refused: fewer than :data:`MIN_GOOD_FRACTION` (1 %)
    good pixels, always; with ``guessed`` (the convention was not given outright), also fewer than
    :data:`SUSPECT_GOOD_FRACTION` (10 %) when the other convention leaves at least
    :data:`PLAUSIBLE_GOOD_FRACTION` (50 %).

    Raises:
        InputError: naming the mask, its convention, the fraction masked and the option to flip it.
    """
    if good.size == 0:
        return
    fraction = np.count_nonzero(good) / good.size
    if fraction >= SUSPECT_GOOD_FRACTION or (fraction >= MIN_GOOD_FRACTION and not guessed):
        return
    current = _convention_name(goodbits, badbits)
    fractions = {
        name: np.count_nonzero(mask_from_values(values, goodbits=g, badbits=b)) / good.size
        for name, (g, b) in CONVENTION_BITS.items()
        if name != current
    }
    other = max(fractions, key=fractions.__getitem__)
    if fraction >= MIN_GOOD_FRACTION and fractions[other] < PLAUSIBLE_GOOD_FRACTION:
        return
    lo, hi = np.min(values), np.max(values)
    message = f"{label}: the mask hides {1 - fraction:.1%} of the pixels read with convention "
    message += describe_convention(goodbits, badbits) + (f" (every stored value is {lo})" if lo == hi else "")
    if fractions[other] > fraction:
        message += f"; if {_MEANING[other]} in this mask, give --mask-convention {other} "
        message += f"(it then hides {1 - fractions[other]:.1%})"
        if fraction >= MIN_GOOD_FRACTION:
            bits = f"--mask-goodbits {goodbits or 0:#x} --mask-badbits {badbits or 0:#x}"
            message += f", or {f'--mask-convention {current}' if current else bits} to keep it"
    else:
        message += f" (with --mask-convention {other}: {1 - fractions[other]:.1%}); give another mask (--mask-path)"
    raise InputError(message)


def parse_mask_argument(value: str) -> tuple[str | None, str | None]:
    """Split a ``--mask-path`` value into ``(mask_file, dataset_path)``.

    ``mask.h5`` or ``mask.npy`` (an existing file) -> ``(file, None)``; ``mask.h5:/data/mask`` ->
    ``(file, "/data/mask")``; ``/data/mask`` (not a file) -> ``(None, "/data/mask")``, a dataset of
    each input file.
    """
    if Path(value).is_file():
        return value, None
    if ":" in value:
        file, dataset = value.rsplit(":", 1)
        if Path(file).is_file() and dataset.startswith("/"):
            return file, dataset
        if not Path(file).exists():
            raise InputError(f"{file}: no such mask file")
    if value.startswith("/"):
        return None, value
    raise InputError(f"{value}: no such mask file (give a file, file.h5:/dataset, or /dataset inside the inputs)")


def load_mask_file(path: str | os.PathLike[str], dataset: str | None = None) -> NDArray[np.generic]:
    """Raw values of a mask stored in its own file: HDF5 (``dataset`` or a usual path), ``.npy``, or
    any image format fabio reads (EDF, TIFF, CBF ...)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such mask file")
    if p.suffix == ".npy":
        try:
            return cast("NDArray[np.generic]", np.load(p, allow_pickle=False))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable .npy mask ({err})") from None
    import h5py

    if h5py.is_hdf5(p):
        with open_hdf5(p) as f:
            if dataset is None:
                dataset = next((d for d in MASK_FILE_PATHS if d in f), None)
                if dataset is None:
                    raise InputError(
                        f"{path}: no mask dataset found (tried {', '.join(MASK_FILE_PATHS)}); give file.h5:/dataset"
                    )
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise InputError(f"{path}: no dataset {dataset}")
            check_filters(p, f[dataset])
            return guarded_read(p, dataset, lambda: f[dataset][()])
    if dataset is not None:
        raise InputError(f"{path}: not an HDF5 file, so it has no dataset {dataset}")
    import fabio

    try:
        return np.asarray(fabio.open(str(p)).data)
    except Exception as err:  # fabio raises many types for unknown formats
        raise InputError(f"{path}: cannot read the mask ({type(err).__name__}: {err})") from None


def default_floor(dtype: np.dtype) -> float | None:
    """Values below this are bad by default: 0 for signed integer data (Pilatus gaps -1, -2), else none."""
    return 0.0 if np.dtype(dtype).kind == "i" else None


@dataclass(frozen=True)
class BadPixelRules:
    """Value-based bad pixels, applied to every frame.

    Attributes:
        floor: values below it are bad (None: no floor).
        saturation: values at or above it are bad; a number or an ``(ss, fs)`` map (inf = none).
        flags: ``(ss slice, fs slice, kind, value)`` from CrystFEL ``flag_lessthan`` (strictly below),
            ``flag_morethan`` (strictly above), ``flag_equal``.
        check_finite: look for NaN/inf (only float data can hold them).
    """

    floor: float | None = None
    saturation: float | NDArray[np.float32] | None = None
    flags: tuple[tuple[slice, slice, str, float], ...] = ()
    check_finite: bool = True

    @classmethod
    def build(
        cls,
        dtype: np.dtype,
        frame_shape: tuple[int, int],
        *,
        floor: float | None = None,
        saturation: float | None = None,
        geometry: DetectorGeometry | None = None,
        header_saturation: float | None = None,
    ) -> BadPixelRules:
        """Defaults: floor from :func:`default_floor`; saturation from the geometry's ``max_adu``, else
        the file header's count cut-off, else the integer dtype's maximum (none for float data)."""
        floor = floor if floor is not None else default_floor(dtype)
        sat: float | NDArray[np.float32] | None = saturation
        if sat is None:
            dtype = np.dtype(dtype)
            fallback = header_saturation
            if fallback is None and dtype.kind in "iu":
                fallback = float(np.iinfo(dtype).max)
            sat = fallback
            if geometry is not None and any(p.max_adu is not None for p in geometry.panels):
                sat_map = np.full(frame_shape, np.inf if fallback is None else fallback, np.float32)
                for p in geometry.panels:
                    if p.max_adu is not None:
                        sat_map[p.slab_slices()] = p.max_adu
                sat = sat_map
        flags: list[tuple[slice, slice, str, float]] = []
        for p in geometry.panels if geometry is not None else ():
            for key in FLAG_KEYS:
                for value in p.extra.get(key, "").split():
                    flags.append((*p.slab_slices(), key, float(value)))
        return cls(floor=floor, saturation=sat, flags=tuple(flags), check_finite=np.dtype(dtype).kind == "f")

    def good(self, data: NDArray[np.float32]) -> NDArray[np.bool_]:
        """``(n, ss, fs)`` bool, True where a pixel value is usable."""
        good: NDArray[np.bool_] | None = np.isfinite(data) if self.check_finite else None

        def both(condition: NDArray[np.bool_]) -> NDArray[np.bool_]:
            return condition if good is None else np.logical_and(good, condition, out=good)

        with np.errstate(invalid="ignore"):
            if self.floor is not None and np.isfinite(self.floor):
                good = both(data >= self.floor)
            if self.saturation is not None:
                good = both(data < self.saturation)
            if good is None:
                good = np.ones(data.shape, bool)
            for ss, fs, kind, value in self.flags:
                block = data[:, ss, fs]
                if kind == "flag_lessthan":
                    good[:, ss, fs] &= ~(block < value)
                elif kind == "flag_morethan":
                    good[:, ss, fs] &= ~(block > value)
                else:
                    good[:, ss, fs] &= block != value
        return good

    def describe(self) -> dict[str, object]:
        sat: object = self.saturation
        if isinstance(sat, np.ndarray):
            sat = "per-panel max_adu map"
        return {"floor": self.floor, "saturation": sat, "flags": [f"{k} {v}" for _, _, k, v in self.flags]}
