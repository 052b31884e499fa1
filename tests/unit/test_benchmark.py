"""`sfx-cnnhit benchmark`: a tiny run gives the report's keys with positive figures (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sfx_cnnhit.cli import benchmark as benchmark_cli
from sfx_cnnhit.cli.app import app
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.models.checkpoint import save_checkpoint
from sfx_cnnhit.models.zoo import create_model
from sfx_cnnhit.pipeline.benchmark import (
    REFERENCE,
    BenchmarkConfig,
    format_report,
    om_available,
    peak_rss_mb,
    run_benchmark,
)

TINY = {
    "detectors": ("square512",),
    "distinct_frames": 2,
    "pool_frames": 2,
    "max_frames": 2,
    "seed_net_frames": 1,
    "reduce_frames": 2,
    "seconds_per_method": 0.0,
    "batch_size": 2,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model, spec = create_model("hitnet_test", task="hitmiss")
    return str(save_checkpoint(tmp_path_factory.mktemp("bench_model") / "tiny.pt", model.eval(), spec))


@pytest.mark.slow
def test_tiny_run_reports_every_required_figure(tiny_model, tmp_path):
    methods = ("cnn_veto", "reduce", "peakfinder8", REFERENCE)
    config = BenchmarkConfig(methods=methods, model=tiny_model, threads=1, **TINY)
    lines = []
    report = run_benchmark(config, workdir=tmp_path, progress=lines.append)
    report = json.loads(json.dumps(report))  # JSON-able
    measured = [m for m in methods if m != REFERENCE or om_available()]
    assert sorted(report["results"]) == sorted(measured), report["failed"]
    for name in measured:
        result = report["results"][name]
        assert result["frames_per_second"] > 0 and result["frames_per_cpu_second"] > 0
        assert result["peak_rss_mb"] > 0 and result["frames"] > 0
        assert result["detector"] == "square512" and result["frame_shape"] == [512, 512]
    assert report["results"]["cnn_veto"]["threads"] == 1
    assert 0 <= report["results"]["reduce"]["passed"] <= report["results"]["reduce"]["frames"] == 2
    if om_available():
        ratios = report["ratio_to_om_peakfinder8"]
        assert sorted(ratios) == sorted(measured) and ratios[REFERENCE] == pytest.approx(1.0)
        assert all(r > 0 for r in ratios.values())
    else:
        assert REFERENCE in report["skipped"] and report["ratio_to_om_peakfinder8"] == {}
    for key in ("cores", "torch_threads", "torch_version", "cpu"):
        assert key in report["machine"]
    assert report["model"]["trained"] and report["model"]["path"] == tiny_model
    # one progress line for the frames, then per method one before and one with its figures
    assert len(lines) == 1 + 2 * len(measured)
    assert sum("frames/s" in line for line in lines) == len(measured)
    assert "cnn_veto" in format_report(report)


def test_cli_writes_the_json_report(tmp_path, monkeypatch):
    def tiny(**overrides):
        return BenchmarkConfig(**{**overrides, **TINY})

    monkeypatch.setattr(benchmark_cli, "BenchmarkConfig", tiny)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["benchmark", "--method", "peakfinder8", "--json", str(out),
                                      "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["results"]["peakfinder8"]["frames_per_second"] > 0
    assert "peakfinder8" in result.output


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError, match="unknown method"):
        BenchmarkConfig(methods=("cnn_veto", "nope"))
    with pytest.raises(ConfigError, match="hit_rate"):
        BenchmarkConfig(hit_rate=1.5)


def test_peak_memory_is_that_of_the_process_itself():
    """A child of a large parent reports its own peak, not the parent's (Linux ru_maxrss would)."""
    code = "from sfx_cnnhit.pipeline.benchmark import peak_rss_mb; print(peak_rss_mb())"
    ballast = b"\x01" * (400 * 2**20)  # 400 MB written (resident) in this process while the child starts
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert peak_rss_mb() > 400 and 0 < child < 300
    del ballast


def test_cli_timing_limits_reach_the_run(tmp_path, monkeypatch):
    seen: dict[str, object] = {}

    def tiny(**overrides):
        seen.update(overrides)
        return BenchmarkConfig(**{**TINY, **overrides})

    monkeypatch.setattr(benchmark_cli, "BenchmarkConfig", tiny)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["benchmark", "--method", "peakfinder8", "--max-frames", "3", "--pool-frames",
                                      "3", "--seconds", "0.5", "--json", str(out), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert (seen["max_frames"], seen["pool_frames"], seen["seconds_per_method"]) == (3, 3, 0.5)
    assert json.loads(out.read_text())["results"]["peakfinder8"]["frames"] <= 3
