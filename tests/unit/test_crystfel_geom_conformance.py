"""CrystFEL geometry conformance: the shapes of CrystFEL's own example files, units and per-frame paths.

Every geometry here is written for these tests, after the layouts CrystFEL's documentation shows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from sfx_cnnhit.detector import median_adu_per_photon, parse_length, parse_photon_energy, split_value
from sfx_cnnhit.io.crystfel_geom import format_geometry, parse_geometry
from sfx_cnnhit.io.geometry import read_geometry
from sfx_cnnhit.io.sources import open_frames

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _panel(name: str, min_fs: int, min_ss: int, width: int, height: int, corner: tuple[float, float]) -> str:
    return "\n".join(
        [
            f"{name}/min_fs = {min_fs}",
            f"{name}/max_fs = {min_fs + width - 1}",
            f"{name}/min_ss = {min_ss}",
            f"{name}/max_ss = {min_ss + height - 1}",
            f"{name}/fs = +0.0048x +0.99999y",
            f"{name}/ss = -0.99999x +0.0048y",
            f"{name}/corner_x = {corner[0]}",
            f"{name}/corner_y = {corner[1]}",
            "",
        ]
    )


# A CSPAD in Cheetah's CXI layout: gain per eV, photon energy and camera length per frame, rigid groups.
CSPAD = (
    """
adu_per_eV = 0.00338      ; CSPAD 1.2
res = 9090.91
clen = /LCLS/detector_1/EncoderValue   ; mm in the file
coffset = 0.573224
\t\t\t\t       ;  a comment-only line indented with tabs
photon_energy = /LCLS/photon_energy_eV
dim0 = %
dim1 = ss
dim2 = fs
data = /entry_1/data_1/data
mask = /entry_1/data_1/mask
mask_good = 0x0000
mask_bad = 0xffff
rigid_group_q0 = q0a0,q0a1,q0a2,q0a3
rigid_group_a0 = q0a0,q0a1
rigid_group_a1 = q0a2,q0a3
rigid_group_collection_quadrants = q0
rigid_group_collection_asics = a0,a1

"""
    + _panel("q0a0", 0, 0, 194, 185, (443.8, -49.9))
    + _panel("q0a1", 194, 0, 194, 185, (444.8, 147.1))
    + _panel("q0a2", 0, 185, 194, 185, (239.8, -49.4))
    + _panel("q0a3", 194, 185, 194, 185, (240.4, 147.6))
    + """
bad_gap/min_fs = 190
bad_gap/max_fs = 193
bad_gap/min_ss = 0
bad_gap/max_ss = 184
bad_gap/panel = q0a0

bad_jet/min_x = -15.0
bad_jet/max_x = +15.0
bad_jet/min_y = 71.3
bad_jet/max_y = 159.3
"""
)


def test_cspad_rigid_groups_bad_regions_and_per_frame_gain() -> None:
    g = parse_geometry(CSPAD, source="cspad.geom")
    assert [p.name for p in g.panels] == ["q0a0", "q0a1", "q0a2", "q0a3"] and g.slab_shape == (370, 388)
    assert g.photon_energy_ev == "/LCLS/photon_energy_eV"
    p = g.panels[0]
    assert p.clen == "/LCLS/detector_1/EncoderValue" and p.coffset == pytest.approx(0.573224)
    assert p.adu_per_ev == pytest.approx(0.00338) and p.adu_per_photon is None  # energy known per frame only
    assert median_adu_per_photon(g.panels) is None
    resolved = g.with_photon_energy(9500.0)
    assert median_adu_per_photon(resolved.panels) == pytest.approx(0.00338 * 9500.0)
    assert [r.name for r in g.bad_regions] == ["bad_gap"] and [r.name for r in g.bad_regions_xy] == ["bad_jet"]
    assert (g.mask_path, g.mask_good, g.mask_bad) == ("/entry_1/data_1/mask", 0, 0xFFFF)
    for geometry in (g, resolved):  # written back as written, also once the gain is resolved
        lines = format_geometry(geometry).splitlines()
        assert "photon_energy = /LCLS/photon_energy_eV" in lines
        assert "clen = /LCLS/detector_1/EncoderValue" in lines
        assert "q0a0/adu_per_eV = 0.00338" in lines and not any("adu_per_photon" in x for x in lines)
        back = parse_geometry(format_geometry(geometry))
        assert back.panels[3].adu_per_ev == pytest.approx(0.00338) and back.bad_regions == g.bad_regions


# A pnCCD: one module pair, photon energy (keV) and distance (m) per frame, units after the paths.
PNCCD = """
photon_energy = /instrument/photon_energy_keV keV
clen = /instrument/detector_distance_m   m
adu_per_photon = 40
res = 13333.3
max_adu = 16000
data = /data/data
flag_morethan = 15000

