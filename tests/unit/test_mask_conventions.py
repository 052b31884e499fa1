"""Masks read in the wrong convention, hiding everything or of the wrong shape, are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.io.crystfel_geom import format_geometry, parse_geometry
from sfx_cnnhit.io.masks import check_mask, mask_from_values
from sfx_cnnhit.io.sources import open_frames

SHAPE = (20, 30)


def _cxi(path: Path, mask: np.ndarray, n: int = 3) -> Path:
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.ones((n, *SHAPE), np.float32)
        f["/entry_1/data_1/mask"] = mask
    return path


def _good(path: Path, **kw: object) -> np.ndarray:
    return next(open_frames([path], **kw).batches()).mask  # type: ignore[arg-type]


def test_all_one_mask_refused_in_auto_and_accepted_as_crystfel(tmp_path: Path) -> None:
    path = _cxi(tmp_path / "om.cxi", np.ones(SHAPE, np.uint8))  # OM/CrystFEL: 1 = good
    with pytest.raises(InputError) as err:
        open_frames([path])
    message = str(err.value)
    for text in ("om.cxi:/entry_1/data_1/mask", "Cheetah", "100.0%", "every stored value is 1", "--mask-convention"):
        assert text in message, text
    assert "\n" not in message
    assert _good(path, mask_convention="crystfel").all()
    with pytest.raises(InputError, match="--mask-convention crystfel"):
        open_frames([path], mask_convention="cheetah")  # nearly all masked: refused even when asked for


def test_cli_mask_convention(tmp_path: Path) -> None:
    path = _cxi(tmp_path / "om.cxi", np.ones(SHAPE, np.uint8))
    refused = CliRunner().invoke(app, ["info", str(path)])
    assert refused.exit_code != 0 and "--mask-convention crystfel" in refused.output
    assert "Traceback" not in refused.output
    result = CliRunner().invoke(app, ["info", str(path), "--mask-convention", "crystfel", "--json"])
    assert result.exit_code == 0, result.output
    mask = json.loads(result.stdout)["files"][0]["mask"]
    assert "goodbits=0x1" in mask["convention"] and mask["static_bad_pixels"] == 0
    both = CliRunner().invoke(app, ["info", str(path), "--mask-convention", "crystfel", "--mask-goodbits", "1"])
    assert both.exit_code != 0 and "not both" in both.output
    with pytest.raises(ConfigError):
        open_frames([path], mask_convention="crystfel", mask_goodbits=1)


def test_all_masked_refused_in_any_convention(tmp_path: Path) -> None:
    path = _cxi(tmp_path / "twos.cxi", np.full(SHAPE, 2, np.uint16))  # bad in both conventions
    for kw in ({}, {"mask_convention": "crystfel"}, {"mask_goodbits": 0, "mask_badbits": 0xFFFF}):
        with pytest.raises(InputError, match=r"hides 100\.0% .*give another mask"):
            open_frames([path], **kw)  # type: ignore[arg-type]
    zeros = _cxi(tmp_path / "zeros.cxi", np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputError, match=r"goodbits=0x1.*--mask-convention cheetah"):
        open_frames([zeros], mask_convention="crystfel")


def test_large_gaps_accepted(tmp_path: Path) -> None:
    mask = np.zeros(SHAPE, np.uint16)
    mask[:, : SHAPE[1] * 6 // 10] = 1  # 60 % masked: a detector with wide gaps
    good = _good(_cxi(tmp_path / "gaps.cxi", mask))
    assert good.mean() == pytest.approx(0.4)
    mask[: SHAPE[0] * 95 // 100] = 1  # 98 % masked (a small region of interest)
    roi = _cxi(tmp_path / "roi.cxi", mask)
    with pytest.raises(
        InputError, match=r"hides 98\.0% .*--mask-convention crystfel .*--mask-convention cheetah to keep"
    ):
        open_frames([roi])  # looks inverted when the convention is guessed ...
    assert _good(roi, mask_convention="cheetah").mean() == pytest.approx(0.02)  # ... kept when stated


def test_shape_mismatch_refused(tmp_path: Path) -> None:
    path = _cxi(tmp_path / "a.cxi", np.zeros((SHAPE[0], SHAPE[1] - 1), np.uint8))
    with pytest.raises(InputError, match=r"a\.cxi:/entry_1/data_1/mask: mask shape \(20, 29\) does not match"):
        open_frames([path])
    np.save(tmp_path / "mask.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"mask\.npy: mask shape \(4, 4\)"):
        open_frames([_cxi(tmp_path / "b.cxi", np.zeros(SHAPE, np.uint8))], mask_file=tmp_path / "mask.npy")


def test_goodbits_and_geometry_bits_still_apply(tmp_path: Path) -> None:
    mask = np.ones(SHAPE, np.uint16)
    mask[3, 4] = 0  # 1 = good, one bad pixel
    mask[5, 6] = 3  # good bit set, but bit 1 is bad
    path = _cxi(tmp_path / "a.cxi", mask)
    good = _good(path, mask_goodbits=1, mask_badbits=2)
    assert not good[0, 3, 4] and not good[0, 5, 6] and good.sum() == good.size - 2 * 3
    text = format_geometry(DetectorGeometry.simple(SHAPE), stacked=True, mask_path="/entry_1/data_1/mask")
    geom = parse_geometry(text.replace("goodbits = 0x0", "goodbits = 0x1").replace("0xffff", "0x2"))
    good = _good(path, geometry=geom)
    assert not good[0, 3, 4] and not good[0, 5, 6] and good.sum() == good.size - 2 * 3
    # an explicit convention overrides the geometry's bits
    with pytest.raises(InputError, match="Cheetah"):
        open_frames([path], geometry=geom, mask_convention="cheetah")


def test_per_frame_mask_first_frame_checked(tmp_path: Path) -> None:
    path = _cxi(tmp_path / "eu.cxi", np.ones((3, *SHAPE), np.uint8))
    with pytest.raises(InputError, match=r"mask \(frame 0\): the mask hides 100\.0%"):
        open_frames([path])
    batches = list(open_frames([path], mask_convention="crystfel").batches(chunk_size=2))
    assert all(b.mask.all() for b in batches)


def test_check_mask_thresholds() -> None:
    values = np.zeros(1000, np.uint8)
    values[:995] = 1  # 99.5 % masked (Cheetah)
    with pytest.raises(InputError, match=r"99\.5%"):
        check_mask("m", values, mask_from_values(values), None, None, guessed=False)
    values[:985] = 0
    values[985:] = 1  # 1.5 % masked in Cheetah's, 98.5 % in CrystFEL's: stated, kept
    check_mask("m", values, mask_from_values(values, goodbits=1), 1, 0, guessed=False)
    with pytest.raises(InputError, match="--mask-convention crystfel to keep"):
        check_mask("m", values, mask_from_values(values, goodbits=1), 1, 0, guessed=True)
