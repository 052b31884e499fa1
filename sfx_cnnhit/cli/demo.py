"""`sfx-cnnhit demo`: the embedded default run (shipped model on a freshly simulated run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.cli.common import console, frame_progress, handle_errors
from sfx_cnnhit.cli.summary import print_summary


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo(
        folder: Annotated[Path, typer.Option("--output", "-o", help="Folder for everything.")] = Path(
            "sfx_cnnhit_demo"
        ),
        n_frames: Annotated[int, typer.Option("--n-frames", "-n", min=10, help="Frames to simulate.")] = 300,
        hit_rate: Annotated[float, typer.Option("--hit-rate", help="Share of hits in the run.")] = 0.1,
        seed: Annotated[int, typer.Option("--seed")] = 2026,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint (default: shipped).")] = None,
    ) -> None:
        """Simulate a small run, reduce it with the shipped model and show a few hits with heat maps."""
        from sfx_cnnhit.pipeline.demo import run_demo

        with frame_progress("demo") as update:
            result = run_demo(folder, n_frames=n_frames, hit_rate=hit_rate, seed=seed, model=model, progress=update)
        print_summary(result.summary, console)
        console.print(
            f"Against the simulator's ground truth: {result.found_true_hits} of {result.true_hits} true hits "
            f"kept, {result.false_hits} misses kept."
        )
        console.print(f"Simulated run (ground truth under /truth): {result.run}")
        if result.figure:
            console.print(f"Look at a few hits with their Grad-CAM maps and peaks: [bold]{result.figure}[/bold]")
