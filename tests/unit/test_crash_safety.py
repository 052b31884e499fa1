"""A run killed with SIGKILL at random moments, then started again with the same command, ends with the
outputs of an uninterrupted run: real subprocesses (``peakfinder8`` killed at >= 20 random moments,
``compare`` and ``train`` at a few), and a full disk is a clean error after which the same command completes."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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
        f["/truth/hit"] = np.arange(N_FRAMES) % 3 == 0
    return path


def _command(run: Path, out: Path, commit_every: float = 0.0) -> list[str]:
    """Batches of 2 frames, each committed (``--commit-every 0``) unless told otherwise."""
    return [*CLI, "peakfinder8", str(run), "-o", str(out), "--batch-size", "2", "--threshold", "60",
            "--min-peaks", "5", "--no-hot-pixel-map", "--commit-every", str(commit_every)]


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


def _timed(command: list[str], first: Path | None = None) -> tuple[float, float]:
    """Run ``command``; seconds until ``first`` appeared (its first commit; 0 if None), and in all."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while first is not None and not first.exists() and proc.poll() is None:
        time.sleep(0.02)
    first_s = 0.0 if first is None else time.perf_counter() - t0
    _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    return first_s, time.perf_counter() - t0


def _run_until_complete(
    command: list[str],
    done: Path,
    rng: np.random.Generator,
    delay_s: tuple[float, float],
    after_kill: Callable[[], None] = lambda: None,
) -> int:
    """Start ``command`` again and again, each time SIGKILLed after a random delay in ``delay_s`` (then
    ``after_kill()`` checks what is on disk), until one run completes (writes ``done``); returns the
    number of kills."""
    kills = 0
    while not done.exists():
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=rng.uniform(*delay_s))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
            after_kill()
        else:
            assert proc.returncode == 0, err.decode()
    return kills


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], float]:
    """The run file, and the outputs and duration (s) of an uninterrupted ``peakfinder8`` run on it."""
    folder = tmp_path_factory.mktemp("reference")
    run = _run_file(folder / "run.cxi")
    _, whole_s = _timed(_command(run, folder / "whole"))
    return run, _contents(folder / "whole"), whole_s


