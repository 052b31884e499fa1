"""Training: Adam with exponential learning-rate decay, raw-frame augmentation
(:mod:`sfx_cnnhit.models.augment`), class weighting, validation every epoch, checkpoints and resume.

Training data is a source of batches as :mod:`sfx_cnnhit.models.inference` describes them.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn import functional

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.models.augment import AugmentConfig
from sfx_cnnhit.models.checkpoint import load_checkpoint, save_checkpoint
from sfx_cnnhit.models.inference import (
    Batch,
    BatchSource,
    batch_groups,
    batch_input,
    epoch_batches,
    predict_batches,
    resolve_device,
)
from sfx_cnnhit.models.metrics import evaluation_summary
from sfx_cnnhit.models.zoo import ModelSpec


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (see :data:`PRESETS`).

    Attributes:
        epochs: passes over the training data.
        batch_size: frames per batch (used by :class:`ArrayBatches` and the CLI's data sources).
        lr: initial learning rate of Adam.
        lr_gamma: learning-rate factor per epoch (``lr_epoch = lr * lr_gamma ** epoch``).
        weight_decay: Adam's L2 penalty.
        class_weights: loss weight per class, ``"balanced"`` (inverse frequency of the labels seen so
            far, updated every batch), or None (unweighted).
        label_smoothing: cross-entropy label smoothing.
        augment: raw-frame augmentation, or None.
        seed: seeds torch's RNG and the augmentation generator.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        channels_last: train in channels_last memory format (faster convolutions on CPU and GPU).
        freeze_batch_norm: keep batch norm in inference mode (its running statistics fixed) while the
            weights train: for fine-tuning on batches that each hold one detector, whose batch
            statistics would otherwise normalise away the differences inference must handle.
        mix_batches: source batches concatenated (after preprocessing) into one optimisation step.
            A file's batch holds one detector; mixing several shuffled ones gives batch norm the
            statistics of all detectors at once, as inference sees them. The CLI's data sources then
            read ``ceil(batch_size / mix_batches)`` frames per batch.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    lr_gamma: float = 0.9
    weight_decay: float = 1e-4
    class_weights: Sequence[float] | Literal["balanced"] | None = "balanced"
    label_smoothing: float = 0.0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    freeze_batch_norm: bool = False
    mix_batches: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or not 0 < self.lr_gamma <= 1:
            raise ConfigError("training: need epochs >= 1, batch_size >= 1, lr > 0 and 0 < lr_gamma <= 1")
        if not 1 <= self.mix_batches <= self.batch_size:
            raise ConfigError(f"training: mix_batches must lie in 1..batch_size, got {self.mix_batches}")
        if isinstance(self.class_weights, str):
            if self.class_weights != "balanced":
                raise ConfigError(f"training: class_weights must be 'balanced', a list or None: {self.class_weights!r}")
        elif self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (lists accepted for tuples, e.g. from JSON or YAML)."""
        values = dict(values)
        augment = values.pop("augment", None)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if augment is not None:
            unknown |= {f"augment.{k}" for k in set(augment) - set(AugmentConfig.__dataclass_fields__)}
        if unknown:
            raise ConfigError(f"training: unknown settings {sorted(unknown)}")
        if augment is not None:
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
            augment = AugmentConfig(**fields)
        return cls(**values, augment=augment)


PRESETS: dict[str, TrainConfig] = {
    "seed": TrainConfig(
        epochs=50, batch_size=128, lr=1e-5, lr_gamma=0.95, weight_decay=0.0, class_weights=None, augment=None
    ),
    "hitnet": TrainConfig(epochs=30, batch_size=64, lr=2e-3, lr_gamma=0.9, weight_decay=1e-4),
}


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: one dict per epoch (``epoch, lr, train_loss, seconds`` and, with validation data,
            ``val_loss, val_accuracy, val_hit_accuracy, val_hit_recall, val_miss_rejection``).
        best_epoch: epoch of the best validation accuracy (the last epoch without validation data).
        best_metrics: the :func:`~sfx_cnnhit.models.metrics.evaluation_summary` of that epoch.
        checkpoint: path of ``best.pt`` when a checkpoint folder was given.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, Any]
    checkpoint: Path | None = None


