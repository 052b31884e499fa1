"""MPI scale-out of `reduce` and `peakfinder8`: rank shares, the merged index, and a real 3-rank `mpirun` run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import ConfigError, NotAvailableError, OutputError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.cxi import read_peak_lists
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.models.checkpoint import save_checkpoint
from sfx_cnnhit.models.zoo import create_model
from sfx_cnnhit.pipeline import mpi
from sfx_cnnhit.pipeline.reduce import reduce_run
from tests.synthetic import make_frame

SHAPE = (64, 96)
N_FRAMES = 14
PF8 = ["--threshold", "100", "--min-snr", "5"]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """14 frames: every other one with 12 bright spots."""
    rng = np.random.default_rng(11)
    frames = [make_frame(rng, SHAPE, n_spots=12 if i % 2 else 0).data for i in range(N_FRAMES)]
    path = tmp_path_factory.mktemp("mpi_data") / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.asarray(frames, np.float32)
    return path


@pytest.fixture(scope="module")
def model_and_threshold(run_file, tmp_path_factory):
    """A tiny untrained model and a threshold half-way between two well separated scores."""
    model, spec = create_model("hitnet_test", task="hitmiss")
    path = save_checkpoint(tmp_path_factory.mktemp("mpi_model") / "tiny.pt", model.eval(), spec)
    with h5py.File(run_file, "r") as f:
        frames = f["/entry_1/data_1/data"][()]
    scores = np.sort(CnnHitFinder(model=path, device="cpu").hit_probability(frames))
    gaps = np.diff(scores)
    middle = np.arange(3, N_FRAMES - 4)  # keep at least 4 hits and 4 misses
    k = int(middle[np.argmax(gaps[middle])])
    assert gaps[k] > 1e-5, "the test frames' scores are too close together to split"
    return path, float(0.5 * (scores[k] + scores[k + 1]))


def _pf8() -> Peakfinder8Finder:
    return Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params(adc_threshold=100.0), HitRule(min_peaks=5))


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _hit_sources(folder):
    return [int(r["source_index"]) for r in _rows(folder / "frames.csv") if r["hit"] == "1"]


def _merged_peaks(folder):
    """The peak lists of the events of a merged hits.lst, in its order."""
    lists: dict[str, list] = {}
    out = []
    for line in (folder / "hits.lst").read_text().splitlines():
        name, event = line.split(" //")
        if name not in lists:
            lists[name] = read_peak_lists(folder / name)
        out.append(lists[name][int(event)])
    return out


def test_rank_shares_merge_to_the_single_process_run(run_file, tmp_path):
    whole = reduce_run(open_frames([run_file]), _pf8(), tmp_path / "whole", method="pf8", batch_size=3)
    reports = [
        reduce_run(
            open_frames([run_file]), _pf8(), mpi.rank_dir(tmp_path / "job", r), method="pf8", batch_size=2,
            rank=r, n_ranks=3,
        ).to_dict()
        for r in range(3)
    ]
    assert [r["frames_read"] for r in reports] == [5, 5, 4]
    merged = mpi.merge_ranks(tmp_path / "job", reports, wall_s=2.0)
    assert merged.frames_read == N_FRAMES and merged.hits == whole.hits > 0
    assert merged.frames_per_second == pytest.approx(N_FRAMES / 2.0)
    # frames.csv: the single-process table row for row; hits.lst: the same events in the same order
    assert _rows(tmp_path / "job" / "frames.csv") == _rows(tmp_path / "whole" / "frames.csv")
    single = read_peak_lists(tmp_path / "whole" / "hits.cxi")
    merged_peaks = _merged_peaks(tmp_path / "job")
    assert len(merged_peaks) == len(single) == whole.hits
    for a, b in zip(merged_peaks, single, strict=True):
        np.testing.assert_array_equal(a.fs, b.fs)
        np.testing.assert_array_equal(a.intensity, b.intensity)
    saved = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert saved["hits"] == whole.hits and saved["settings"]["n_ranks"] == 3
    assert len(saved["settings"]["ranks"]) == 3
    assert (tmp_path / "job" / "hits.geom").read_text() == (tmp_path / "whole" / "hits.geom").read_text()


def test_rank_share_resumes_only_with_the_same_partition(run_file, tmp_path):
    source = open_frames([run_file])
    reduce_run(source, _pf8(), tmp_path / "r1", method="pf8", rank=1, n_ranks=3)
    with pytest.raises(OutputError, match="completed run"):
        reduce_run(source, _pf8(), tmp_path / "r1", method="pf8", rank=1, n_ranks=3)
    with pytest.raises(ConfigError, match="rank"):
        reduce_run(source, _pf8(), tmp_path / "r3", method="pf8", rank=3, n_ranks=3)


def test_merge_refuses_a_rank_table_of_the_wrong_length(run_file, tmp_path):
    reports = [
        reduce_run(open_frames([run_file]), _pf8(), mpi.rank_dir(tmp_path, r), method="pf8", rank=r, n_ranks=2)
        .to_dict()
        for r in range(2)
    ]
    table = mpi.rank_dir(tmp_path, 1) / "frames.csv"
    table.write_text("".join(table.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(OutputError, match="share"):
        mpi.merge_ranks(tmp_path, reports, wall_s=1.0)


def test_plain_runs_do_not_use_mpi(monkeypatch):
    for name in mpi.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert mpi.launch_size() == 1 and mpi.world() is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert mpi.world() is None


def test_mpirun_without_mpi4py_is_refused(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(NotAvailableError, match="mpi4py"):
        mpi.world()


def _mpirun_command(n: int) -> list[str]:
    command = ["mpirun", "--oversubscribe", "-n", str(n)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    return [*command, sys.executable, "-c", "from sfx_cnnhit.cli.app import main; main()"]


def _mpirun_finds_the_same_hits_as_one_process(command: list[str], tmp_path: Path) -> None:
    """``command`` (``reduce ...`` or ``peakfinder8 ...``) under ``mpirun -n 3`` and in one process: the
    same hits, peaks and totals; the frames shared 5 / 5 / 4."""
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun is not installed")
    pytest.importorskip("mpi4py")
    single = CliRunner().invoke(app, [*command, "-o", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    env = {
        **os.environ,
        "OMPI_MCA_btl_vader_single_copy_mechanism": "none",  # containers often forbid ptrace (CMA)
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "OMP_NUM_THREADS": "1",
    }
    job = subprocess.run(
        [*_mpirun_command(3), *command, "-o", str(tmp_path / "job")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    job_dir, single_dir = tmp_path / "job", tmp_path / "single"
    assert sorted(p.name for p in job_dir.glob("rank_*")) == ["rank_000", "rank_001", "rank_002"]
    hits = _hit_sources(single_dir)
    assert 4 <= len(hits) <= N_FRAMES - 4
    assert _hit_sources(job_dir) == hits
    single_peaks = read_peak_lists(single_dir / "hits.cxi")
    job_peaks = _merged_peaks(job_dir)
    assert len(job_peaks) == len(single_peaks) == len(hits)
    for a, b in zip(job_peaks, single_peaks, strict=True):
        np.testing.assert_array_equal(a.fs, b.fs)
        np.testing.assert_array_equal(a.ss, b.ss)
        np.testing.assert_array_equal(a.intensity, b.intensity)
    summary = json.loads((job_dir / "summary.json").read_text())
    assert summary["frames_read"] == N_FRAMES and summary["hits"] == len(hits)
    assert [r["frames_read"] for r in summary["settings"]["ranks"]] == [5, 5, 4]


@pytest.mark.mpi
@pytest.mark.slow
def test_mpirun_three_ranks_finds_the_same_hits_as_one_process(run_file, model_and_threshold, tmp_path):
    model, threshold = model_and_threshold
    _mpirun_finds_the_same_hits_as_one_process(
        ["reduce", str(run_file), "--model", str(model), "--hit-threshold", str(threshold), "--explain", "none",
         "--device", "cpu", "--batch-size", "2", *PF8], tmp_path)


@pytest.mark.mpi
@pytest.mark.slow
def test_mpirun_shares_peakfinder8_too(run_file, tmp_path):
    _mpirun_finds_the_same_hits_as_one_process(
        ["peakfinder8", str(run_file), "--batch-size", "2", "--min-peaks", "5", *PF8], tmp_path)
