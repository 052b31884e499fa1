"""`sfx-cnnhit train`: train a zoo CNN on simulated or labelled frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from sfx_cnnhit.cli.common import console, handle_errors
from sfx_cnnhit.cli.inputs import LabelledGeometry

TrainFiles = Annotated[list[Path] | None, typer.Argument(help="Labelled CXI/HDF5 files (e.g. from simulate).")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.pt).")]
ValFiles = Annotated[list[Path] | None, typer.Option("--val", help="Labelled validation file(s).")]
Labels = Annotated[
    str, typer.Option("--labels", help="Label dataset in each file (/truth/label, /truth/hit) or a CSV.")
]
Simulate = Annotated[int | None, typer.Option("--simulate", help="Also simulate this many fresh frames every epoch.")]
SimulateDetector = Annotated[
    list[str] | None,
    typer.Option(
        "--simulate-detector",
        help="Detector of the simulated frames, NAME or NAME:SIZE as in simulate -d/--size (repeat to "
        "share the frames among several; default square512).",
    ),
]
SimulateConfig = Annotated[
    Path | None,
    typer.Option(
        "--simulate-config",
        help="Simulation settings of --simulate (as simulate --config: a JSON/YAML file or a shipped "
        "name such as randomised); default: the simulator's defaults.",
    ),
]
Workers = Annotated[int, typer.Option("--workers", "-j", min=1, help="Simulator processes for --simulate.")]
TaskOption = Annotated[Literal["fiveclass", "hitmiss"], typer.Option("--task")]
Background = Annotated[
    Literal["local", "panel", "hybrid", "global"] | None,
    typer.Option(
        "--background",
        help="Input normalisation: local (background and noise per 32-pixel cell; train's default), panel (the "
        "same within each detector panel; train-spots' default for hit/miss), hybrid (local plus the smooth "
        "background's shape: water rings; for five classes) or global (one median and MAD per frame).",
    ),
]
Arch = Annotated[str, typer.Option("--arch", help="Zoo model: hitnet, alexnet, resnet18/50/101.")]
Preset = Annotated[str, typer.Option("--preset", help="hitnet (ours) or seed (the paper's).")]
Epochs = Annotated[int | None, typer.Option("--epochs")]
TrainBatchSize = Annotated[int | None, typer.Option("--batch-size")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Initial learning rate of Adam.")]
LearningRateGamma = Annotated[float | None, typer.Option("--lr-gamma", help="Learning-rate decay per epoch.")]
Seed = Annotated[int | None, typer.Option("--seed")]
TrainDevice = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda ...")]
MaxFrames = Annotated[int | None, typer.Option("--max-frames", help="Use at most this many per file.")]
Workdir = Annotated[Path | None, typer.Option("--workdir", help="Folder of last.pt/best.pt (default OUTPUT.work).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from WORKDIR/last.pt if there is one (else start).")]
Init = Annotated[Path | None, typer.Option("--init", help="Start from this checkpoint's weights (fine-tuning).")]
FreezeBatchNorm = Annotated[
    bool, typer.Option("--freeze-bn", help="Keep batch-norm statistics fixed (fine-tuning across detectors).")
]
Mix = Annotated[
    int | None,
    typer.Option(
        "--mix", min=1,
        help="Batches of different files (detectors) mixed into each step, so batch norm sees them all.",
    ),
]
Augment = Annotated[
    Literal["detector", "label_safe", "spot_safe", "none"] | None,
    typer.Option(
        "--augment",
        help="Augmentation (default: the preset's): detector (all effects), label_safe (none that can "
        "change a label), spot_safe (label_safe with only bright hot pixels, none spot-like), none.",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("train")
    @handle_errors
    def train(
        data: TrainFiles = None,
        output: Output = Path("model.pt"),
        val: ValFiles = None,
        labels: Labels = "/truth/label",
        simulate: Simulate = None,
        simulate_detector: SimulateDetector = None,
        simulate_config: SimulateConfig = None,
        workers: Workers = 1,
        task: TaskOption = "fiveclass",
        background: Background = None,
        arch: Arch = "hitnet",
        preset: Preset = "hitnet",
        epochs: Epochs = None,
        batch_size: TrainBatchSize = None,
        lr: LearningRate = None,
        lr_gamma: LearningRateGamma = None,
        seed: Seed = None,
        device: TrainDevice = None,
        max_frames: MaxFrames = None,
        geometry: LabelledGeometry = None,
        workdir: Workdir = None,
        resume: Resume = False,
        init: Init = None,
        freeze_bn: FreezeBatchNorm = False,
        mix: Mix = None,
        augment: Augment = None,
    ) -> None:
        """Train a CNN (Adam, exponential lr decay, augmentation, class weighting, validation per epoch).

        The checkpoint holds the architecture, classes, preprocessing, data recipe, code version,
        metrics and the validation scores that `reduce --target-hit-recall` uses.
        """
        from sfx_cnnhit.cli.simulate import detector_config, load_config
        from sfx_cnnhit.models.augment import AUGMENTATIONS
        from sfx_cnnhit.models.fit import fit

        overrides: dict[str, Any] = {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "lr_gamma": lr_gamma, "seed": seed, "device": device,
            "freeze_batch_norm": freeze_bn or None, "mix_batches": mix,
        }
        if augment is not None:
            overrides["augment"] = AUGMENTATIONS[augment]

        base = load_config(simulate_config)
        path, result = fit(
            output=output,
            train_files=[str(p) for p in data or []],
            simulate_per_epoch=simulate,
            simulate_configs=[detector_config(d, base) for d in simulate_detector or ["square512"]],
            workers=workers,
            val_files=[str(p) for p in val or []],
            labels=labels,
            task=task,
            arch=arch,
            preset=preset,
            overrides=overrides,
            init=init,
            workdir=workdir,
            resume=resume,
            max_frames=max_frames,
            geometry=geometry,
            preprocess=None if background is None else {"background": background},
        )
        best = result.history[result.best_epoch] if result.best_epoch >= 0 else {}
        console.print(f"wrote {path} (best epoch {result.best_epoch + 1}: "
                      + ", ".join(f"{k} {v:.4g}" for k, v in best.items() if isinstance(v, float)) + ")")