def _class_weights(config: TrainConfig, counts: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    if config.class_weights is None:
        return None
    if config.class_weights == "balanced":
        total, k = counts.sum(), counts.numel()
        return torch.where(counts > 0, total / (k * counts.clamp_min(1)), 1.0).to(device, torch.float32)
    weights = torch.as_tensor(list(config.class_weights), dtype=torch.float32, device=device)
    if weights.numel() != counts.numel():
        raise ConfigError(f"class_weights has {weights.numel()} entries for {counts.numel()} classes")
    return weights


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def train(
    model: nn.Module,
    spec: ModelSpec,
    train_data: BatchSource,
    *,
    val_data: BatchSource | None = None,
    config: TrainConfig | None = None,
    layout: PanelLayout | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: str | Path | None = None,
    recipe: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (built for ``spec``) with Adam and exponential learning-rate decay.

    Args:
        model: the network; moved to the training device and trained in place.
        spec: its spec (classes, preprocessing).
        train_data: batches (see the module docstring), or ``epoch -> batches``.
        val_data: validation batches evaluated after every epoch (no augmentation), or None.
        config: optimisation settings (default: ``PRESETS["hitnet"]``).
        layout: panel layout of raw frames (None: each slab is one image).
        checkpoint_dir: folder for ``last.pt`` (every epoch, with the training state for resuming)
            and ``best.pt`` (best validation accuracy, weights and metrics only; written after
            ``last.pt``, and again by a run resumed from it if a kill came in between).
        resume: a ``last.pt`` to continue from (same spec; its epochs count towards ``config.epochs``).
        recipe: training-data recipe stored in the checkpoints.
        progress: show a rich progress bar on stderr.
    """
    config = config or PRESETS["hitnet"]
    device = resolve_device(config.device)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    recipe = {**(recipe or {}), "train_config": config.to_dict()}
    state = _start(model, spec, config, device, resume=resume, ckpt_dir=ckpt_dir, recipe=recipe)

    with progress_bar(progress) as bar:
        for epoch in range(state.start, config.epochs):
            batches = epoch_batches(train_data, epoch)
            task = _epoch_task(bar, batches, train_data, epoch, config)
            t0 = time.perf_counter()
            loss_sum, n_seen = _fit_epoch(model, spec, batches, config, device, layout, state, bar, task)
            if n_seen == 0:
                raise InputError(f"training data yielded no frames in epoch {epoch + 1}")
            record: dict[str, Any] = {
                "epoch": epoch, "lr": state.scheduler.get_last_lr()[0], "train_loss": loss_sum / n_seen
            }
            state.scheduler.step()
            metrics, score = _validate_epoch(model, spec, val_data, epoch, layout, device, record)
            record["seconds"] = time.perf_counter() - t0
            state.history.append(record)
            info = f"loss {record['train_loss']:.4f}" + (
                f"  val acc {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
            )
            bar.update(task, info=info)
            if score > state.best:
                state.best, state.best_epoch, state.best_metrics = score, epoch, metrics
            if ckpt_dir is not None:
                _save_epoch(ckpt_dir, model, spec, recipe, epoch, metrics, state, device)
    return TrainResult(
        history=state.history,
        best_epoch=state.best_epoch,
        best_metrics=state.best_metrics,
        checkpoint=None if ckpt_dir is None else ckpt_dir / "best.pt",
    )


@dataclass
class _TrainingState:
    """What a training run carries from epoch to epoch (and ``last.pt`` saves for a resume)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # the augmentations' random numbers, on the training device
    counts: torch.Tensor  # (K,) float64 labels seen per class, for balanced class weights
    history: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[float, float] = (-math.inf, -math.inf)  # score of the best epoch (see _validate_epoch)
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    start: int = 0  # the first epoch to run


def _start(
    model: nn.Module,
    spec: ModelSpec,
    config: TrainConfig,
    device: torch.device,
    *,
    resume: str | Path | None,
    ckpt_dir: Path | None,
    recipe: dict[str, Any],
) -> _TrainingState:
    """Seed torch, move ``model`` to ``device`` and make its optimizer, scheduler and augmentation generator,
    restored from ``resume`` (a ``last.pt``) when given; writes ``best.pt`` again if a kill came before it."""
    torch.manual_seed(config.seed)
    # torch's stubs lack Module.to(device, memory_format=...), which it accepts at run time.
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    state = _TrainingState(optimizer, scheduler, generator, torch.zeros(spec.num_classes, dtype=torch.float64))
    if resume is not None:
        saved = _load_training_state(resume, model, spec, optimizer, scheduler, generator)
        state.counts, state.history, state.start = saved["class_counts"], saved["history"], saved["epoch"] + 1
        state.best, state.best_epoch = tuple(saved["best"]), saved["best_epoch"]
        state.best_metrics = saved["best_metrics"]
        if ckpt_dir is not None and state.best_epoch == saved["epoch"]:  # a kill may have come before best.pt
            _save_best(ckpt_dir, model, spec, recipe, state.best_epoch, state.best_metrics)
    return state


def _epoch_task(
    bar: Progress, batches: Iterable[Batch], train_data: BatchSource, epoch: int, config: TrainConfig
) -> TaskID:
    """The progress-bar task of one epoch; its total is the epoch's optimisation steps when the data has a length."""
    sized = batches if hasattr(batches, "__len__") else train_data
    total = math.ceil(len(cast(Sized, sized)) / config.mix_batches) if hasattr(sized, "__len__") else None
    return bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=total, info="")


def _fit_epoch(
    model: nn.Module,
    spec: ModelSpec,
    batches: Iterable[Batch],
    config: TrainConfig,
    device: torch.device,
    layout: PanelLayout | None,
    state: _TrainingState,
    bar: Progress,
    task: TaskID,
) -> tuple[float, int]:
    """One epoch of optimisation steps (``config.mix_batches`` source batches each, augmented); returns the
    sum of the per-frame losses and the number of frames."""
    loss_sum, n_seen = 0.0, 0
    model.train()
    if config.freeze_batch_norm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for group in batch_groups(batches, config.mix_batches):
        inputs = [
            batch_input(b, spec, device, layout=layout, augment_config=config.augment, generator=state.generator)
            for b in group
        ]
        x, y = (torch.cat(parts) for parts in zip(*inputs, strict=True)) if len(inputs) > 1 else inputs[0]
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        state.counts += torch.bincount(y.cpu(), minlength=spec.num_classes).double()
        loss = functional.cross_entropy(
            model(x), y, weight=_class_weights(config, state.counts, device), label_smoothing=config.label_smoothing
        )
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        loss_sum += float(loss.detach()) * y.numel()
        n_seen += y.numel()
        bar.update(task, advance=1, info=f"loss {loss_sum / n_seen:.4f}")
    return loss_sum, n_seen


def _validate_epoch(
    model: nn.Module,
    spec: ModelSpec,
    val_data: BatchSource | None,
    epoch: int,
    layout: PanelLayout | None,
    device: torch.device,
    record: dict[str, Any],
) -> tuple[dict[str, Any], tuple[float, float]]:
    """Evaluate an epoch on the validation data (its losses and rates added to ``record``): the metrics and
    the epoch's score, (accuracy, -loss); without validation data no metrics and (epoch, 0): the last is best."""
    if val_data is None:
        return {}, (float(epoch), 0.0)
    probs, labels = predict_batches(model, spec, epoch_batches(val_data, epoch), layout=layout, device=device)
    metrics = evaluation_summary(probs, labels, spec.class_names)
    p_true = np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0)
    record.update(
        val_loss=float(-np.log(p_true).mean()),
        val_accuracy=metrics["accuracy"],
        val_hit_accuracy=metrics["hit_accuracy"],
        val_hit_recall=metrics["hit_recall"],
        val_miss_rejection=metrics["miss_rejection"],
    )
    return metrics, (metrics["accuracy"] or 0.0, -record["val_loss"])


