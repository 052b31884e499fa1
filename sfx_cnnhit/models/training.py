"""Training and batched prediction: Adam with exponential learning-rate decay, raw-frame augmentation,
class weighting, validation every epoch, checkpoints and resume.

Training data is any re-iterable of batches (or a callable ``epoch -> iterable``, e.g. a simulator
seeded by epoch). A batch is either

- ``(data, mask, labels)``: raw frames ``(n, ss, fs)``, mask (bool, True = good, ``(n, ss, fs)``,
  ``(ss, fs)`` or None) and int labels ``(n,)``: augmented (training only), then preprocessed with the
  model's :class:`~sfx_cnnhit.models.preprocess.PreprocessConfig`, on the training device;
- ``(data, mask, labels, layout)``: the same with the batch's own panel layout (mixed detectors); or
- ``(x, labels)``: already preprocessed ``(n, 1, S, S)`` inputs (no augmentation).

Labels are indices into the model's ``spec.class_names``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn import functional

from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.models.checkpoint import load_checkpoint, save_checkpoint
from sfx_cnnhit.models.metrics import evaluation_summary
from sfx_cnnhit.models.preprocess import MAD_TO_SIGMA, PanelLayout, preprocess
from sfx_cnnhit.models.zoo import ModelSpec

Batch = tuple[Any, Any] | tuple[Any, Any, Any] | tuple[Any, Any, Any, Any]
BatchSource = Iterable[Batch] | Callable[[int], Iterable[Batch]]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations of raw frames that mimic real detectors (applied before preprocessing).

    Attributes:
        gain_range: per-frame gain factor, log-uniform in this range (ADU per photon varies).
        pedestal_range: constant added per frame (frame units), uniform.
        read_noise_range: sigma of added Gaussian noise (frame units), uniform.
        p_flip: probability of flipping along ss, and independently along fs.
        p_rot90: probability of a 90 degree rotation (square frames only).
        p_gaps: probability of masking 1-4 random stripes (panel gaps, dead rows/columns) per frame.
        gap_width: stripe width range (pixels).
        p_mask_rect: probability of masking a random rectangle up to a quarter of the frame (shadows).
        p_hot: probability of 1-``max_hot`` unmasked hot pixels per frame, each ``hot_sigma`` (log-uniform)
            noise sigmas above the frame's median: from spot-like to saturated. Without them a network
            learns the hot-pixel count of the few detector instances it was trained on.
        max_hot: most hot pixels per frame.
        hot_sigma: range of hot-pixel heights in units of the frame's robust noise sigma.
        p_bad_values: probability that masked pixels carry NaN, inf or huge values (as real files do).
    """

    gain_range: tuple[float, float] = (0.5, 2.0)
    pedestal_range: tuple[float, float] = (-2.0, 10.0)
    read_noise_range: tuple[float, float] = (0.0, 1.0)
    p_flip: float = 0.5
    p_rot90: float = 0.5
    p_gaps: float = 0.3
    gap_width: tuple[int, int] = (1, 8)
    p_mask_rect: float = 0.2
    p_hot: float = 0.5
    max_hot: int = 30
    hot_sigma: tuple[float, float] = (5.0, 5000.0)
    p_bad_values: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.gain_range[0] <= self.gain_range[1]:
            raise ConfigError(f"augmentation: bad gain_range {self.gain_range}")
        if not 0 < self.hot_sigma[0] <= self.hot_sigma[1]:
            raise ConfigError(f"augmentation: bad hot_sigma {self.hot_sigma}")
        if self.gap_width[0] < 1 or self.gap_width[1] < self.gap_width[0] or self.max_hot < 1:
            raise ConfigError("augmentation: gap_width must be 1 <= lo <= hi and max_hot >= 1")
        probs = (self.p_flip, self.p_rot90, self.p_gaps, self.p_mask_rect, self.p_hot, self.p_bad_values)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ConfigError("augmentation: probabilities must be in [0, 1]")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _randint(lo: int, hi: int, gen: torch.Generator, device: torch.device) -> int:
    """A Python int in ``[lo, hi]``."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen, device=device).item())


def _robust_stats(values: torch.Tensor, good: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and robust sigma (1.4826 MAD, at least 1) of the good, finite ``values``."""
    v = values[good & torch.isfinite(values)]
    if v.numel() == 0:
        return values.new_tensor(0.0), values.new_tensor(1.0)
    med = v.median()
    return med, (MAD_TO_SIGMA * (v - med).abs().median()).clamp_min(1.0)


