"""CrystFEL geometry files: parsing (0.9 and 0.10+ syntax), writing, bad regions and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.crystfel_geom import format_geometry, format_vector, parse_geometry, parse_vector
from sfx_cnnhit.io.geometry import read_geometry, write_geometry

CSPAD_LIKE = """
; two tilted panels, defaults before the panels they apply to
photon_energy = 9.5 keV
clen = /LCLS/detector_1/EncoderValue
res = 9097.53
adu_per_eV = 0.00338
data = /entry_1/data_1/data
dim0 = %
dim1 = ss
dim2 = fs
mask = /entry_1/data_1/mask
mask_good = 0x0000
mask_bad = 0xffff
rigid_group_q0 = q0a0,q0a1
rigid_group_collection_all = q0

q0a0/min_fs = 0
q0a0/max_fs = 193
q0a0/min_ss = 0
q0a0/max_ss = 184
q0a0/fs = -0.0010058292x +0.9999995232y
q0a0/ss = -0.9999995232x -0.0010058292y
q0a0/corner_x = 443.819
q0a0/corner_y = -49.8719
q0a0/coffset = 0.573224
q0a0/no_index = 0

max_adu = 15000
q0a1/min_fs = 194
q0a1/max_fs = 387
q0a1/min_ss = 0
q0a1/max_ss = 184
q0a1/fs = +1x
q0a1/ss = -y
q0a1/corner_x = 444.319 ; trailing comment
q0a1/corner_y = -246.871
q0a1/coffset = 0.573224

badstrip/min_fs = 10
badstrip/max_fs = 12
badstrip/min_ss = 0
badstrip/max_ss = 184
badstrip/panel = q0a0

badcentre/min_x = -5
badcentre/max_x = 5
badcentre/min_y = -5
badcentre/max_y = 5
"""


def test_parse_common_keys_and_defaults_order() -> None:
    g = parse_geometry(CSPAD_LIKE, source="cspad.geom")
    assert [p.name for p in g.panels] == ["q0a0", "q0a1"]
    assert g.slab_shape == (185, 388)
    assert g.photon_energy_ev == pytest.approx(9500.0)
    a, b = g.panels
    assert a.fs_vec == pytest.approx((-0.0010058292, 0.9999995232, 0.0))
    assert b.fs_vec == (1.0, 0.0, 0.0) and b.ss_vec == (0.0, -1.0, 0.0)
    assert a.corner_x == pytest.approx(443.819) and b.corner_x == pytest.approx(444.319)
    assert a.res == pytest.approx(9097.53) and a.coffset == pytest.approx(0.573224)
    assert a.clen == "/LCLS/detector_1/EncoderValue"  # an HDF5 path (mm, CrystFEL's rule)
    assert a.adu_per_photon == pytest.approx(0.00338 * 9500.0)
    assert a.max_adu is None and b.max_adu == 15000.0  # a default applies only to panels after it
    assert a.dim_structure == ("%", "ss", "fs") and g.data_path == "/entry_1/data_1/data"
    assert (g.mask_path, g.mask_good, g.mask_bad) == ("/entry_1/data_1/mask", 0, 0xFFFF)
    assert [r.name for r in g.bad_regions] == ["badstrip"] and g.bad_regions[0].panel == "q0a0"
    assert [r.name for r in g.bad_regions_xy] == ["badcentre"]


def test_new_style_mask_keys_and_literal_values() -> None:
    text = """