def _save_epoch(
    ckpt_dir: Path,
    model: nn.Module,
    spec: ModelSpec,
    recipe: dict[str, Any],
    epoch: int,
    metrics: dict[str, Any],
    state: _TrainingState,
    device: torch.device,
) -> None:
    """Write ``last.pt`` (weights, metrics and the training state to resume from) and, when ``epoch`` is the
    best so far, ``best.pt`` after it."""
    training = {
        "epoch": epoch,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "generator": state.generator.get_state(),
        "class_counts": state.counts.clone(),
        "history": state.history,
        "best": list(state.best),
        "best_epoch": state.best_epoch,
        "best_metrics": state.best_metrics,
    }
    save_checkpoint(ckpt_dir / "last.pt", model, spec, recipe=recipe, metrics=metrics, training=training)
    if state.best_epoch == epoch:  # after last.pt, which a resumed run uses to write it again
        _save_best(ckpt_dir, model, spec, recipe, epoch, metrics)

def _save_best(
    ckpt_dir: Path, model: nn.Module, spec: ModelSpec, recipe: dict[str, Any], epoch: int, metrics: dict[str, Any]
) -> None:
    """Write ``best.pt``: the weights of ``model`` after ``epoch``, the best so far, and its metrics."""
    save_checkpoint(ckpt_dir / "best.pt", model, spec, recipe=recipe, metrics={"epoch": epoch, **metrics})


def _load_training_state(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states from a ``last.pt``; returns its training dict."""
    ckpt = load_checkpoint(path)
    if ckpt.training is None:
        raise InputError(f"{path}: no training state to resume from (use the last.pt of a run)")
    if ckpt.spec != spec:
        raise ConfigError(f"{path}: was trained for {ckpt.spec.to_dict()}, not {spec.to_dict()}")
    state = ckpt.training
    model.load_state_dict(ckpt.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    generator.set_state(state["generator"])
    return state
