"""`reduce --finder NAME`: any registered hit finder through the reduction job (`finder_reduce`), MPI too."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.cxi import read_peak_lists
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.pipeline.reduce import reduce_run
from tests.cli import one_line_error, run_cli
from tests.synthetic import make_frame
from tests.unit.test_mpi import N_FRAMES, _mpirun_finds_the_same_hits_as_one_process

SHAPE = (64, 96)
SPOT_FRAMES = (0, 3, 6, 9, 12)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 14-frame CXI file without geometry (as the MPI test shares them): every third frame has 20 bright
    spots."""
    rng = np.random.default_rng(5)
    frames = [make_frame(rng, SHAPE, n_spots=20 if i in SPOT_FRAMES else 0).data for i in range(N_FRAMES)]
    path = tmp_path_factory.mktemp("any_finder") / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.asarray(frames, np.float32)
    return path


def _outputs(folder: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    with (folder / "frames.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, json.loads((folder / "summary.json").read_text())


def test_reduce_with_the_dispersion_finder(run_file: Path, tmp_path: Path):
    out = tmp_path / "dispersion"
    result = run_cli(["reduce", str(run_file), "-o", str(out), "--finder", "dispersion"])
    assert result.exit_code == 0, result.output
    rows, summary = _outputs(out)
    assert summary["method"] == "dispersion"
    assert summary["settings"]["finder"] == "dispersion"
    hits = [i for i, r in enumerate(rows) if r["hit"] == "1"]
    assert hits == list(SPOT_FRAMES)  # DIALS's rule: at least 14 spots
    assert all(float(r["score"]) >= 14 for r in rows if r["hit"] == "1")
    with h5py.File(out / "hits.cxi", "r") as f:
        assert f["/entry_1/result_1/source_index"][()].tolist() == hits
        assert (f["/entry_1/result_1/nPeaks"][()] >= 14).all()
        assert "/entry_1/result_1/gradcam" not in f  # no heat maps


def test_reduce_with_peakfinder8_and_a_finder_param_is_the_peakfinder8_job(run_file: Path, tmp_path: Path):
    out = tmp_path / "pf8"
    result = run_cli(["reduce", str(run_file), "-o", str(out), "--finder", "peakfinder8",
                      "--finder-param", "adc_threshold=50", "--finder-param", "minimum_snr=5"])
    assert result.exit_code == 0, result.output
    rows, summary = _outputs(out)
    assert summary["method"] == "peakfinder8"
    assert summary["settings"]["finder_params"] == {"adc_threshold": "50", "minimum_snr": "5"}
    # the same as reduce_run with peakfinder8 built by hand on the same (flat, beam-centred) detector
    finder = Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params(adc_threshold=50.0), HitRule())
    reduce_run(open_frames([run_file]), finder, tmp_path / "by_hand", method="peakfinder8")
    expected, _ = _outputs(tmp_path / "by_hand")
    assert [(r["hit"], r["score"]) for r in rows] == [(r["hit"], r["score"]) for r in expected]
    assert [i for i, r in enumerate(rows) if r["hit"] == "1"] == list(SPOT_FRAMES)
    found = read_peak_lists(out / "hits.cxi")
    assert [p.num_peaks for p in found] == [p.num_peaks for p in read_peak_lists(tmp_path / "by_hand" / "hits.cxi")]


def test_min_peaks_sets_the_hit_rule_of_any_peak_counting_finder(run_file: Path, tmp_path: Path):
    default, _ = _outputs_of(run_file, tmp_path / "default", [])
    counts = [int(float(r["score"])) for r in default]
    cut = sorted(set(counts))[1]  # above the fewest peaks any frame has
    rows, summary = _outputs_of(run_file, tmp_path / "cut", ["--min-peaks", str(cut)])
    assert summary["settings"]["min_peaks"] == cut
    assert [r["hit"] == "1" for r in rows] == [n >= cut for n in counts]  # the same counts, a new rule


def _outputs_of(run_file: Path, out: Path, extra: list[str]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    result = run_cli(["reduce", str(run_file), "-o", str(out), "--finder", "dispersion", *extra])
    assert result.exit_code == 0, result.output
    return _outputs(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--finder", "dispersion", "--hit-threshold", "0.5"], "^--hit-threshold: options of the CNN, not of --finder"),
        (["--finder", "dispersion", "--explain", "gradcam", "--model", "x"],
         "^--model, --explain: options of the CNN, not of --finder dispersion$"),
        (["--finder", "peakfinder8", "--threshold", "50"], r"peakfinder8 flags \(use --finder-param\)"),
        (["--finder", "peakfinder8", "--finder-param", "adc_threshold"], "--finder-param 'adc_threshold': expected"),
        (["--finder", "peakfinder8", "--finder-param", "threshold=5"], "unknown peakfinder8 parameter.*threshold"),
        (["--finder", "dispersion", "--finder-param", "gain=lots"], "invalid value 'lots' for gain"),
        (["--finder", "nope"], "unknown hit finder 'nope'"),
        (["--finder-param", "adc_threshold=5"], "--finder-param and --min-peaks are for a --finder other than cnn"),
        (["--min-peaks", "3"], "--finder-param and --min-peaks are for a --finder other than cnn"),
    ],
)
def test_wrong_options_are_one_line_errors(run_file: Path, tmp_path: Path, args: list[str], message: str):
    result = run_cli(["reduce", str(run_file), "-o", str(tmp_path / "out"), *args])
    error = one_line_error(result)
    assert re.search(message, error), error
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.mpi
@pytest.mark.slow
def test_mpirun_shares_any_finder_too(run_file: Path, tmp_path: Path):
    _mpirun_finds_the_same_hits_as_one_process(
        ["reduce", str(run_file), "--finder", "dispersion", "--batch-size", "2"], tmp_path)