@torch.no_grad()
def augment(
    data: torch.Tensor, mask: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly perturb raw frames ``(n, ss, fs)`` float32 and masks (bool, same shape); inputs untouched.

    Returns new ``(data, mask)`` tensors on the inputs' device (``generator`` must live there too).
    """
    n, ss, fs = data.shape
    dev = data.device

    def chance(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=dev) < p

    lo, hi = (math.log(v) for v in config.gain_range)
    gain = torch.exp(_uniform(n, lo, hi, generator, dev))
    pedestal = _uniform(n, *config.pedestal_range, generator, dev)
    noise = _uniform(n, *config.read_noise_range, generator, dev)
    data = data * gain[:, None, None] + pedestal[:, None, None]
    data = data + noise[:, None, None] * torch.randn(data.shape, generator=generator, device=dev)
    mask = mask.clone()
    for dim in (1, 2):
        flip = chance(config.p_flip)[:, None, None]
        data = torch.where(flip, data.flip(dim), data)
        mask = torch.where(flip, mask.flip(dim), mask)
    if ss == fs:
        rot = chance(config.p_rot90)[:, None, None]
        data = torch.where(rot, data.rot90(1, (1, 2)), data)
        mask = torch.where(rot, mask.rot90(1, (1, 2)), mask)
    gaps, rects, hots = chance(config.p_gaps), chance(config.p_mask_rect), chance(config.p_hot)
    for i in range(n):
        if gaps[i]:
            for _ in range(_randint(1, 4, generator, dev)):
                width = _randint(*config.gap_width, generator, dev)
                if _randint(0, 1, generator, dev):
                    start = _randint(0, max(0, ss - width), generator, dev)
                    mask[i, start : start + width] = False
                else:
                    start = _randint(0, max(0, fs - width), generator, dev)
                    mask[i, :, start : start + width] = False
        if rects[i]:
            h, w = _randint(1, max(1, ss // 4), generator, dev), _randint(1, max(1, fs // 4), generator, dev)
            r0, c0 = _randint(0, ss - h, generator, dev), _randint(0, fs - w, generator, dev)
            mask[i, r0 : r0 + h, c0 : c0 + w] = False
        if hots[i]:
            k = _randint(1, config.max_hot, generator, dev)
            rows = torch.randint(0, ss, (k,), generator=generator, device=dev)
            cols = torch.randint(0, fs, (k,), generator=generator, device=dev)
            med, sigma = _robust_stats(data[i, ::4, ::4], mask[i, ::4, ::4])
            lo, hi = (math.log(v) for v in config.hot_sigma)
            data[i, rows, cols] = med + sigma * torch.exp(_uniform(k, lo, hi, generator, dev))
            mask[i, rows, cols] = True
    bad = chance(config.p_bad_values)[:, None, None] & ~mask
    values = torch.tensor([math.nan, math.inf, -math.inf, 1e30], device=dev)
    pick = torch.randint(0, 4, (n, 1, 1), generator=generator, device=dev)
    data = torch.where(bad, values[pick], data)
    return data, mask


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


#: ``seed``: the seed paper's settings (Adam from 1e-5, batch 128, 50 epochs; the paper gives no decay
#: rate, we use 0.95 per epoch, so the rate ends at 1e-5 * 0.95**49 = 8e-7), no augmentation, no class
#: weights. ``hitnet``: our default for HitNet from scratch, with augmentation and balanced classes.
#: Named augmentations (``sfx-cnnhit train --augment``). ``detector``: every effect at full strength.
#: ``label_safe``: the same effects, none of which can change a frame's label: no large masked
#: rectangles and only narrow gaps (they can hide the spots that make a weak frame a hit), a
#: narrower gain range and less read noise (they move spots across the 10-sigma line that defines
#: the classes), hot pixels and bad values as before. ``none``: raw frames.
AUGMENTATIONS: dict[str, AugmentConfig | None] = {
    "detector": AugmentConfig(),
    "label_safe": AugmentConfig(
        gain_range=(0.8, 1.25), read_noise_range=(0.0, 0.5), p_gaps=0.2, gap_width=(1, 4), p_mask_rect=0.0
    ),
    # label_safe with hot pixels only where no spot can be: 20 sigma and up, at most 5. Faint unmasked hot
    # pixels look exactly like 1-2 pixel Bragg spots (nanoBragg's, a sharp detector's), so training on many
    # of them in misses teaches the network to ignore compact spots.
    "spot_safe": AugmentConfig(
        gain_range=(0.8, 1.25), read_noise_range=(0.0, 0.5), p_gaps=0.2, gap_width=(1, 4), p_mask_rect=0.0,
        p_hot=0.3, max_hot=5, hot_sigma=(20.0, 5000.0),
    ),
    "none": None,
}

PRESETS: dict[str, TrainConfig] = {
    "seed": TrainConfig(
        epochs=50, batch_size=128, lr=1e-5, lr_gamma=0.95, weight_decay=0.0, class_weights=None, augment=None
    ),
    "hitnet": TrainConfig(epochs=30, batch_size=64, lr=2e-3, lr_gamma=0.9, weight_decay=1e-4),
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ArrayBatches:
    """Re-iterable batches over in-memory frames, shuffled differently (and reproducibly) each epoch.

    Args:
        data: ``(n, ss, fs)`` raw frames, or ``(n, 1, S, S)`` preprocessed inputs.
        labels: ``(n,)`` int labels.
        mask: raw frames only: bool ``(n, ss, fs)`` or ``(ss, fs)``, True = good; None = all good.
        batch_size: frames per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch with seed ``(seed, epoch)``; call :meth:`for_epoch`.
    """

    def __init__(
        self,
        data: Any,
        labels: Any,
        mask: Any = None,
        *,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.data = torch.as_tensor(data)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.mask = None if mask is None else torch.as_tensor(mask)
        if self.data.shape[0] != self.labels.shape[0]:
            raise InputError(f"{self.data.shape[0]} frames but {self.labels.shape[0]} labels")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.raw = self.data.ndim == 3

    def __len__(self) -> int:
        return math.ceil(self.labels.shape[0] / self.batch_size)

    def for_epoch(self, epoch: int) -> Iterator[Batch]:
        n = self.labels.shape[0]
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            if not self.raw:
                yield self.data[idx], self.labels[idx]
            else:
                mask = self.mask if self.mask is None or self.mask.ndim == 2 else self.mask[idx]
                yield self.data[idx], mask, self.labels[idx]

    def __iter__(self) -> Iterator[Batch]:
        return self.for_epoch(0)

    def __call__(self, epoch: int) -> Iterator[Batch]:
        return self.for_epoch(epoch)


def _batches(source: BatchSource, epoch: int) -> Iterable[Batch]:
    return source(epoch) if callable(source) else source


def _groups(batches: Iterable[Batch], n: int) -> Iterator[list[Batch]]:
    """Consecutive groups of ``n`` batches (the last may be shorter)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def batch_input(
    batch: Batch,
    spec: ModelSpec,
    device: torch.device,
    *,
    layout: PanelLayout | None,
    augment_config: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as network input ``(n, 1, S, S)`` and labels ``(n,)`` on ``device``."""
    if len(batch) == 2:
        x, labels = batch
        x = torch.as_tensor(x).to(device, torch.float32)
        if x.ndim != 4 or x.shape[1] != 1:
            raise InputError(f"preprocessed batch must be (n, 1, S, S), got {tuple(x.shape)}")
    elif len(batch) in (3, 4):
        data, mask, labels = batch[:3]
        if len(batch) == 4:  # a batch that carries its own panel layout (mixed-detector data)
            layout = batch[3]
        data = torch.as_tensor(data).to(device, torch.float32)
        if data.ndim != 3:
            raise InputError(f"raw batch must be (n, ss, fs) frames, got {tuple(data.shape)}")
        mask = None if mask is None else torch.as_tensor(mask).to(device).bool()
        if augment_config is not None and generator is not None:
            full = torch.ones_like(data, dtype=torch.bool) if mask is None else mask.expand_as(data)
            data, mask = augment(data, full, augment_config, generator)
        x = preprocess(data, mask, spec.preprocess, layout)
    else:
        raise InputError(f"a batch is (x, labels) or (data, mask, labels[, layout]), got {len(batch)} items")
    labels = torch.as_tensor(labels).to(device, torch.long).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise InputError(f"batch has {x.shape[0]} frames but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise InputError(f"labels must be in 0..{spec.num_classes - 1} ({', '.join(spec.class_names)})")
    return x, labels


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    spec: ModelSpec,
    batches: Iterable[Batch],
    *,
    layout: PanelLayout | None = None,
    device: str | torch.device | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Class probabilities ``(n, K)`` and labels ``(n,)`` of labelled batches, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    dev = resolve_device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for batch in batches:
            x, y = batch_input(batch, spec, dev, layout=layout)
            probs.append(torch.softmax(model(x).float(), dim=1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros((0, spec.num_classes), np.float32), np.zeros(0, np.int64)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    spec: ModelSpec,
    data: Any,
    mask: Any = None,
    *,
    layout: PanelLayout | None = None,
    batch_size: int = 32,
) -> NDArray[np.float32]:
    """Class probabilities ``(n, K)`` of raw frames ``(n, ss, fs)`` (mask: True = good), in eval mode."""
    dev = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, data.shape[0], batch_size):
        m = mask if mask is None or mask.ndim == 2 else mask[i : i + batch_size]
        x = preprocess(data[i : i + batch_size], m, spec.preprocess, layout).to(dev)
        out.append(torch.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, spec.num_classes), np.float32)


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
            batches = _batches(train_data, epoch)
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
    for group in _groups(batches, config.mix_batches):
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
    probs, labels = predict_batches(model, spec, _batches(val_data, epoch), layout=layout, device=device)
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
