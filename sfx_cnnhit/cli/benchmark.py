"""`sfx-cnnhit benchmark`: frames/s and peak memory of every method on the same simulated frames."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import Device, PrecisionOption
from sfx_cnnhit.io.atomic import write_text_atomic
from sfx_cnnhit.pipeline.benchmark import DEFAULT_METHODS, METHODS, BenchmarkConfig, format_report, run_benchmark
from sfx_cnnhit.pipeline.end_to_end import RUNS, format_end_to_end, run_end_to_end


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
        end_to_end: Annotated[
            Path | None,
            typer.Option("--end-to-end", help="Instead: time reading only, peakfinder8, reduce --explain none and "
                         "reduce on this file, each as its command runs it, with the time per stage."),
        ] = None,
        geometry: Annotated[
            Path | None, typer.Option("--geometry", "-g", help="With --end-to-end: the file's CrystFEL geometry.")
        ] = None,
        run: Annotated[
            list[str] | None,
            typer.Option("--run", help=f"With --end-to-end: only these runs (repeat); from: {', '.join(RUNS)}."),
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option("--batch-size", min=1, help="Frames per CNN batch (default 16; reduce's 64 "
                                     "with --end-to-end).")
        ] = None,
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
            int | None, typer.Option("--threads", help="torch threads (default: one per core; with --end-to-end "
                                     "reduce's default).")
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

        With --end-to-end FILE: the whole jobs on that file instead, each in its own process: frames/s,
        the ratios between them, the time per stage and peak RSS.
        """

        def say(line: str) -> None:
            console.print(f"[dim]{line}[/dim]")

        if end_to_end is not None:
            report = run_end_to_end(end_to_end, geometry=geometry, model=model, batch_size=batch_size or 64,
                                    threads=threads, device=device, precision=precision,
                                    runs=tuple(run) if run else RUNS, workdir=workdir, progress=say)
            typer.echo(format_end_to_end(report))
        else:
            report = _simulated(full, model, method, detector, batch_size or 16, max_frames, seconds, pool_frames,
                                threads, device, precision, workdir, say)
        if json_path is not None:
            write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
            console.print(f"report written to {json_path}")


def _simulated(
    full: bool,
    model: str | None,
    method: list[str] | None,
    detector: list[str] | None,
    batch_size: int,
    max_frames: int | None,
    seconds: float | None,
    pool_frames: int | None,
    threads: int | None,
    device: str,
    precision: str,
    workdir: Path | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The benchmark of every method on simulated frames; prints and returns its report."""
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
    report = run_benchmark(config, workdir=workdir, progress=say)
    typer.echo(format_report(report))
    return report
