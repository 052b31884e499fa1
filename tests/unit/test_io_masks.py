"""Masks: Cheetah's and CrystFEL's conventions, where masks come from, computed bad pixels."""

from __future__ import annotations

from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.crystfel_geom import format_geometry, parse_geometry
from sfx_cnnhit.io.masks import BadPixelRules, mask_from_values, parse_mask_argument
from sfx_cnnhit.io.sources import open_frames

SHAPE = (10, 12)


def _first_mask(*args: object, **kw: object) -> np.ndarray:
    return next(open_frames(*args, **kw).batches()).mask  # type: ignore[arg-type]


def test_conventions() -> None:
    values = np.array([0, 1, 2, 3, 4, 5], np.uint16)
    assert mask_from_values(values).tolist() == [True, False, False, False, False, False]  # Cheetah: 0 = good
    # CrystFEL: good iff all goodbits set and no badbits set
    assert mask_from_values(values, goodbits=1, badbits=4).tolist() == [False, True, False, True, False, False]
    assert mask_from_values(values, goodbits=0, badbits=2).tolist() == [True, True, False, False, True, True]
    om_style = np.array([[1, 0], [1, 1]], np.int8)  # OM: 1 = use this pixel
    assert mask_from_values(om_style, goodbits=1, badbits=0).tolist() == [[True, False], [True, True]]
    assert mask_from_values(np.array([True, False])).tolist() == [False, True]
    with pytest.raises(ValueError, match="integers"):
        mask_from_values(np.array([0.5, 0.0]))


