"""The reduction pipeline (`reduce_run`) and the `peakfinder8` command built on it."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import OutputError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.cxi import read_peak_lists
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.pipeline.reduce import reduce_run
from tests.synthetic import make_frame

SHAPE = (96, 128)


@pytest.fixture()
def run_file(tmp_path):
    """A 20-frame CXI file: every third frame has 15 bright spots, the rest background only."""
    rng = np.random.default_rng(7)
    frames = [make_frame(rng, SHAPE, n_spots=15 if i % 3 == 0 else 0).data for i in range(20)]
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.asarray(frames, np.float32)
    return path


def _finder() -> Peakfinder8Finder:
    params = Peakfinder8Params(adc_threshold=100.0, minimum_snr=5.0)
    return Peakfinder8Finder.from_beam_center(SHAPE, params, HitRule(min_peaks=8), asic_shape=(48, 64))


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cxi_contents(path):
    with h5py.File(path, "r") as f:
        return {
            name: f[name][()]
            for name in (
                "/entry_1/data_1/data",
                "/entry_1/result_1/nPeaks",
                "/entry_1/result_1/peakXPosRaw",
                "/entry_1/result_1/peakTotalIntensity",
                "/entry_1/result_1/hit_score",
                "/entry_1/result_1/source_index",
            )
        }


def test_reduced_file_holds_exactly_the_hits_with_their_peaks(run_file, tmp_path):
    source = open_frames([run_file])
    finder = _finder()
    summary = reduce_run(source, finder, tmp_path / "out", method="peakfinder8", batch_size=6)
    rows = _read_csv(tmp_path / "out" / "frames.csv")
    assert len(rows) == 20
    hit_rows = [r for r in rows if r["hit"] == "1"]
    assert summary.hits == len(hit_rows) == 7  # frames 0, 3, ..., 18
    assert [int(r["source_index"]) for r in hit_rows] == list(range(0, 20, 3))
    with h5py.File(run_file, "r") as f:
        raw = f["/entry_1/data_1/data"][()]
    out = _cxi_contents(tmp_path / "out" / "hits.cxi")
    np.testing.assert_array_equal(out["/entry_1/result_1/source_index"], np.arange(0, 20, 3))
    np.testing.assert_array_equal(out["/entry_1/data_1/data"], raw[::3])
    peaks = read_peak_lists(tmp_path / "out" / "hits.cxi")
    for stored, frame in zip(peaks, raw[::3], strict=True):
        expected = finder.find_peaks(frame)
        assert stored.num_peaks == expected.num_peaks
        np.testing.assert_array_equal(stored.fs, expected.fs)
        np.testing.assert_array_equal(stored.intensity, expected.intensity)
    lst = (tmp_path / "out" / "hits.lst").read_text().splitlines()
    assert lst == [f"{tmp_path / 'out' / 'hits.cxi'} //{i}" for i in range(7)]
    assert "dim0 = %" in (tmp_path / "out" / "hits.geom").read_text()
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["frames_read"] == 20 and saved["hits"] == 7
    assert saved["data_reduction_factor"] == pytest.approx(20 / 7)


class _Killer:
    """Wraps a finder and raises (like a kill) on the n-th batch."""

    name = "killer"

    def __init__(self, inner, kill_at_batch):
        self.inner, self.kill_at, self.calls = inner, kill_at_batch, 0

    def find_peaks(self, data):
        return self.inner.find_peaks(data)

    def classify(self, frames, masks=None):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt
        return self.inner.classify(frames, masks)


def test_killed_run_resumes_to_the_same_output(run_file, tmp_path):
    reduce_run(open_frames([run_file]), _finder(), tmp_path / "whole", method="pf8", batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        reduce_run(open_frames([run_file]), _Killer(_finder(), 3), tmp_path / "part", method="pf8", batch_size=4,
                   commit_seconds=0.0)  # every batch committed
    assert not (tmp_path / "part" / "hits.cxi").exists()
    assert (tmp_path / "part" / "hits.cxi.inprogress").exists()
    resumed_finder = _Killer(_finder(), kill_at_batch=-1)
    summary = reduce_run(open_frames([run_file]), resumed_finder, tmp_path / "part", method="pf8", batch_size=4)
    assert resumed_finder.calls == 3  # batches 3..5 only: 2 were committed before the kill
    assert summary.frames_read == 20
    whole, part = _cxi_contents(tmp_path / "whole" / "hits.cxi"), _cxi_contents(tmp_path / "part" / "hits.cxi")
    for name, value in whole.items():
        np.testing.assert_array_equal(part[name], value, err_msg=name)
    assert _read_csv(tmp_path / "part" / "frames.csv") == _read_csv(tmp_path / "whole" / "frames.csv")


def test_batches_gather_into_one_commit_and_a_kill_redoes_what_was_not_committed(run_file, tmp_path):
    """The first batch is committed at once, the next ones together (here: an hour apart, so only at the
    end): a kill at batch 4 keeps batch 1, and the resumed run redoes batches 2..5 to the same outputs."""
    reduce_run(open_frames([run_file]), _finder(), tmp_path / "whole", method="pf8", batch_size=4, commit_seconds=0.0)
    with pytest.raises(KeyboardInterrupt):
        reduce_run(open_frames([run_file]), _Killer(_finder(), 4), tmp_path / "part", method="pf8", batch_size=4,
                   commit_seconds=3600.0)
    assert sorted(p.name for p in (tmp_path / "part" / "hits.cxi.inprogress").glob("segment_*")) == [
        "segment_000000.h5"]
    resumed_finder = _Killer(_finder(), kill_at_batch=-1)
    reduce_run(open_frames([run_file]), resumed_finder, tmp_path / "part", method="pf8", batch_size=4,
               commit_seconds=3600.0)
    assert resumed_finder.calls == 4
    whole, part = _cxi_contents(tmp_path / "whole" / "hits.cxi"), _cxi_contents(tmp_path / "part" / "hits.cxi")
    for name, value in whole.items():
        np.testing.assert_array_equal(part[name], value, err_msg=name)
    assert _read_csv(tmp_path / "part" / "frames.csv") == _read_csv(tmp_path / "whole" / "frames.csv")


def test_resume_with_other_settings_is_refused(run_file, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        reduce_run(open_frames([run_file]), _Killer(_finder(), 2), tmp_path / "o", method="pf8", batch_size=4)
    with pytest.raises(OutputError, match="other inputs or settings"):
        reduce_run(open_frames([run_file]), _finder(), tmp_path / "o", method="pf8", settings={"x": 1}, batch_size=4)


def test_completed_run_is_not_overwritten_and_inputs_are_protected(run_file, tmp_path):
    reduce_run(open_frames([run_file]), _finder(), tmp_path / "o", method="pf8")
    with pytest.raises(OutputError, match="completed run"):
        reduce_run(open_frames([run_file]), _finder(), tmp_path / "o", method="pf8")
    victim = tmp_path / "hits.cxi"
    victim.write_bytes(run_file.read_bytes())
    before = victim.read_bytes()
    with pytest.raises(OutputError, match="input"):
        reduce_run(open_frames([victim]), _finder(), tmp_path, method="pf8")
    assert victim.read_bytes() == before


def test_peakfinder8_command(run_file, tmp_path):
    result = CliRunner().invoke(
        app,
        ["peakfinder8", str(run_file), "-o", str(tmp_path / "cli"), "--threshold", "100", "--min-peaks", "8"],
    )
    assert result.exit_code == 0, result.output
    rows = _read_csv(tmp_path / "cli" / "frames.csv")
    assert sum(r["hit"] == "1" for r in rows) == 7
    bad = CliRunner().invoke(app, ["peakfinder8", str(tmp_path / "missing.cxi"), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert "missing.cxi" in bad.output and "Traceback" not in bad.output
