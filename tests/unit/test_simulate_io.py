"""Simulated data sets on disk: reduced-CXI layout with /truth, resume, and the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import OutputError
from sfx_cnnhit.simulate import CLASS_NAMES, SimulationConfig, Simulator
from sfx_cnnhit.simulate.output import simulate_to_file

SMALL = SimulationConfig().with_overrides(detector__size=256)


def test_file_holds_frames_and_ground_truth(tmp_path):
    path = tmp_path / "sim.cxi"
    seen = []
    out = simulate_to_file(
        path, 7, 3, SMALL, class_fractions=[1, 1, 1, 1, 0], chunk=3, progress=lambda d, t: seen.append((d, t))
    )
    assert out == path and not path.with_name("sim.cxi.inprogress").exists()
    assert seen[-1] == (7, 7)
    reference = Simulator(SMALL, seed=3)
    labels = reference.labels_for(7, class_fractions=[1, 1, 1, 1, 0])
    expected = reference.generate(labels)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["/entry_1/data_1/data"][()], expected.data)
        np.testing.assert_array_equal(f["/truth/label"][()], labels)
        np.testing.assert_array_equal(f["/truth/hit"][()], labels >= 2)
        np.testing.assert_array_equal(f["/truth/n_spots"][()], expected.n_spots)
        np.testing.assert_array_equal(f["/truth/bragg_mask"][()], expected.bragg_mask)
        assert [json.loads(p) for p in f["/truth/params"].asstr()[()]] == expected.params
        assert list(f["/truth"].attrs["class_names"]) == list(CLASS_NAMES)
        refl = f["/truth/reflections"]
        frames = refl["frame"][()]
        for i, table in enumerate(expected.reflections):
            np.testing.assert_array_equal(refl["h"][()][frames == i], table["h"])
            np.testing.assert_allclose(refl["fs"][()][frames == i], table["fs"])
        # Cheetah mask convention (0 = good): every frame's bad pixels.
        bad = f["/entry_1/data_1/mask"][()] != 0
        assert bad.any()
        np.testing.assert_array_equal(bad, ~expected.mask.all(axis=0))
        np.testing.assert_allclose(f["/LCLS/photon_energy_eV"][()], [p["photon_energy_ev"] for p in expected.params])
        assert f["/entry_1/experiment_identifier"].asstr()[0] == "train/0"
    geom = path.with_suffix(".geom").read_text()
    assert "/entry_1/data_1/data" in geom and "p0/min_fs = 0" in geom


def test_interrupted_file_resumes_to_the_same_frames(tmp_path):
    full = simulate_to_file(tmp_path / "full.cxi", 6, 5, SMALL, chunk=2, geometry_file=False)

    class StopError(Exception):
        pass

    def stop_after_two(done, total):
        if done >= 2:
            raise StopError

    part = tmp_path / "part.cxi"
    with pytest.raises(StopError):
        simulate_to_file(part, 6, 5, SMALL, chunk=2, progress=stop_after_two, geometry_file=False)
    assert part.with_name("part.cxi.inprogress").exists()
    with pytest.raises(OutputError):
        simulate_to_file(part, 6, 6, SMALL, chunk=2, resume=True, geometry_file=False)
    simulate_to_file(part, 6, 5, SMALL, chunk=2, resume=True, geometry_file=False)
    with h5py.File(full) as a, h5py.File(part) as b:
        np.testing.assert_array_equal(a["/entry_1/data_1/data"][()], b["/entry_1/data_1/data"][()])
        np.testing.assert_array_equal(a["/truth/reflections/h"][()], b["/truth/reflections/h"][()])


def test_cli_simulate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.cxi"
    args = [
        "simulate",
        str(out),
        "--n-frames",
        "5",
        "--seed",
        "2",
        "--size",
        "128",
        "--hit-rate",
        "0",
        "--split",
        "test",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        assert f["/entry_1/data_1/data"].shape == (5, 128, 128)
        assert not f["/truth/hit"][()].any()
        assert f["/truth"].attrs["split"] == "test"
    bad = [
        ["--detector", "cspad", "--size", "100"],
        ["--class-fractions", "0.5,0.5"],
        ["--hit-rate", "0.5", "--class-fractions", "1,1,1,1,1"],
        ["--cell", "nonsense"],
        ["--clen", "abc"],
    ]
    for extra in bad:
        result = runner.invoke(app, ["simulate", str(tmp_path / "x.cxi"), "-n", "2", "--seed", "1", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output
    assert not (tmp_path / "x.cxi").exists()