def _cxi(path: Path, frames: np.ndarray, mask: np.ndarray | None = None, extra: dict | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = frames
        if mask is not None:
            f["/entry_1/data_1/mask"] = mask
        for name, value in (extra or {}).items():
            f[name] = value
    return path


def test_file_own_mask_and_user_bits(tmp_path: Path) -> None:
    stored = np.zeros(SHAPE, np.uint16)
    stored[1, 1] = 1
    stored[2, 2] = 2
    path = _cxi(tmp_path / "a.cxi", np.ones((2, *SHAPE), np.float32), stored)
    good = _first_mask([path])
    assert not good[:, 1, 1].any() and not good[:, 2, 2].any() and good.sum() == good.size - 4
    good = _first_mask([path], mask_goodbits=0, mask_badbits=1)  # only bit 0 is bad now
    assert not good[:, 1, 1].any() and good[:, 2, 2].all()


def test_masks_from_datasets_and_files(tmp_path: Path) -> None:
    user = np.zeros(SHAPE, np.uint8)
    user[3, 4] = 1
    path = _cxi(tmp_path / "a.cxi", np.ones((1, *SHAPE), np.float32), extra={"/extra/badmap": user})
    assert not _first_mask([path], mask_path="/extra/badmap")[0, 3, 4]
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f["/data/data"] = user
    assert not _first_mask([path], mask_file=tmp_path / "mask.h5")[0, 3, 4]  # default dataset /data/data
    np.save(tmp_path / "mask.npy", user)
    assert not _first_mask([path], mask_file=tmp_path / "mask.npy")[0, 3, 4]
    fabio.edfimage.EdfImage(data=(1 - user).astype(np.uint16)).write(str(tmp_path / "mask.edf"))  # 1 = good
    good = _first_mask([path], mask_file=tmp_path / "mask.edf", mask_goodbits=1, mask_badbits=0)
    assert not good[0, 3, 4] and good.sum() == good.size - 1
    # a user mask replaces the file's own mask
    own = np.zeros(SHAPE, np.uint16)
    own[0, 0] = 1
    path2 = _cxi(tmp_path / "b.cxi", np.ones((1, *SHAPE), np.float32), own, {"/extra/badmap": user})
    good = _first_mask([path2], mask_path="/extra/badmap")
    assert good[0, 0, 0] and not good[0, 3, 4]


def test_parse_mask_argument(tmp_path: Path) -> None:
    (tmp_path / "m.h5").write_bytes(b"")
    assert parse_mask_argument(str(tmp_path / "m.h5")) == (str(tmp_path / "m.h5"), None)
    assert parse_mask_argument(f"{tmp_path / 'm.h5'}:/data/mask") == (str(tmp_path / "m.h5"), "/data/mask")
    assert parse_mask_argument("/entry_1/data_1/mask") == (None, "/entry_1/data_1/mask")
    with pytest.raises(InputError, match="no such mask file"):
        parse_mask_argument("missing.h5")


def test_geometry_mask_regions_and_max_adu_combined(tmp_path: Path) -> None:
    frames = np.full((2, *SHAPE), 50, np.float32)
    frames[0, 5, 5] = 20000.0  # above max_adu
    frames[1, 6, 6] = np.inf
    stored = np.zeros(SHAPE, np.uint16)
    stored[9, 11] = 4
    path = _cxi(tmp_path / "a.cxi", frames, extra={"/geom/mask": stored})
    text = format_geometry(DetectorGeometry.simple(SHAPE, max_adu=15000.0), stacked=True, mask_path="/geom/mask")
    text += "\nbadcorner/min_fs = 0\nbadcorner/max_fs = 1\nbadcorner/min_ss = 0\nbadcorner/max_ss = 0\n"
    geom = parse_geometry(text)
    b = next(open_frames([path], geometry=geom).batches())
    bad = ~b.mask
    assert bad[:, 0, :2].all() and bad[:, 9, 11].all()  # bad region and geometry mask, every frame
    assert bad[0, 5, 5] and not bad[1, 5, 5]  # saturated only where saturated
    assert bad[1, 6, 6] and b.data[1, 6, 6] == 0.0  # inf is bad and zeroed
    assert bad.sum() == 2 * 3 + 2


def test_computed_bad_pixel_defaults() -> None:
    ints = np.array([[[-2, -1, 0, 5, 32767]]], np.float32)
    rules = BadPixelRules.build(np.dtype(np.int16), (1, 5))
    assert rules.good(ints).tolist() == [[[False, False, True, True, False]]]  # floor 0, int16 max saturated
    floats = np.array([[[-2.0, np.nan, 0.0, 1e30]]], np.float32)
    assert BadPixelRules.build(np.dtype(np.float32), (1, 4)).good(floats).tolist() == [[[True, False, True, True]]]
    explicit = BadPixelRules.build(np.dtype(np.float32), (1, 4), floor=-1.0, saturation=100.0)
    assert explicit.good(floats).tolist() == [[[False, False, True, False]]]
    disabled = BadPixelRules.build(np.dtype(np.int16), (1, 5), floor=-np.inf, saturation=np.inf)
    assert disabled.good(ints).all()


def test_geometry_flag_values() -> None:
    text = format_geometry(DetectorGeometry.simple((1, 5))) + "\np0/flag_lessthan = 0\np0/flag_equal = 7\n"
    rules = BadPixelRules.build(np.dtype(np.float32), (1, 5), geometry=parse_geometry(text))
    data = np.array([[[-0.5, 0.0, 7.0, 8.0, 3.0]]], np.float32)
    assert rules.good(data).tolist() == [[[False, True, False, True, True]]]


def test_per_frame_mask_stack(tmp_path: Path) -> None:
    stored = np.zeros((3, *SHAPE), np.uint8)
    stored[1, 2, 3] = 1
    path = _cxi(tmp_path / "a.cxi", np.ones((3, *SHAPE), np.float32), stored)
    good = np.concatenate([b.mask for b in open_frames([path]).batches(chunk_size=2, start=1)])
    assert not good[0, 2, 3] and good[1].all() and good.sum() == good.size - 1


def test_many_inputs_share_one_mask(tmp_path: Path) -> None:
    user = np.zeros(SHAPE, np.uint8)
    user[4, 4] = 1
    np.save(tmp_path / "mask.npy", user)
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.tif")
        fabio.tifimage.TifImage(data=np.full(SHAPE, i, np.uint16)).write(str(files[-1]))
    source = open_frames(files, mask_file=tmp_path / "mask.npy")
    assert all(not b.mask[0, 4, 4] for b in source.batches())
    # one static mask and one rule set for all inputs, not one per file (lists of 10^4 images)
    assert source._static_good[0] is source._static_good[2] and source._rules[0] is source._rules[2]
