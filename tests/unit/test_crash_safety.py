"""A run killed with SIGKILL at random moments, then started again with the same command, ends with the
outputs of an uninterrupted run: a real subprocess, killed at >= 20 random moments."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow

N_FRAMES, SIZE, KILLS = 400, 96, 20
CLI = [sys.executable, "-c", "from sfx_cnnhit.cli.app import main; main()"]


def _run_file(path: Path) -> Path:
    rng = np.random.default_rng(5)
    data = rng.poisson(3.0, (N_FRAMES, SIZE, SIZE)).astype(np.float32)
    for i in range(0, N_FRAMES, 3):  # every third frame a hit: ten 3x3 spots
        for ss, fs in rng.integers(8, SIZE - 8, (10, 2)):
            data[i, ss - 1 : ss + 2, fs - 1 : fs + 2] += 300.0
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=data, chunks=(1, SIZE, SIZE), compression="gzip")
    return path


def _command(run: Path, out: Path) -> list[str]:
    return [*CLI, "peakfinder8", str(run), "-o", str(out), "--batch-size", "2", "--threshold", "60",
            "--min-peaks", "5", "--no-hot-pixel-map"]


def _contents(out: Path) -> dict[str, object]:
    with h5py.File(out / "hits.cxi", "r") as f:
        found: dict[str, object] = {}
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    with (out / "frames.csv").open(newline="") as fh:
        found["frames.csv"] = list(csv.reader(fh))
    summary = json.loads((out / "summary.json").read_text())
    found["summary"] = {key: summary[key] for key in ("frames_read", "hits", "failed_frames")}
    return found


def _assert_same(found: dict[str, object], expected: dict[str, object]) -> None:
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(found[name], value, err_msg=name)
        else:
            assert found[name] == value, name


def _timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0


def _run_until_complete(command: list[str], out: Path, rng: np.random.Generator, max_delay_s: float) -> int:
    """Start ``command`` again and again, each time SIGKILLed after a random delay, until one run
    completes; returns the number of kills."""
    kills = 0
    while not (out / "summary.json").exists():
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=rng.uniform(0.0, max_delay_s))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
        else:
            assert proc.returncode == 0, err.decode()
    return kills


def test_killed_at_random_moments_then_resumed_gives_the_uninterrupted_output(tmp_path: Path) -> None:
    run = _run_file(tmp_path / "run.cxi")
    whole_s = _timed(_command(run, tmp_path / "whole"))
    whole = _contents(tmp_path / "whole")
    rng = np.random.default_rng(11)
    kills = attempt = 0
    while kills < KILLS:  # a run that completes before enough kills starts a fresh output folder
        out = tmp_path / f"killed_{attempt}"
        kills += _run_until_complete(_command(run, out), out, rng, whole_s)
        _assert_same(_contents(out), whole)
        assert not list(out.glob("*.inprogress"))
        attempt += 1


def _small_file_limit() -> None:
    """In the child: files may not grow past 200 kB (a full disk as the writer sees it)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_full_disk_is_a_clean_error_and_the_run_resumes(tmp_path: Path) -> None:
    run = _run_file(tmp_path / "run.cxi")
    before = run.read_bytes()
    subprocess.run(_command(run, tmp_path / "whole"), check=True, capture_output=True)
    out = tmp_path / "full"
    full = subprocess.run(_command(run, out), capture_output=True, preexec_fn=_small_file_limit)
    lines = [line for line in full.stderr.decode().splitlines() if line.strip()]
    assert full.returncode == 2 and lines[-1].startswith("sfx-cnnhit: error: ") and "File too large" in lines[-1]
    assert "Traceback" not in full.stderr.decode()
    assert run.read_bytes() == before and not (out / "hits.cxi").exists()
    subprocess.run(_command(run, out), check=True, capture_output=True)  # room again: it resumes
    _assert_same(_contents(out), _contents(tmp_path / "whole"))
