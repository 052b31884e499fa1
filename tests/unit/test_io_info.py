"""`sfx-cnnhit info`: tables for people, --json for machines."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.io.geometry import write_geometry


def _files(tmp_path: Path) -> tuple[Path, Path]:
    cxi = tmp_path / "run.cxi"
    with h5py.File(cxi, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=np.ones((5, 16, 24), np.uint16), compression="gzip")
        f["/entry_1/data_1/mask"] = np.zeros((16, 24), np.uint16)
        f["/entry_1/experiment_identifier"] = [f"ev{i}" for i in range(5)]
        f["/LCLS/photon_energy_eV"] = np.full(5, 9500.0)
        f["/extra/mask"] = np.ones((16, 24), np.uint8)
    eu = tmp_path / "eu.cxi"
    with h5py.File(eu, "w") as f:
        f["/entry_1/instrument_1/detector_1/data"] = np.ones((2, 2, 8, 16), np.float32)
    return cxi, eu


def test_info_json_keys(tmp_path: Path) -> None:
    cxi, eu = _files(tmp_path)
    result = CliRunner().invoke(app, ["info", str(cxi), str(eu), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["n_frames"] == 7
    first, second = doc["files"]
    assert first["path"] == str(cxi) and first["n_frames"] == 5 and first["frame_shape"] == [16, 24]
    assert first["dtype"] == "uint16" and first["data_path"] == "/entry_1/data_1/data"
    assert "gzip" in first["compression"]
    assert first["event_ids"] == {"source": "/entry_1/experiment_identifier", "first": "ev0", "last": "ev4"}
    assert first["metadata"]["photon_energy_ev"]["first"] == 9500.0
    assert first["mask"]["source"].endswith("/entry_1/data_1/mask")
    assert second["frame_shape"] == [16, 16] and second["stored_frame_shape"] == [2, 8, 16]
    assert second["layout_info"] == {"asic_nx": 16, "asic_ny": 8, "nasics_x": 1, "nasics_y": 2}


def test_info_mask_path_bits_and_geometry(tmp_path: Path) -> None:
    cxi, _ = _files(tmp_path)
    geom = write_geometry(DetectorGeometry.simple((16, 24), asic_shape=(8, 12)), tmp_path / "det.geom")
    result = CliRunner().invoke(
        app,
        [
            "info",
            str(cxi),
            "--mask-path",
            "/extra/mask",
            "--mask-goodbits",
            "0x1",
            "--mask-badbits",
            "0",
            "-g",
            str(geom),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["files"][0]
    assert entry["mask"]["source"].endswith(":/extra/mask") and "goodbits=0x1" in entry["mask"]["convention"]
    assert entry["mask"]["static_bad_pixels"] == 0
    assert entry["layout_info"] == {"asic_nx": 12, "asic_ny": 8, "nasics_x": 2, "nasics_y": 2}
    assert entry["metadata"]["photon_energy_ev"]["source"].startswith("geometry")
    bad = CliRunner().invoke(app, ["info", str(cxi), "--mask-goodbits", "one"])
    assert bad.exit_code != 0


def test_info_table_for_people(tmp_path: Path) -> None:
    cxi, _ = _files(tmp_path)
    result = CliRunner().invoke(app, ["info", str(cxi)])
    assert result.exit_code == 0, result.output
    for text in (
        "/entry_1/data_1/data",
        "3-D (N, ss, fs) stack",
        "uint16",
        "ev0 ... ev4",
        "photon_energy_ev",
        "5 frames in 1 file(s)",
    ):
        assert text in result.stdout, text
