"""Plugins: the OM drop-in (CnnPeakFinding, CnnCrystallographyProcessing, launcher), the Cheetah-ini
reader and the CrystFEL recipe."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import CnnHitParams, Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder, radius_map_from_beam_center
from sfx_cnnhit.io.crystfel_recipe import RECIPE_NAME, indexamajig_command, write_recipe
from sfx_cnnhit.io.geometry import write_geometry
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.pipeline.reduce import reduce_run
from sfx_cnnhit.plugins.cheetah import cnn_finder_from_cheetah_ini, read_cheetah_cnn
from sfx_cnnhit.plugins.om import CnnPeakFinding, Peakfinder8PeakDetection
from sfx_cnnhit.plugins.om_monitor import check_no_shadowing_layer
from tests.synthetic import make_frame

SHAPE = (64, 96)
LAYOUT = {"asic_nx": 48, "asic_ny": 32, "nasics_x": 2, "nasics_y": 2}
PF8_GROUP = {
    "max_num_peaks": 2048,
    "adc_threshold": 100.0,
    "minimum_snr": 5.0,
    "min_pixel_count": 1,
    "max_pixel_count": 30,
    "local_bg_radius": 3,
    "min_res": 0,
    "max_res": 1000,
}
OM_PEAK_KEYS = {"num_peaks", "fs", "ss", "intensity", "num_pixels", "max_pixel_intensity", "snr"}


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(11)
    return np.stack([make_frame(rng, SHAPE, n_spots=12 if i % 2 else 0).data for i in range(4)]).astype(np.float32)


class FakeMonitorParameters:
    """OM's MonitorParameters as the plugin sees it: groups by name, each with OM's added ``name``."""

    def __init__(self, groups):
        self._groups = {name: {**values, "name": name} for name, values in groups.items()}

    def get_parameter_group(self, *, group):
        if group not in self._groups:
            raise KeyError(f"Parameter group '{group}' is not in the configuration file.")
        return self._groups[group]


class FakeGeometry:
    def get_pixel_maps(self):
        return {"radius": radius_map_from_beam_center(SHAPE)}

    def get_layout_info(self):
        return dict(LAYOUT)


def _om_detection(model_path, **cnn):
    params = FakeMonitorParameters(
        {"cnn_hit_detection": {"model": str(model_path), "device": "cpu", **cnn},
         "peakfinder8_peak_detection": PF8_GROUP}
    )
    return CnnPeakFinding(monitor_parameters=params, geometry_information=FakeGeometry())


# ---------------------------------------------------------------------------------------------- OM


def test_om_drop_in_vetoes_everything_at_threshold_one(model_path, frames):
    detection = _om_detection(model_path, threshold=1.0, explain="gradcam")
    for frame in frames:
        peak_list = detection.find_peaks(detector_data=frame)
        assert set(peak_list) == OM_PEAK_KEYS | {"hit_score"}
        assert peak_list["num_peaks"] == 0 and peak_list["fs"] == [] and peak_list["intensity"] == []
        assert 0.0 <= peak_list["hit_score"] < 1.0
        assert detection.last_heatmap is None


def test_om_drop_in_gives_peakfinder8_peaks_at_threshold_zero(model_path, frames):
    detection = _om_detection(model_path, threshold=0.0, explain="gradcam")
    reference = Peakfinder8PeakDetection(
        radius_pixel_map=radius_map_from_beam_center(SHAPE), layout_info=LAYOUT, crystallography_parameters=PF8_GROUP
    )
    counts = []
    for frame in frames:
        peak_list = detection.find_peaks(detector_data=frame)
        expected = reference.find_peaks(data=frame).as_om_dict()
        assert {k: peak_list[k] for k in OM_PEAK_KEYS} == expected
        assert peak_list["hit_score"] == pytest.approx(detection.last_score)
        counts.append(peak_list["num_peaks"])
        heatmap = detection.last_heatmap
        assert heatmap is not None and heatmap.shape == SHAPE and heatmap.dtype == np.float32
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert max(counts) > 0, "the test frames must have peakfinder8 peaks"


def test_om_settings_defaults_and_errors(model_path):
    detection = _om_detection(model_path)
    assert detection.settings == CnnHitParams(model=str(model_path), device="cpu")
    # no threshold given: the model's calibrated one (this uncalibrated test model: 0.5)
    assert detection.finder.threshold == 0.5 and detection.settings.explain == "none"
    assert _om_detection(model_path, threshold=None).settings.threshold is None
    assert _om_detection(model_path, threshold=0.3, precision="bfloat16").finder.precision == "bfloat16"
    assert detection.finder.hot_pixels is not None  # learns hot pixels unless told not to
    assert _om_detection(model_path, hot_pixel_map=False).finder.hot_pixels is None
    with pytest.raises(ConfigError, match="hot_pixel_map"):
        _om_detection(model_path, hot_pixel_map="sometimes")
    with pytest.raises(ConfigError, match="precision"):
        _om_detection(model_path, precision="fp8")
    with pytest.raises(ConfigError, match=r"unknown key.*thresold"):
        _om_detection(model_path, thresold=0.3)
    with pytest.raises(ConfigError, match="explain"):
        _om_detection(model_path, explain="saliency")
    with pytest.raises(ConfigError, match="threshold"):
        _om_detection(model_path, threshold=1.5)
    with pytest.raises(ConfigError, match="no 'cnn_hit_detection' group"):
        CnnPeakFinding(monitor_parameters=FakeMonitorParameters({}), geometry_information=FakeGeometry())
    bad_pf8 = FakeMonitorParameters(
        {"cnn_hit_detection": {"model": str(model_path)}, "peakfinder8_peak_detection": {"min_snr": 4}}
    )
    with pytest.raises(ConfigError, match="min_snr"):
        CnnPeakFinding(monitor_parameters=bad_pf8, geometry_information=FakeGeometry())


def test_importing_the_om_plugin_does_not_import_om(monkeypatch):
    import sfx_cnnhit

    monkeypatch.setattr(sfx_cnnhit, "plugins", sfx_cnnhit.plugins)  # restored with sys.modules below
    for name in list(sys.modules):
        if name == "om" or name.startswith(("om.", "sfx_cnnhit.plugins")):
            monkeypatch.delitem(sys.modules, name)
    importlib.import_module("sfx_cnnhit.plugins.om")
    importlib.import_module("sfx_cnnhit.plugins.om_monitor")
    assert "om" not in sys.modules


def test_launcher_refuses_a_shadowing_processing_layer(tmp_path, monkeypatch):
    check_no_shadowing_layer()
    (tmp_path / "processing_layer.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="processing_layer"):
        check_no_shadowing_layer()


def _om_processing_layer():
    for module in ("zmq", "msgpack", "msgpack_numpy", "om"):
        pytest.importorskip(module, reason="OM's processing layer needs OM, pyzmq, msgpack, msgpack-numpy")
    from sfx_cnnhit.plugins.om import register_with_om

    return register_with_om()


def test_om_processing_layer_runs_the_cnn(model_path, frames, tmp_path):
    processing_class = _om_processing_layer()
    geometry_file = tmp_path / "detector.geom"
    write_geometry(DetectorGeometry.simple(SHAPE, asic_shape=(32, 48)), geometry_file)
    config = tmp_path / "monitor.yaml"
    config.write_text(textwrap.dedent(f"""\
        om:
          parallelization_layer: MultiprocessingParallelization
          data_retrieval_layer: PilatusFilesDataRetrieval
          processing_layer: CnnCrystallographyProcessing
        crystallography:
          geometry_file: {geometry_file}
          min_num_peaks_for_hit: 0
          max_num_peaks_for_hit: 5000
        peakfinder8_peak_detection: {json.dumps(PF8_GROUP)}
        cnn_hit_detection:
          model: {model_path}
          threshold: 0.0
          device: cpu
          explain: gradcam
        """))
    from om.lib.geometry import GeometryInformation
    from om.lib.layer_management import import_class_from_layer
    from om.lib.parameters import MonitorParameters

    assert import_class_from_layer(layer_name="processing_layer", class_name=processing_class.__name__) is (
        processing_class
    )
    processing = processing_class(monitor_parameters=MonitorParameters(config=str(config)))
    processing.initialize_processing_node(node_rank=1, node_pool_size=2)
    radius = GeometryInformation.from_file(geometry_filename=str(geometry_file)).get_pixel_maps()["radius"]
    reference = Peakfinder8PeakDetection(radius_pixel_map=radius, layout_info=LAYOUT,
                                         crystallography_parameters=PF8_GROUP)
    for i, frame in enumerate(frames):
        data = {"detector_data": frame, "timestamp": float(i), "detector_distance": 100.0,
                "beam_energy": 9500.0, "event_id": str(i)}
        processed, rank = processing.process_data(node_rank=1, node_pool_size=2, data=data)
        expected = reference.find_peaks(data=frame).as_om_dict()
        assert rank == 1
        assert {k: processed["peak_list"][k] for k in OM_PEAK_KEYS} == expected
        assert processed["frame_is_hit"] == (expected["num_peaks"] > 0)
        assert (processed.get("cnn_heatmap") is not None) == processed["frame_is_hit"]


def test_om_monitor_launcher_runs_oms_command_line(capsys):
    _om_processing_layer()
    pytest.importorskip("click", reason="OM's command line needs click")
    from sfx_cnnhit.plugins.om_monitor import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "SOURCE" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ Cheetah

CHEETAH_INI = """\
; Cheetah settings with our keys in Cheetah's style
[cheetah]
hitfinder=1
hitfinderAlgorithm=8
HITFINDERADC=100
hitfinderMinSNR=5
hitfinderMinPixCount=1
hitfinderMaxPixCount=30
hitfinderLocalBGRadius=3
hitfinderNpeaks=10
hitfinderNpeaksMax=2048
CNNMODEL={model}
cnnThreshold = {threshold}
CnnDevice=CPU
cnnexplain=gradcam
cnnBatchSize=8
"""


def test_cheetah_ini_keys_are_case_insensitive(model_path, tmp_path):
    ini = tmp_path / "cheetah.ini"
    ini.write_text(CHEETAH_INI.format(model=model_path, threshold=0.7))
    settings, params, rule = read_cheetah_cnn(ini)
    assert settings == CnnHitParams(model=str(model_path), threshold=0.7, device="cpu", explain="gradcam",
                                      batch_size=8)
    assert (params.adc_threshold, params.minimum_snr, params.max_pixel_count) == (100.0, 5.0, 30)
    assert rule == HitRule(min_peaks=10, max_peaks=2048, inclusive=True)


def test_cheetah_ini_defaults_and_errors(tmp_path):
    ini = tmp_path / "plain.ini"
    ini.write_text("hitfinderADC=100\nhitfinderMaxPixCount=30\n")
    settings, _, _ = read_cheetah_cnn(ini)
    assert settings == CnnHitParams()
    # no threshold: the model's calibrated one; float32 unless asked (bfloat16 is opt-in)
    assert (settings.model, settings.threshold, settings.device, settings.explain, settings.batch_size,
            settings.precision) == (None, None, "auto", "none", 64, "float32")
    ini.write_text("hitfinderMaxPixCount=30\ncnnHotPixelMap=0\n")
    assert read_cheetah_cnn(ini)[0].hot_pixel_map is False
    for line, message in [("cnnThreshhold=0.5", "unknown CNN key"), ("cnnThreshold=high", "cnnThreshold|threshold"),
                          ("cnnExplain=lime", "explain"), ("cnnBatchSize=0", "batch size")]:
        ini.write_text(f"hitfinderMaxPixCount=30\n{line}\n")
        with pytest.raises(ConfigError, match=message):
            read_cheetah_cnn(ini)


def test_cnn_finder_from_cheetah_ini(model_path, frames, tmp_path):
    ini = tmp_path / "cheetah.ini"
    ini.write_text(CHEETAH_INI.format(model=model_path, threshold=0.0))
    finder = cnn_finder_from_cheetah_ini(ini, frame_shape=SHAPE, layout_info=LAYOUT)
    assert (finder.threshold, finder.batch_size) == (0.0, 8)
    assert finder.panel_layout is not None and len(finder.panel_layout.panels) == 4
    params = Peakfinder8Params(adc_threshold=100.0, minimum_snr=5.0, min_pixel_count=1, max_pixel_count=30,
                               local_bg_radius=3, max_num_peaks=2048)
    reference = Peakfinder8Finder.from_beam_center(SHAPE, params, asic_shape=(32, 48))
    for frame in frames:
        assert finder.find_peaks(frame).as_om_dict() == {
            **reference.find_peaks(frame).as_om_dict(), "hit_score": finder.last_score
        }
    with pytest.raises(ConfigError, match="radius_map or frame_shape"):
        cnn_finder_from_cheetah_ini(ini)
    with pytest.raises(ConfigError, match="radius_map or frame_shape"):
        cnn_finder_from_cheetah_ini(ini, frame_shape=SHAPE, radius_map=radius_map_from_beam_center(SHAPE))


# ----------------------------------------------------------------------------------------- CrystFEL


def _outputs(folder):
    return {"cxi": str(folder / "hits.cxi"), "lst": str(folder / "hits.lst"), "geometry": str(folder / "hits.geom")}


def test_indexamajig_command(tmp_path):
    outputs = _outputs(tmp_path)
    assert indexamajig_command(outputs, nproc=8, extra=("-p", "cell.pdb")) == [
        "indexamajig", "-i", outputs["lst"], "-g", outputs["geometry"], "--peaks=cxi", "--basename",
        f"--prefix={tmp_path}/", "-o", str(tmp_path / "hits.stream"), "-j", "8", "--indexing=xgandalf,mosflm",
        "-p", "cell.pdb",
    ]
    assert indexamajig_command(outputs, nproc=2, indexing="", workdir=tmp_path) == [
        "indexamajig", "-i", "hits.lst", "-g", "hits.geom", "--peaks=cxi", "--basename", "-o", "hits.stream",
        "-j", "2",
    ]
    with pytest.raises(ConfigError, match="lack geometry"):
        indexamajig_command({"cxi": "a.cxi", "lst": "a.lst"})
    with pytest.raises(ConfigError, match="nproc"):
        indexamajig_command(outputs, nproc=0)


def test_recipe_runs_indexamajig_from_the_output_folder(tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    script = write_recipe(outdir, _outputs(outdir), nproc=3)
    assert script == outdir / RECIPE_NAME and os.access(script, os.X_OK)
    assert not list(outdir.glob("*.inprogress"))
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n") and "--peaks=cxi" in text and "#   -g" in text
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "indexamajig"
    fake.write_text('#!/bin/sh\npwd\necho "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "NPROC": "5"}
    result = subprocess.run([str(script), "-p", "my cell.pdb"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=True)
    cwd, args = result.stdout.splitlines()
    assert cwd == str(outdir)
    assert args == ("-i hits.lst -g hits.geom --peaks=cxi --basename -o hits.stream -j 5 "
                    "--indexing=xgandalf,mosflm -p my cell.pdb")


def test_reduce_run_writes_the_recipe(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.stack([make_frame(rng, SHAPE, n_spots=12).data for _ in range(3)])
    finder = Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params(adc_threshold=100.0), HitRule(min_peaks=1))
    summary = reduce_run(open_frames([path]), finder, tmp_path / "out", method="peakfinder8")
    recipe = tmp_path / "out" / RECIPE_NAME
    assert summary.outputs["crystfel_recipe"] == str(recipe) and os.access(recipe, os.X_OK)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["outputs"]["crystfel_recipe"] == str(recipe)
    assert "-i hits.lst" in recipe.read_text()
