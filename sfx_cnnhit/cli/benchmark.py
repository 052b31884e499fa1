"""`sfx-cnnhit benchmark`: frames/s and peak memory of every method on the same simulated frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import Device, PrecisionOption
from sfx_cnnhit.io.atomic import write_text_atomic
from sfx_cnnhit.pipeline.benchmark import DEFAULT_METHODS, METHODS, BenchmarkConfig, format_report, run_benchmark


def register(app: typer.Typer) -> None:
    @app.command("benchmark")
    @handle_errors
    def benchmark(
        json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
        full: Annotated[
            bool, typer.Option("--full", help="More frames, longer timings, and real DIALS when installed.")
        ] = False,
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Checkpoint or shipped model (default: shipped).")
        ] = None,
        method: Annotated[
            list[str] | None,
            typer.Option("--method", help=f"Only these methods (repeat); from: {', '.join(METHODS)}."),
        ] = None,
        detector: Annotated[
            list[str] | None,
            typer.Option("--detector", help="Simulated detectors (repeat; default square512 and agipd1m)."),
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per CNN batch.")] = 16,
        max_frames: Annotated[
            int | None, typer.Option("--max-frames", min=1, help="Frames timed per method at most (default 256).")
        ] = None,
        seconds: Annotated[
            float | None, typer.Option("--seconds", min=0.1, help="Time each method about this long (default 3 s).")
        ] = None,
        pool_frames: Annotated[
            int | None,
            typer.Option("--pool-frames", min=1, help="Frames held in memory, cycled through (default 32)."),
        ] = None,
        threads: Annotated[
            int | None, typer.Option("--threads", help="torch threads (default: one per core).")
        ] = None,
        device: Device = "auto",
        precision: PrecisionOption = "float32",
        workdir: Annotated[
            Path | None, typer.Option("--workdir", help="Keep frames and outputs here (default: a temporary folder).")
        ] = None,
    ) -> None:
        """Frames per second and peak memory (RSS) of the CNN veto, veto + Grad-CAM, the full reduce,
        peakfinder8 (ours and OM's), DIALS dispersion, AlexNet and ResNet-101 on the same frames, each
        also as a ratio to OM's peakfinder8. About two minutes on a 2-core machine (--full: longer).
        """
        overrides: dict[str, object] = {
            "model": model, "batch_size": batch_size, "threads": threads, "device": device, "precision": precision,
        }
        for key, value in (("max_frames", max_frames), ("seconds_per_method", seconds), ("pool_frames", pool_frames)):
            if value is not None:
                overrides[key] = value
        if method:
            overrides["methods"] = tuple(method)
        elif not full:
            overrides["methods"] = DEFAULT_METHODS
        if detector:
            overrides["detectors"] = tuple(detector)
        config = BenchmarkConfig.full(**overrides) if full else BenchmarkConfig(**overrides)  # type: ignore[arg-type]
        report = run_benchmark(config, workdir=workdir, progress=lambda line: console.print(f"[dim]{line}[/dim]"))
        typer.echo(format_report(report))
        if json_path is not None:
            write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
            console.print(f"report written to {json_path}")
