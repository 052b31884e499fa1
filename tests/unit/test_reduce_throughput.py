"""The fast paths of `reduce` (issue 20): gzip chunks encoded in threads and copied as they are by the
join, float16 heat maps, the writer thread, bounded batches, the stage split, `benchmark --end-to-end`
and `benchmarks/gpu_check.sh` (on the CPU). Structure and content only: no timing is checked."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.cxi import DATA_PATH, GZIP_LEVEL, CXIWriter
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.pipeline.cnn_reduce import cnn_reduce, compute_threads
from sfx_cnnhit.pipeline.end_to_end import RATIOS, RUNS, STAGE_COLUMNS, format_end_to_end, run_end_to_end
from sfx_cnnhit.pipeline.reduce import BATCH_BYTES, MAP_DTYPE, STAGES, _WriteBehind, batch_frames
from tests.synthetic import make_frame

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (64, 96)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def run_file(tmp_path: Path) -> Path:
    """12 gzip-compressed frames, every third one with 15 bright spots."""
    rng = np.random.default_rng(3)
    frames = np.asarray([make_frame(rng, SHAPE, n_spots=15 if i % 3 == 0 else 0).data for i in range(12)], np.float32)
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset(DATA_PATH, data=frames, chunks=(1, *SHAPE), compression="gzip", shuffle=True)
    return path


def test_gzip_chunks_encoded_by_us_read_back_exactly_and_survive_the_join(tmp_path: Path) -> None:
    shape = (128, 256)  # a float16 map of 64 KiB: one frame per chunk, like the frames
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 30.0, (5, *shape)).astype(np.float32)
    maps = rng.random((5, *shape)).astype(np.float16)
    out = tmp_path / "hits.cxi"
    with CXIWriter(out, frame_shape=shape, extra_datasets={"map": (shape, np.float16)}) as w:
        for i0, i1 in ((0, 2), (2, 5)):  # two segments, joined chunk by chunk
            w.append(data[i0:i1], event_ids=[str(i) for i in range(i0, i1)], source_files="x",
                     source_indices=np.arange(i0, i1), extras={"map": maps[i0:i1]})
            w.commit()
    with h5py.File(out, "r") as f:
        for path, expected in ((DATA_PATH, data), ("/entry_1/result_1/map", maps)):
            ds = f[path]
            assert ds.compression == "gzip" and ds.compression_opts == GZIP_LEVEL and ds.shuffle
            assert ds.chunks == (1, *shape) and ds.dtype == expected.dtype
            np.testing.assert_array_equal(ds[()], expected)


def test_write_behind_runs_jobs_in_order_and_raises_the_first_error() -> None:
    seconds: dict[str, float] = {}
    done: list[int] = []
    writes = _WriteBehind(seconds)
    for i in range(5):
        writes.submit(lambda i=i: done.append(i))
    writes.close()
    assert done == [0, 1, 2, 3, 4] and seconds["write"] >= 0.0

    failing = _WriteBehind({})
    gate = threading.Event()

    def boom() -> None:
        gate.wait()
        raise OSError("disk full")

    failing.submit(boom)
    failing.submit(lambda: done.append(99))  # after the failed job: dropped, never run
    gate.set()
    with pytest.raises(OSError, match="disk full"):
        failing.close()
    assert 99 not in done


def test_batches_hold_at_most_batch_bytes() -> None:
    assert batch_frames(64, (512, 512)) == 32
    assert batch_frames(64, (1024, 1024)) * 4 * 1024 * 1024 <= BATCH_BYTES
    assert batch_frames(64, (8192, 8192)) == 1
    assert batch_frames(5, (16, 16)) == 5


def test_compute_threads_leaves_a_core_and_restores_torch() -> None:
    before = torch.get_num_threads()
    with compute_threads(None) as chosen:
        assert chosen == max(1, before - 1) == torch.get_num_threads()
    with compute_threads(3) as chosen:
        assert chosen == 3 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_reduce_stores_float16_maps_and_reports_every_stage(run_file: Path, model_path: Path, tmp_path: Path) -> None:
    summary = cnn_reduce(open_frames([str(run_file)]), tmp_path / "out", model=str(model_path), threshold=0.0,
                         batch_size=4)
    assert summary.hits == 12
    assert set(summary.stage_seconds) == set(STAGES)  # peakfinder8 too: threshold 0 makes every frame a hit
    assert all(v >= 0.0 for v in summary.stage_seconds.values())
    with h5py.File(tmp_path / "out" / "hits.cxi", "r") as f:
        maps = f["/entry_1/result_1/gradcam"]
        assert maps.dtype == MAP_DTYPE and maps.shape == (12, *SHAPE)
        values = maps[()].astype(np.float32)
        assert np.all((values >= 0.0) & (values <= 1.0))
        np.testing.assert_array_equal(f[DATA_PATH][()], next(open_frames([str(run_file)]).batches(12)).data)
    assert "stage_seconds" in json.loads((tmp_path / "out" / "summary.json").read_text())


@pytest.mark.slow
def test_end_to_end_reports_every_run(run_file: Path, model_path: Path, tmp_path: Path) -> None:
    report = run_end_to_end(run_file, model=str(model_path), batch_size=4, threads=1, workdir=tmp_path / "work")
    assert report["failed"] == {}
    assert list(report["results"]) == list(RUNS)
    for name, result in report["results"].items():
        assert result["frames"] == 12
        assert result["frames_per_second"] > 0 and result["wall_s"] > 0 and result["peak_rss_mb"] > 0
        assert result["cpu_s"] > 0 and result["frames_per_cpu_second"] > 0
        assert result["process_s"] >= result["wall_s"]
        assert set(result["stage_seconds"]) <= set(STAGE_COLUMNS)
        assert (result["hits"] is None) == (name == "read")
    assert "maps" in report["results"]["reduce"]["stage_seconds"]
    assert set(report["ratios"]) == set(RATIOS)
    text = format_end_to_end(report)
    assert all(name in text for name in RUNS) and "reduce / peakfinder8" in text


def test_end_to_end_refuses_unknown_runs_and_missing_files(run_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown run"):
        run_end_to_end(run_file, runs=("reduce", "bogus"))
    with pytest.raises(ConfigError, match="no such file"):
        run_end_to_end(tmp_path / "missing.cxi")


@pytest.mark.slow
def test_cli_end_to_end_writes_the_json_report(run_file: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    result = CliRunner().invoke(app, ["benchmark", "--end-to-end", str(run_file), "--model", str(model_path),
                                      "--run", "read", "--run", "reduce", "--batch-size", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["read", "reduce"] and "reduce / read" in report["ratios"]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--quick", "--device", "cpu",
                           "--model", str(model_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    whats = [row["what"] for row in report["rows"]]
    for precision in ("float32", "bfloat16"):
        assert sum(w.startswith(f"veto {precision}") for w in whats) == 2
    assert any("Grad-CAM" in w for w in whats) and sum(w.startswith("end to end") for w in whats) == len(RUNS)
    assert all(row["frames_per_second"] > 0 for row in report["rows"]) and report["failed"] == {}
    assert "frames/s" in proc.stdout
