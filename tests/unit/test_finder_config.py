"""Configuration adapters: OM YAML, Cheetah ini, CrystFEL options, overrides."""

import warnings

import h5py
import numpy as np
import pytest

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.finders.config import (
    Peakfinder8Params,
    apply_overrides,
    from_crystfel_options,
    load_bad_pixel_map,
    load_cheetah_ini,
    load_finder_config,
    load_om_yaml,
)
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder

OM_YAML = """\
om:
  parallelization_layer: MpiParallelization
crystallography:
  geometry_file: epix10k2M.geom
  min_num_peaks_for_hit: 8
  max_num_peaks_for_hit: 5000
peakfinder8_peak_detection:
  detector_type: epix10k2M
  max_num_peaks: 2048
  adc_threshold: 100.0
  minimum_snr: 5.0
  min_pixel_count: 1
  max_pixel_count: 30
  local_bg_radius: 4
  bad_pixel_map_filename: null
  bad_pixel_map_hdf5_path: /data/data
  min_res: 80
  max_res: 800
"""


def test_om_yaml_loads_unchanged_with_strict_hit_rule(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text(OM_YAML)
    params, rule = load_om_yaml(path)
    assert params == Peakfinder8Params(adc_threshold=100.0, minimum_snr=5.0, min_pixel_count=1, max_pixel_count=30,
                                       local_bg_radius=4, min_res=80, max_res=800, max_num_peaks=2048)
    assert (rule.min_peaks, rule.max_peaks, rule.inclusive) == (8, 5000, False)
    assert rule.is_hit([8, 9, 4999, 5000]).tolist() == [False, True, True, False]


def test_om_yaml_overrides_win_and_unknown_keys_name_key_and_file(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text(OM_YAML)
    params, rule = load_finder_config(path, overrides={"adc_threshold": 55, "min_peaks": 3, "max_res": None})
    assert params.adc_threshold == 55.0 and params.max_res == 800 and rule.min_peaks == 3
    path.write_text(OM_YAML.replace("min_res: 80", "min_resolution: 80"))
    with pytest.raises(ConfigError, match=r"monitor\.yaml.*'min_resolution'"):
        load_om_yaml(path)
    path.write_text("crystallography: {}\n")
    with pytest.raises(ConfigError, match="no 'peakfinder8_peak_detection'"):
        load_om_yaml(path)
    path.write_text(OM_YAML.replace("max_pixel_count: 30", "max_pixel_count: lots"))
    with pytest.raises(ConfigError, match="'lots' for max_pixel_count"):
        load_om_yaml(path)


def test_om_bad_pixel_map_is_resolved_next_to_the_yaml(tmp_path):
    mask = np.ones((32, 32), np.int8)
    mask[:, :16] = 0
    with h5py.File(tmp_path / "mask.h5", "w") as handle:
        handle["/data/data"] = mask
    path = tmp_path / "monitor.yaml"
    path.write_text(OM_YAML.replace("bad_pixel_map_filename: null", "bad_pixel_map_filename: mask.h5")
                    .replace("min_res: 80", "min_res: 0"))
    params, _ = load_om_yaml(path)
    assert params.bad_pixel_map_filename == str(tmp_path / "mask.h5")
    data = np.full((32, 32), 10.0, np.float32) + np.random.default_rng(0).normal(0, 1, (32, 32)).astype(np.float32)
    data[20:23, 5:8] = data[20:23, 24:27] = 500.0
    found = Peakfinder8Finder(params, radius_map=np.full((32, 32), 10.0)).find_peaks(data)  # one radial bin
    assert found.num_peaks == 1 and found.fs[0] > 16
    with pytest.raises(InputError, match="no dataset /x"):
        load_bad_pixel_map(tmp_path / "mask.h5", "/x")


CHEETAH_INI = """\
# Cheetah settings
detectortype=cspad
HitFinderADC=200
hitfinderMINSNR = 6 ; inline comment
hitfinderNpeaks=20
hitfinderNpeaksMax=400
hitfinderMinPixCount=2
hitfinderMaxPixCount=50
hitfinderLocalBGRadius=3
hitfinderAlgorithm=8
"""


def test_cheetah_ini_is_case_insensitive_with_inclusive_rule(tmp_path):
    path = tmp_path / "cheetah.ini"
    path.write_text(CHEETAH_INI)
    params, rule = load_cheetah_ini(path)
    assert (params.adc_threshold, params.minimum_snr, params.min_pixel_count, params.max_pixel_count,
            params.local_bg_radius, params.max_num_peaks) == (200.0, 6.0, 2, 50, 3, 400)
    assert (params.min_res, params.max_res) == (0.0, 1e6)  # Cheetah's defaults
    assert (rule.min_peaks, rule.max_peaks, rule.inclusive) == (20, 400, True)
    assert rule.is_hit([19, 20, 400, 401]).tolist() == [False, True, True, False]


def test_cheetah_max_pix_count_zero_trap_warns(tmp_path):
    path = tmp_path / "cheetah.ini"
    path.write_text("hitfinderADC=50\n")  # Cheetah's default hitfinderMaxPixCount is 0
    with pytest.warns(UserWarning, match="hitfinderMaxPixCount=0"):
        params, rule = load_cheetah_ini(path)
    assert params.max_pixel_count == Peakfinder8Params.max_pixel_count
    assert (params.minimum_snr, params.min_pixel_count, params.local_bg_radius, rule.min_peaks) == (40.0, 3, 4, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params, _ = load_cheetah_ini(path, overrides={"max_pixel_count": 25})
    assert params.max_pixel_count == 25


def test_cheetah_unknown_and_unsupported_keys(tmp_path):
    path = tmp_path / "cheetah.ini"
    path.write_text(CHEETAH_INI + "hitfinderMinSRN=4\n")
    with pytest.raises(ConfigError, match=r"cheetah\.ini.*'hitfinderminsrn'"):
        load_cheetah_ini(path)
    path.write_text(CHEETAH_INI + "hitfinderResolutionUnitPixel=0\n")
    with pytest.raises(ConfigError, match="Å"):
        load_cheetah_ini(path)
    path.write_text(CHEETAH_INI.replace("hitfinderAlgorithm=8", "hitfinderAlgorithm=3"))
    with pytest.warns(UserWarning, match="hitfinderAlgorithm=3"):
        load_cheetah_ini(path)
    path.write_text("this line has no equals sign\n")
    with pytest.raises(ConfigError, match=r"cheetah\.ini:1"):
        load_cheetah_ini(path)


def test_crystfel_options_tokens_and_mapping():
    params, rule = from_crystfel_options(
        ["--peaks=peakfinder8", "-t", "120", "--min-snr=4.5", "--min-pix-count", "3", "--max-res=0",
         "--min-peaks=15", "--peakfinder8-fast"]
    )
    assert (params.adc_threshold, params.minimum_snr, params.min_pixel_count, params.max_res) == (120.0, 4.5, 3, None)
    assert params.fast_mode and (params.max_pixel_count, params.local_bg_radius) == (200, 3)  # CrystFEL defaults
    assert (rule.min_peaks, rule.max_peaks, rule.inclusive) == (15, None, True)
    params, rule = from_crystfel_options({"threshold": 800, "max-res": 1200})
    assert params.max_res == 1200 and rule.min_peaks == 0
    with pytest.raises(ConfigError, match="--int-radius"):
        from_crystfel_options(["--int-radius=3,4,5"])
    with pytest.raises(ConfigError, match="not peakfinder8"):
        from_crystfel_options({"--peaks": "zaef"})


def test_defaults_overrides_and_dispatch(tmp_path):
    params, rule = load_finder_config(None, overrides={"minimum_snr": "7", "max_peaks": 100, "min_res": None})
    assert params.minimum_snr == 7.0 and params.min_res == 0.0 and rule.max_peaks == 100
    with pytest.raises(ConfigError, match="unknown peakfinder8 option 'snr'"):
        apply_overrides(params, rule, {"snr": 3})
    with pytest.raises(ConfigError, match="max_pixel_count"):
        apply_overrides(params, rule, {"max_pixel_count": 1})
    with pytest.raises(ConfigError, match="unknown configuration type"):
        load_finder_config(tmp_path / "settings.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_finder_config(tmp_path / "missing.yaml")
