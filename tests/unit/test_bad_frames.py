"""Unreadable frames are skipped and named, not fatal: the reader, `peakfinder8` and `reduce`, and `--strict`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.sources import open_frames

N, BAD = 12, 7


def _corrupt_file(path: Path) -> Path:
    """N gzip frames of sparse spots, one chunk per frame, with frame BAD's chunk overwritten by zeros."""
    rng = np.random.default_rng(0)
    data = rng.poisson(2.0, (N, 64, 64)).astype(np.float32)
    data[:, 20:23, 30:33] += 500
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("/entry_1/data_1/data", data=data, chunks=(1, 64, 64), compression="gzip")
        info = ds.id.get_chunk_info(BAD)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset : info.byte_offset + info.size] = b"\x00" * info.size
    path.write_bytes(bytes(raw))
    return path


def test_reader_skips_only_the_bad_frame(tmp_path: Path) -> None:
    source = open_frames([_corrupt_file(tmp_path / "run.cxi")])
    batches = list(source.batches(chunk_size=5, skip_bad=True))
    read = np.concatenate([b.global_index for b in batches])
    assert read.tolist() == [i for i in range(N) if i != BAD]
    failed = [f for b in batches for f in b.failed]
    assert len(failed) == 1 and failed[0].global_index == BAD and failed[0].source_index == BAD
    assert "run.cxi" in failed[0].reason and str(BAD) in failed[0].reason
    with pytest.raises(InputError):
        list(source.batches(chunk_size=5))


def test_reader_yields_an_empty_batch_when_every_frame_of_it_fails(tmp_path: Path) -> None:
    source = open_frames([_corrupt_file(tmp_path / "run.cxi")])
    (batch,) = source.batches(chunk_size=1, start=BAD, stop=BAD + 1, skip_bad=True)
    assert len(batch) == 0 and batch.data.shape == (0, 64, 64) and len(batch.failed) == 1


@pytest.mark.parametrize("command", ["peakfinder8", "reduce"])
def test_run_finishes_names_the_frame_and_exits_3(tmp_path: Path, command: str) -> None:
    path = _corrupt_file(tmp_path / "run.cxi")
    before = path.read_bytes()
    out = tmp_path / "out"
    extra = ["--threshold", "50", "--min-peaks", "1"] if command == "peakfinder8" else ["--explain", "none"]
    result = CliRunner().invoke(app, [command, str(path), "-o", str(out), "--batch-size", "4", *extra])
    assert result.exit_code == 3, result.output
    assert "could not be read" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == N
    assert [f["source_index"] for f in summary["failed_frames"]] == [BAD]
    with (out / "frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N
    flagged = [r for r in rows if r["flag"].startswith("failed:")]
    assert [int(r["source_index"]) for r in flagged] == [BAD]
    assert path.read_bytes() == before  # the input is never touched
    strict = CliRunner().invoke(app, [command, str(path), "-o", str(tmp_path / "strict"), "--strict", *extra])
    assert strict.exit_code == 2 and "cannot" in strict.output