@pytest.mark.parametrize(("commit_every", "n_kills"), [(0.0, KILLS), (0.1, KILLS // 2)],
                         ids=["every batch", "every 0.1 s"])
def test_killed_at_random_moments_then_resumed_gives_the_uninterrupted_output(
    tmp_path: Path, reference: tuple[Path, dict[str, object], float], commit_every: float, n_kills: int
) -> None:
    run, whole, whole_s = reference
    rng = np.random.default_rng(11)
    kills = attempt = 0
    while kills < n_kills:  # a run that completes before enough kills starts a fresh output folder
        out = tmp_path / f"killed_{attempt}"
        kills += _run_until_complete(_command(run, out, commit_every), out / "summary.json", rng, (0.0, whole_s))
        _assert_same(_contents(out), whole)
        assert not list(out.glob("*.inprogress"))
        attempt += 1


def _file_limit(max_bytes: int) -> Callable[[], None]:
    """For the child: files may not grow past ``max_bytes`` (a full disk as the writer sees it)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


# A segment of this run (one batch of 2 frames) takes about 230 kB, the joined hits.cxi about 1.06 MB.
@pytest.mark.parametrize(("max_bytes", "failing"), [(200_000, "segment_000000.h5.tmp"), (600_000, "hits.cxi")],
                         ids=["a segment", "the join"])
def test_full_disk_is_a_clean_error_and_the_run_resumes(
    tmp_path: Path, reference: tuple[Path, dict[str, object], float], max_bytes: int, failing: str
) -> None:
    run, whole, _ = reference
    before = run.read_bytes()
    out = tmp_path / "full"
    full = subprocess.run(_command(run, out), capture_output=True, preexec_fn=_file_limit(max_bytes))
    lines = [line for line in full.stderr.decode().splitlines() if line.strip()]
    assert full.returncode == 2 and lines[-1].startswith("sfx-cnnhit: error: ") and "File too large" in lines[-1]
    assert f"/{failing}: cannot write the output" in lines[-1]
    assert "Traceback" not in full.stderr.decode()
    assert run.read_bytes() == before and not (out / "hits.cxi").exists()
    assert (out / "hits.cxi.inprogress" / "state.json").exists()
    subprocess.run(_command(run, out), check=True, capture_output=True)  # room again: it resumes
    _assert_same(_contents(out), whole)


COMPARE_FRAMES, COMPARE_KILLS = 160, 3
TIMINGS = ("seconds", "frames_per_second", "seconds_inside", "frames_per_second_inside")


def _compare_command(run: Path, model: Path, out: Path, n_frames: int = COMPARE_FRAMES) -> list[str]:
    return [*CLI, "compare", str(run), "-o", str(out), "--peakfinder8", "--cnn", "--model", str(model),
            "--device", "cpu", "--labels", "/truth/hit", "--batch-size", "1", "--max-frames", str(n_frames),
            "--threshold", "60", "--min-peaks", "5", "--no-hot-pixel-map", "--gallery", "4"]


def _compare_contents(out: Path) -> dict[str, object]:
    """Every output of a comparison, less its timings (frames/s differ from run to run)."""
    summary = json.loads((out / "compare.json").read_text())
    del summary["read_seconds"]
    for entry in summary["methods"].values():
        for key in TIMINGS:
            entry.pop(key, None)
    head, speed = (out / "report.md").read_text().split("\n## Speed\n")
    report = head + speed[speed.index("\n## ") :]
    return {
        "compare.json": summary,
        "compare.csv": (out / "compare.csv").read_text(),
        "report.md": [line for line in report.splitlines() if not line.startswith("Written ")],
        "gallery.png": (out / "gallery.png").read_bytes(),
    }


def test_killed_compare_resumes_to_the_uninterrupted_output(
    tmp_path: Path, reference: tuple[Path, dict[str, object], float]
) -> None:
    from sfx_cnnhit.models import create_model, save_checkpoint

    run = reference[0]
    model = save_checkpoint(tmp_path / "tiny.pt", *create_model("hitnet_test"))
    first_s, whole_s = _timed(_compare_command(run, model, tmp_path / "whole"),
                              first=tmp_path / "whole" / "compare.inprogress" / "batch_000000.json")
    whole = _compare_contents(tmp_path / "whole")
    rng = np.random.default_rng(13)
    kills = attempt = 0
    while kills < COMPARE_KILLS:
        out = tmp_path / f"killed_{attempt}"
        kills += _run_until_complete(_compare_command(run, model, out), out / "compare.json", rng,
                                     (first_s, whole_s))
        assert _compare_contents(out) == whole
        assert not list(out.glob("*.inprogress"))
        attempt += 1


TRAIN_EPOCHS, TRAIN_KILLS = 3, 2


def _train_command(files: tuple[Path, Path, Path], out: Path, epochs: int = TRAIN_EPOCHS) -> list[str]:
    _, train, val = files
    return [*CLI, "train", str(train), "--val", str(val), "-o", str(out), "--resume", "--arch", "hitnet_test",
            "--task", "fiveclass", "--epochs", str(epochs), "--batch-size", "8", "--seed", "3", "--device", "cpu"]


def _checkpoints_load(out: Path) -> None:
    """Every checkpoint a killed ``train`` left (``last.pt`` with its training state) loads."""
    from sfx_cnnhit.models.checkpoint import load_checkpoint

    work = out.with_name(out.name + ".work")
    for path in (work / "last.pt", work / "best.pt", out):
        if path.exists():
            checkpoint = load_checkpoint(path)
            assert path.name != "last.pt" or checkpoint.training is not None


def _trained(out: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The weights of a trained model, and its history less the seconds per epoch."""
    from sfx_cnnhit.models.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(out)
    history = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in checkpoint.metrics["history"]]
    return checkpoint.state_dict, history


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    import torch

    from tests.synthetic import simulate_train_val

    files = simulate_train_val(tmp_path, 16, 8)
    whole = tmp_path / "whole.pt"
    first_s, whole_s = _timed(_train_command(files, whole), first=whole.with_name("whole.pt.work") / "last.pt")
    weights, history = _trained(whole)
    rng = np.random.default_rng(17)
    kills = attempt = 0
    while kills < TRAIN_KILLS:
        out = tmp_path / f"killed_{attempt}.pt"
        kills += _run_until_complete(_train_command(files, out), out, rng, (first_s, whole_s),
                                     after_kill=lambda out=out: _checkpoints_load(out))
        resumed_weights, resumed_history = _trained(out)
        assert resumed_history == history
        assert resumed_weights.keys() == weights.keys()
        assert all(torch.equal(resumed_weights[key], value) for key, value in weights.items())
        attempt += 1