wavelength = 1.0332 A
clen = 250 mm
mask0_data = /data/mask
mask0_file = mask.h5
mask0_goodbits = 0x1
mask0_badbits = 0x6
p/min_fs = 0
p/max_fs = 9
p/min_ss = 0
p/max_ss = 4
p/corner_x = -5
p/corner_y = -2.5
p/fs = x
p/ss = y
p/res = 5000
"""
    g = parse_geometry(text)
    assert g.photon_energy_ev == pytest.approx(12000.0, rel=1e-4)
    assert g.panels[0].clen == pytest.approx(0.25)
    assert (g.mask_path, g.mask_file, g.mask_good, g.mask_bad) == ("/data/mask", "mask.h5", 1, 6)


def test_format_round_trip_and_reduced_cxi_keys() -> None:
    g = parse_geometry(CSPAD_LIKE)
    text = format_geometry(g, data_path="/entry_1/result_1/gradcam")
    lines = text.splitlines()
    for expected in (
        "dim0 = %",
        "dim1 = ss",
        "dim2 = fs",
        "data = /entry_1/result_1/gradcam",
        "peak_list = /entry_1/result_1",
        "peak_list_type = cxi",
        "photon_energy = 9500",
        "clen = /LCLS/detector_1/EncoderValue",
        "mask0_badbits = 0xffff",
    ):
        assert expected in lines, expected
    back = parse_geometry(text)
    assert back.data_path == "/entry_1/result_1/gradcam"
    for p, q in zip(g.panels, back.panels, strict=True):
        for attr in (
            "name",
            "min_fs",
            "max_fs",
            "min_ss",
            "max_ss",
            "corner_x",
            "corner_y",
            "fs_vec",
            "ss_vec",
            "res",
            "clen",
            "coffset",
            "adu_per_photon",
            "max_adu",
            "extra",
        ):
            assert getattr(p, attr) == getattr(q, attr), attr
    assert back.bad_regions == g.bad_regions and back.bad_regions_xy == g.bad_regions_xy
    np.testing.assert_array_equal(back.radius_map(), g.radius_map())


def test_write_is_atomic_and_refuses_inputs(tmp_path: Path) -> None:
    g = DetectorGeometry.simple((8, 10))
    out = write_geometry(g, tmp_path / "a.geom", stacked=False)
    assert "dim0 = ss" in out.read_text() and "dim0 = %" not in out.read_text()
    assert read_geometry(out).slab_shape == (8, 10)
    from sfx_cnnhit.errors import OutputError

    with pytest.raises(OutputError):
        write_geometry(g, out, protect=(out,))


def test_euxfel_module_dimension_becomes_stacked_slab() -> None:
    lines = [
        "photon_energy = 9300",
        "clen = 0.12",
        "res = 5000",
        "adu_per_photon = 1",
        "data = /entry_1/instrument_1/detector_1/data",
        "dim0 = %",
        "dim2 = ss",
        "dim3 = fs",
    ]
    for m in range(2):
        for a in range(2):
            name = f"p{m}a{a}"
            lines += [
                f"{name}/dim1 = {m}",
                f"{name}/min_fs = 0",
                f"{name}/max_fs = 15",
                f"{name}/min_ss = {a * 4}",
                f"{name}/max_ss = {a * 4 + 3}",
                f"{name}/corner_x = {m * 20}",
                f"{name}/corner_y = {a * 5}",
                f"{name}/fs = x",
                f"{name}/ss = y",
            ]
    g = parse_geometry("\n".join(lines))
    assert g.slab_shape == (16, 16)  # 2 modules of 8 rows stacked along ss
    assert [(p.min_ss, p.max_ss) for p in g.panels] == [(0, 3), (4, 7), (8, 11), (12, 15)]
    assert g.layout_info() == {"asic_nx": 16, "asic_ny": 4, "nasics_x": 1, "nasics_y": 4}
    assert g.panels[0].dim_structure == ("%", "ss", "fs")


def test_good_pixel_mask_regions_edges_and_no_index() -> None:
    g = parse_geometry(CSPAD_LIKE)
    good = g.good_pixel_mask()
    assert not good[:, 10:13].any() and good[:, 13].any()  # badstrip on q0a0
    simple = DetectorGeometry.simple((20, 20), beam_center=(9.5, 9.5))
    region = "badc/min_x = -3\nbadc/max_x = 3\nbadc/min_y = -3\nbadc/max_y = 3\n"
    text = format_geometry(simple) + "\np0/mask_edge_pixels = 2\n" + region
    g2 = parse_geometry(text)
    good2 = g2.good_pixel_mask((22, 20))
    assert good2.shape == (22, 20) and not good2[20:].any()  # outside the slab
    assert not good2[:2].any() and not good2[:, :2].any() and good2[2, 2]
    # x/y region: corner-indexed positions strictly inside (-3, 3): pixel index 8..12 on both axes
    assert not good2[8:13, 8:13].any() and good2[7, 10] and good2[13, 10]
    off = parse_geometry(format_geometry(simple).replace("p0/min_fs = 0", "p0/no_index = 1\np0/min_fs = 0"))
    assert not off.good_pixel_mask().any()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p0/min_fs = 0\nnot a key value line\n", r"line 2: expected 'key = value'"),
        ("clen = 0.1\np0/min_fs = zero\n", r"line 2: min_fs must be an integer"),
        ("clen = 0.1\np0/fs = 1q\n", r"line 2: invalid direction"),
        ("clen = 0.1\nphoton_energy = 9 MeV\np0/min_fs = 0\n", r"line 2: invalid photon energy unit"),
        ("clen = 12 furlongs\np0/min_fs = 0\n", r"line 1: invalid length unit"),
        ("photon_energy = 9000\n", r"no panels defined"),
        ("clen = 0.1\np0/min_fs = 0\n", r"panel p0 \(first at line 2\): missing 'max_fs'"),
        ("mask_good = 0x1\n" + "p/min_fs = 0\n", r"line 1: mask good/bad bits given without a mask location"),
    ],
)
def test_errors_name_source_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_geometry(text, source="bad.geom")
    assert str(err.value).startswith("bad.geom")
    assert "\n" not in str(err.value)


def test_bad_region_errors() -> None:
    base = format_geometry(DetectorGeometry.simple((8, 8)))
    with pytest.raises(ConfigError, match="mixes x/y and fs/ss"):
        parse_geometry(base + "\nbadx/min_x = 1\nbadx/min_fs = 1\n")
    with pytest.raises(ConfigError, match="outside panel p0"):
        parse_geometry(base + "\nbadx/min_fs = 0\nbadx/max_fs = 9\nbadx/min_ss = 0\nbadx/max_ss = 1\n")
    with pytest.raises(ConfigError, match="no such panel"):
        parse_geometry(
            base + "\nbadx/min_x = 1\nbadx/max_x = 2\nbadx/min_y = 1\nbadx/max_y = 2\nbadx/panel = nope\n"
        )


def test_vector_parse_and_format_round_trip() -> None:
    assert parse_vector("-0.0001x +1y") == (-0.0001, 1.0, 0.0)
    assert parse_vector("+0.5x -y +1e-3z") == (0.5, -1.0, 0.001)
    vec = (math.cos(0.3), -math.sin(0.3), 1e-7)
    assert parse_vector(format_vector(vec)) == vec
    with pytest.raises(ValueError):
        parse_vector("1x2y")


def test_read_geometry_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read geometry file"):
        read_geometry(tmp_path / "missing.geom")