front/min_fs = 0
front/max_fs = 1023
front/min_ss = 0
front/max_ss = 511
front/corner_x = -512
front/corner_y = 10
front/fs = x
front/ss = y
back/min_fs = 0
back/max_fs = 1023
back/min_ss = 512
back/max_ss = 1023
back/corner_x = -512
back/corner_y = -522
back/fs = x
back/ss = y
"""


def test_pnccd_paths_with_units_kept_as_written() -> None:
    g = parse_geometry(PNCCD)
    assert g.photon_energy_ev == "/instrument/photon_energy_keV keV"
    assert g.panels[1].clen == "/instrument/detector_distance_m m"
    assert parse_photon_energy(g.photon_energy_ev) == (None, "/instrument/photon_energy_keV", 1e3)
    assert parse_length(g.panels[0].clen) == (None, "/instrument/detector_distance_m", 1.0)
    assert g.panels[0].adu_per_photon == 40.0 and g.panels[0].extra["flag_morethan"] == "15000"
    lines = format_geometry(g).splitlines()
    assert "photon_energy = /instrument/photon_energy_keV keV" in lines
    assert "clen = /instrument/detector_distance_m m" in lines


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("4570eV", (4570.0, None, "eV")),
        ("4570 eV", (4570.0, None, "eV")),
        ("12.0keV", (12.0, None, "keV")),
        ("95.3mm", (95.3, None, "mm")),
        ("-1.5e-3 m", (-1.5e-3, None, "m")),
        ("9800", (9800.0, None, None)),
        ("/LCLS/photon_energy_eV", (None, "/LCLS/photon_energy_eV", None)),
        ("/truth/detector_shift_x_m  m", (None, "/truth/detector_shift_x_m", "m")),
    ],
)
def test_values_with_unit_suffixes(spec: str, expected: tuple[float | None, str | None, str | None]) -> None:
    number, path, unit = split_value(spec)
    assert (number == pytest.approx(expected[0]) if expected[0] is not None else number is None) and (
        path,
        unit,
    ) == expected[1:]


def test_jungfrau_style_literal_units() -> None:
    text = "photon_energy = 4570eV\nclen = 95.3mm\nres = 13333.3\nadu_per_photon = 1\n" + _panel(
        "m0", 0, 0, 16, 8, (-8, -4)
    ).replace("m0/min_fs = 0", "m0/min_fs = 0.0")
    g = parse_geometry(text)
    assert g.photon_energy_ev == pytest.approx(4570.0) and g.panels[0].clen == pytest.approx(0.0953)
    assert "photon_energy = 4570" in format_geometry(g).splitlines()
    assert parse_geometry(text.replace("4570eV", "4.57 keV")).photon_energy_ev == pytest.approx(4570.0)


def test_detector_shift_paths_kept_and_literal_shift_applied() -> None:
    base = "photon_energy = 9000\nclen = 0.1\nres = 10000\n" + _panel("p0", 0, 0, 20, 10, (-10, -5))
    g = parse_geometry(
        "detector_shift_x = /truth/detector_shift_x_m m\ndetector_shift_y = /truth/shift_y_mm\n" + base
    )
    assert (g.detector_shift_x, g.detector_shift_y) == ("/truth/detector_shift_x_m m", "/truth/shift_y_mm")
    assert g.detector_shift_m() == (0.0, 0.0)  # per frame: positions stay nominal
    lines = format_geometry(g).splitlines()
    assert "detector_shift_x = /truth/detector_shift_x_m m" in lines and "detector_shift_y = /truth/shift_y_mm" in lines
    nominal = parse_geometry(base)
    np.testing.assert_array_equal(g.radius_map(), nominal.radius_map())
    shifted = parse_geometry("detector_shift_x = 0.3 mm\ndetector_shift_y = -2e-4\n" + base)
    assert shifted.detector_shift_m() == pytest.approx((3e-4, -2e-4))
    x0, y0, _ = nominal.pixel_positions()
    x1, y1, _ = shifted.pixel_positions()
    np.testing.assert_allclose(x1 - x0, 3.0, atol=1e-4)  # 0.3 mm at 10000 px/m
    np.testing.assert_allclose(y1 - y0, -2.0, atol=1e-4)
    assert parse_geometry(format_geometry(shifted)).detector_shift_m() == pytest.approx((3e-4, -2e-4))


def test_unknown_keys_warn_with_line_and_obsolete_keys_are_ignored() -> None:
    text = "n_panels = 1\nclen = 0.08\nres = 9090\n" + _panel("0", 0, 0, 8, 8, (-4, -4)) + "0/peak_sep = 4\n"
    text += "0/badrow_direction = x\n0/no_such_key = 1\n"
    with pytest.warns(UserWarning) as record:
        g = parse_geometry(text, source="old.geom")
    messages = [str(w.message) for w in record]
    assert messages == [
        "old.geom line 1: unknown geometry key 'n_panels' ignored",
        "old.geom line 14: unknown panel key '0/no_such_key' ignored",
    ]
    assert g.slab_shape == (8, 8) and g.panels[0].extra == {}


def test_gain_order_and_wavelength_path() -> None:
    body = "photon_energy = 8000\nclen = 0.1\nres = 5000\n"
    panel = _panel("p", 0, 0, 4, 4, (-2, -2))
    later_photon = parse_geometry(body + "adu_per_eV = 0.001\n" + panel + "p/adu_per_photon = 3\n")
    assert (later_photon.panels[0].adu_per_photon, later_photon.panels[0].adu_per_ev) == (3.0, None)
    later_ev = parse_geometry(body + "adu_per_photon = 3\n" + panel + "p/adu_per_eV = 0.001\n")
    assert later_ev.panels[0].adu_per_photon == pytest.approx(8.0) and later_ev.panels[0].adu_per_ev == 0.001
    with pytest.warns(UserWarning, match="line 1: a wavelength from an HDF5 path is not used"):
        g = parse_geometry("wavelength = /beam/wavelength A\nclen = 0.1\nres = 5000\n" + panel)
    assert g.photon_energy_ev is None


def _cxi(path: Path, energies: list[float] | None) -> Path:
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.ones((2, 8, 10), np.float32)
        if energies is not None:
            f["/LCLS/photon_energy_eV"] = np.array(energies)
    return path


def test_open_frames_resolves_adu_per_ev_from_the_first_frame(tmp_path: Path) -> None:
    text = (
        "photon_energy = /LCLS/photon_energy_eV\nadu_per_eV = 0.001\nclen = 0.1\nres = 5000\n"
        "data = /entry_1/data_1/data\ndim0 = %\ndim1 = ss\ndim2 = fs\n" + _panel("p0", 0, 0, 10, 8, (-5, -4))
    )
    geometry = parse_geometry(text)
    source = open_frames([_cxi(tmp_path / "a.cxi", [8000.0, 9000.0])], geometry=geometry)
    assert source.geometry is not None and source.geometry.panels[0].adu_per_photon == pytest.approx(8.0)
    batch = next(iter(source.batches(chunk_size=2)))
    np.testing.assert_allclose(batch.metadata["photon_energy_ev"], [8000.0, 9000.0])
    # no energy in the file: the gain stays unknown (the preprocessing default applies), nothing is refused
    source = open_frames([_cxi(tmp_path / "b.cxi", None)], geometry=geometry)
    assert source.geometry is not None and source.geometry.panels[0].adu_per_photon is None


def test_shared_nanobragg_geometry() -> None:
    path = SHARED_DATA / "nanobragg_dev-crystfel.geom"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = read_geometry(path)
    assert g.detector_shift_x == "/truth/detector_shift_x_m m" and g.detector_shift_y == "/truth/detector_shift_y_m m"
    assert g.photon_energy_ev == "/LCLS/photon_energy_eV" and g.slab_shape == (512, 512)
    back = parse_geometry(format_geometry(g))
    assert (back.detector_shift_x, back.detector_shift_y) == (g.detector_shift_x, g.detector_shift_y)
