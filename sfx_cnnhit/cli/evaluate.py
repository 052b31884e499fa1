"""`sfx-cnnhit evaluate`: accuracy, confusion matrices in the seed's Table 3/5 forms, ROC/PR, threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import HotPixelMap, LabelledGeometry
from sfx_cnnhit.io.atomic import check_output_path, make_output_folder, write_text_atomic
from sfx_cnnhit.io.hdf5 import open_hdf5


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    @handle_errors
    def evaluate(
        data: Annotated[list[Path], typer.Argument(help="Labelled CXI/HDF5 files.")],
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Checkpoint or shipped model (default: shipped).")
        ] = None,
        labels: Annotated[
            str, typer.Option("--labels", help="/truth/label (five classes), /truth/hit (hit/miss) or a CSV.")
        ] = "/truth/label",
        target_hit_recall: Annotated[
            float, typer.Option("--target-hit-recall", help="Hit recall the threshold chooser must keep.")
        ] = 0.995,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON.")] = None,
        plots: Annotated[Path | None, typer.Option("--plots", help="Folder for ROC/PR curves (PNG).")] = None,
        max_frames: Annotated[int | None, typer.Option("--max-frames", help="At most this many per file.")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
        geometry: LabelledGeometry = None,
        hot_pixel_map: HotPixelMap = True,
    ) -> None:
        """Evaluate a model on labelled frames (simulated files carry /truth/label and /truth/hit)."""
        from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS
        from sfx_cnnhit.models.fit import evaluate_files
        from sfx_cnnhit.models.metrics import format_table5, plot_curves

        for path in data:  # one line for a file HDF5 cannot open (the label reader would raise OSError)
            open_hdf5(path).close()
        if json_out is not None:  # refused before the evaluation, not after it
            check_output_path(json_out, protect=data)
        if plots is not None:
            make_output_folder(plots)
        summary, p_hit, is_hit, spec = evaluate_files(
            [str(p) for p in data],
            model=model,
            labels=labels,
            target_hit_recall=target_hit_recall,
            batch_size=batch_size,
            max_frames=max_frames,
            geometry=geometry,
            hot_pixels=DEFAULT_HOT_PIXELS if hot_pixel_map else None,
        )
        summary["model"] = model or "default"
        console.print(f"[bold]{spec.name}[/bold] ({spec.task}) on {summary['n_frames']} frames")
        console.print(summary["table3"])
        console.print(f"accuracy {summary['accuracy']:.4f}")
        if "three_way_accuracy" in summary:
            console.print(
                f"blank / no crystal / hit accuracy {summary['three_way_accuracy']:.4f} (hit: P(hit) >= threshold); "
                f"confusion {summary['three_way_confusion_matrix']}"
            )
        if summary.get("roc_auc") is not None:
            console.print(f"hit/miss ROC AUC {summary['roc_auc']:.4f}")
        console.print("hit/miss (rows: true hit, miss; columns: predicted hit, miss; %):")
        console.print(format_table5(summary["hit_confusion_percent"]))
        console.print(
            f"at the model's hit threshold {_thresholds(summary['hit_threshold'])}: "
            f"hit accuracy {summary['hit_accuracy']:.4f}, "
            f"hit recall {summary['hit_recall']:.4f}, miss rejection {summary['miss_rejection']:.4f}"
        )
        choice = summary["threshold"]
        if choice:
            console.print(
                f"threshold for hit recall >= {choice['target_recall']}: {choice['threshold']:.4g} keeps "
                f"{100 * choice['hit_recall']:.2f} % of hits, rejects {100 * choice['miss_rejection']:.2f} % of "
                f"misses, data reduction {choice['data_reduction']:.1f}x"
            )
        if plots is not None:
            summary["plots"] = str(plot_curves(is_hit, p_hit, plots / "roc_pr.png", title=spec.name))
            console.print(f"ROC/PR curves: {summary['plots']}")
        if json_out is not None:
            write_text_atomic(json_out, json.dumps(summary, indent=2) + "\n", protect=[str(p) for p in data])


def _thresholds(value: float | list[float]) -> str:
    """The summary's hit threshold, or its distinct thresholds (files of binned and unbinned frames)."""
    if isinstance(value, list):
        return " / ".join(f"{v:.4g}" for v in value) + " (each file's: binned and unbinned frames have their own)"
    return f"{value:.4g}"
