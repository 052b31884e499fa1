"""Core types, the hit rule, the finder registry, the geometry model and the CLI skeleton."""

import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import COMMAND_MODULES, app
from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitRule, PeakCountingHitFinder, create_finder, register_finder
from sfx_cnnhit.types import PeakList


def test_peaklist_om_dict_and_validation():
    peaks = PeakList(fs=[1.5, 2.0], ss=[3, 4], intensity=[10, 20], num_pixels=[2, 3],
                     max_pixel_intensity=[5, 9], snr=[7, 8])
    assert peaks.num_peaks == 2
    d = peaks.as_om_dict()
    assert d["num_peaks"] == 2 and d["fs"] == [1.5, 2.0] and d["snr"] == [7.0, 8.0]
    assert peaks["intensity"] == [10.0, 20.0]
    assert peaks.truncated(1).num_peaks == 1
    assert PeakList.empty().num_peaks == 0
    with pytest.raises(ValueError, match="ss"):
        PeakList(fs=[1, 2], ss=[1], intensity=[1, 2], num_pixels=[1, 2], max_pixel_intensity=[1, 2], snr=[1, 2])


@pytest.mark.parametrize(
    ("rule", "counts", "expected"),
    [
        (HitRule(10, 20, inclusive=True), [9, 10, 20, 21], [False, True, True, False]),  # Cheetah
        (HitRule(10, 20, inclusive=False), [10, 11, 19, 20], [False, True, True, False]),  # OM
        (HitRule(14), [13, 14, 10_000], [False, True, True]),  # DIALS n_spots >= N
    ],
)
def test_hit_rule(rule, counts, expected):
    assert rule.is_hit(np.array(counts)).tolist() == expected


def test_hit_rule_rejects_inverted_bounds():
    with pytest.raises(ConfigError):
        HitRule(10, 5)


def test_registry_rejects_duplicates_and_unknown_names():
    class Dummy(PeakCountingHitFinder):
        name = "_test_dummy"
        hit_rule = HitRule()

        def find_peaks_masked(self, data, mask):
            return PeakList.empty()

    register_finder("_test_dummy")(Dummy.for_detector)
    detector = DetectorGeometry.simple((8, 8))
    assert isinstance(create_finder("_test_dummy", detector=detector), Dummy)
    with pytest.raises(ValueError, match="twice"):
        register_finder("_test_dummy")(Dummy.for_detector)
    with pytest.raises(ConfigError, match="unknown hit finder"):
        create_finder("no-such-finder", detector=detector)


def test_simple_geometry_radius_and_layout():
    geom = DetectorGeometry.simple((64, 96), asic_shape=(32, 48), beam_center=(40.0, 20.0), pixel_size_m=1e-4)
    r = geom.radius_map()
    assert r.shape == (64, 96)
    assert r[20, 40] == pytest.approx(0.0, abs=1e-5)
    assert r[20, 43] == pytest.approx(3.0, abs=1e-5)
    assert r[24, 43] == pytest.approx(5.0, abs=1e-5)
    assert geom.layout_info() == {"asic_nx": 48, "asic_ny": 32, "nasics_x": 2, "nasics_y": 2}
    assert (geom.panel_index_map() >= 0).all()


def test_resolution_map_follows_bragg_law():
    geom = DetectorGeometry.simple((101, 101), pixel_size_m=1e-4, clen_m=0.1, photon_energy_ev=12398.419843320026)
    d = geom.resolution_map()
    # 50 px * 0.1 mm = 5 mm off-axis at 100 mm: 2 theta = atan(0.05), wavelength 1 A.
    expected = 1.0 / (2 * np.sin(np.arctan(0.05) / 2))
    assert d[50, 100] == pytest.approx(expected, rel=1e-4)


def test_cli_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in result.output
