"""Training SpotNet: the spot head against true Bragg-spot masks, then the count head on frame labels.

Two stages, both on our simulator's frames (files with ``/truth/bragg_mask`` and ``/truth/hit``):

1. :func:`train_spot_head`: per-pixel binary cross-entropy of the spot logits against the Bragg mask
   mapped onto the spot map's grid (:func:`~sfx_cnnhit.models.preprocess.input_map`, then 2x2 max),
   on random crops of the preprocessed frames, rotated and flipped, with extra one-bin hot pixels
   (spikes labelled "no spot"); the raw frames are perturbed once with :func:`augment` (gain,
   pedestal, noise, masked stripes and shadows, hot pixels).
2. :func:`fit_count_head`: the linear head from ``log(1 + nSpots)`` (five classes: and the diffuse
   contrast; with ``peak_snr``: and the bright-peak counts) to the classes, by logistic regression on
   validation frames (the spot head frozen).

Inputs are preprocessed once and kept as float16 (``2 S^2`` bytes a frame: 0.5 MiB at 512).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn import functional

from sfx_cnnhit.errors import ConfigError, InputError, OutputError
from sfx_cnnhit.io.hdf5 import open_hdf5
from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS, HotPixelRule
from sfx_cnnhit.models.augment import AUGMENTATIONS, AugmentConfig, augment
from sfx_cnnhit.models.checkpoint import save_checkpoint
from sfx_cnnhit.models.data import HITMISS, LabelledFrames
from sfx_cnnhit.models.fit import data_recipe, validate_and_calibrate
from sfx_cnnhit.models.inference import Batch, batch_input
from sfx_cnnhit.models.preprocess import Background, input_map, preprocess
from sfx_cnnhit.models.spotnet import SpotNet
from sfx_cnnhit.models.tasks import Task
from sfx_cnnhit.models.training import progress_bar
from sfx_cnnhit.models.zoo import ModelSpec, build_model, create_model

#: Raw-frame augmentation of the spot head: ``spot_safe`` without flips and rotations (the crops
#: are flipped and rotated instead, together with their targets).
SPOT_AUGMENT = replace(cast(AugmentConfig, AUGMENTATIONS["spot_safe"]), p_flip=0.0, p_rot90=0.0)  # never None


@dataclass
class SpotSet:
    """Preprocessed frames with spot targets and hit labels.

    Attributes:
        inputs: float16 ``(n, 1, S, S)`` network inputs.
        targets: bool ``(n, 1, S/k, S/k)``: a Bragg-spot pixel in the ``k x k`` input bins (good pixels
            only; ``k``: :attr:`stride`).
        labels: int64 ``(n,)`` class indices of the frames (the model's classes).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def stride(self) -> int:
        """Input pixels per spot-map cell along each axis."""
        return self.inputs.shape[-1] // self.targets.shape[-1]


def _scaled(z: float, scaling: str) -> float:
    """A z-score as the network input shows it (:func:`~sfx_cnnhit.models.preprocess.preprocess`)."""
    return {"log": math.log1p(z), "asinh": math.asinh(z)}.get(scaling, z)


def _bragg_mask(path: str, dataset: str, index: np.ndarray) -> np.ndarray:
    """Bool ``(n, ss, fs)``: the true Bragg-spot mask of frames ``index`` (increasing) of ``path``."""
    with open_hdf5(path) as h5:
        if dataset not in h5:
            raise InputError(f"{path}: no Bragg-spot mask {dataset} (files from `sfx-cnnhit simulate` have one)")
        truth = h5[dataset]
        if len(index) and np.all(np.diff(index) == 1):
            return np.asarray(truth[int(index[0]) : int(index[-1]) + 1], bool)
        return np.asarray(truth[np.asarray(index)], bool)


def load_spot_set(
    paths: Sequence[str | os.PathLike[str]],
    spec: ModelSpec,
    *,
    bragg_mask: str = "/truth/bragg_mask",
    labels: str | None = None,
    augment_seed: int | None = 0,
    max_frames: int | None = None,
    min_sigma: float = 3.0,
    stride: int = 2,
    batch_size: int = 32,
    hot_pixels: HotPixelRule | None = None,
    augment_config: AugmentConfig = SPOT_AUGMENT,
    progress: bool = True,
) -> SpotSet:
    """Read, augment (``augment_seed``; None: no augmentation) and preprocess frames with their targets.

    ``labels``: the label dataset (default ``/truth/hit`` for hit/miss models, else ``/truth/label``).
    ``min_sigma``: a Bragg bin is a target only where the input shows it at least this many noise sigmas
    above the local background (0: every Bragg bin), so the head learns visible spots, not guesses at
    invisible ones (which it would then also "see" in noise). ``stride``: input pixels per spot-map cell
    (the model's :attr:`~sfx_cnnhit.models.spotnet.SpotNet.stride`). ``hot_pixels``: mask each file's
    static hot pixels as the commands read frames (:mod:`sfx_cnnhit.io.hotpixels`); None: leave them, as
    lone bright "no spot" pixels. ``augment_config``: the raw-frame perturbation.

    Raises:
        ConfigError: ``stride`` does not divide the input size.
        InputError: a file without the ``bragg_mask`` dataset, or one whose shape is not the frames'.
    """
    labels = labels or ("/truth/hit" if spec.class_names == HITMISS else "/truth/label")
    frames = LabelledFrames(
        paths, labels, class_names=spec.class_names, batch_size=batch_size, shuffle=False, max_frames=max_frames,
        hot_pixels=hot_pixels,
    )
    S = spec.input_size
    n = frames.n_frames
    inputs = torch.empty((n, 1, S, S), dtype=torch.float16)
    if stride < 1 or S % stride:
        raise ConfigError(f"spot targets: stride {stride} must divide the input size {S}")
    targets = torch.empty((n, 1, S // stride, S // stride), dtype=torch.bool)
    classes = torch.empty(n, dtype=torch.long)
    gen = None if augment_seed is None else torch.Generator().manual_seed(augment_seed)
    i = 0
    with progress_bar(progress) as bar:
        task = bar.add_task("reading frames and spot targets", total=n, info="")
        for source, layout, size in zip(frames.sources, frames.layouts, frames.sizes, strict=True):
            for batch in source.batches(batch_size, stop=size):
                spots = _bragg_mask(batch.source_file, bragg_mask, batch.source_index)
                if spots.shape != batch.data.shape:
                    raise InputError(f"{batch.source_file}: {bragg_mask} shape {spots.shape} is not the frames'")
                data, mask = torch.from_numpy(batch.data), torch.from_numpy(batch.mask)
                if gen is not None:
                    data, mask = augment(data, mask, augment_config, gen)
                j = i + len(batch)
                x = preprocess(data, mask, spec.preprocess, layout)
                inputs[i:j] = x.half()
                spot_map = input_map(torch.from_numpy(spots) & mask, spec.preprocess, layout)[:, None]
                if min_sigma > 0:
                    spot_map = spot_map * (x >= _scaled(min_sigma, spec.preprocess.scaling))
                targets[i:j, 0] = functional.max_pool2d(spot_map, stride)[:, 0] > 0
                classes[i:j] = frames.targets(batch)
                i = j
                bar.advance(task, len(batch))
    return SpotSet(inputs[:i], targets[:i], classes[:i])


@dataclass(frozen=True)
class SpotTrainConfig:
    """Settings of :func:`train_spot_head`.

    Attributes:
        steps: optimizer steps.
        batch_size: crops per step.
        crop: crop side (network-input pixels; even).
        lr: peak learning rate (AdamW, one-cycle schedule).
        weight_decay: AdamW weight decay.
        pos_weight: weight of spot pixels in the cross-entropy (spots are rare).
        hot_pixels: at most this many one-bin spikes (3 to ``spike_max_sigma`` sigma, log-uniform) added to
            each crop, labelled no spot.
        spike_max_sigma: the brightest spike; brighter lone peaks are left to be learned as spots (static hot
            pixels are masked by the run-level hot-pixel map, :mod:`sfx_cnnhit.io.hotpixels`).
        augment: perturb the raw frames once with :data:`SPOT_AUGMENT` before preprocessing.
        augment_hot: let that perturbation add unmasked hot pixels (20 sigma and up, labelled no spot).
        hot_pixel_map: read the training frames with the run-level hot-pixel map, as the commands read
            frames: the simulator's static hot pixels are masked, not taught as "no spot". Lone bright
            pixels are then only ever spots or spikes, so compact one- or two-pixel spots (nanoBragg's)
            are learned as spots.
        seed: raw-frame augmentation, crop positions, flips and spikes.
    """

    steps: int = 24000
    batch_size: int = 32
    crop: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pos_weight: float = 3.0
    hot_pixels: int = 4
    spike_max_sigma: float = 300.0
    augment: bool = True
    augment_hot: bool = True
    hot_pixel_map: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.crop < 8 or self.crop % 2:
            raise ConfigError("spot training: steps and batch_size must be >= 1, crop even and >= 8")
        if not self.spike_max_sigma > 3.0:
            raise ConfigError(f"spot training: spike_max_sigma must exceed 3, got {self.spike_max_sigma}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _crops(data: SpotSet, config: SpotTrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random, randomly rotated and flipped crops: inputs ``(b, 1, c, c)``, targets ``(b, 1, c/k, c/k)``."""
    S, c, k = data.inputs.shape[-1], config.crop, data.stride
    if c > S or c % k:
        raise ConfigError(f"spot training: crop {c} must be a multiple of the spot-map cell {k}, at most the input {S}")
    idx = torch.randint(0, len(data), (config.batch_size,), generator=gen)
    # Offsets in whole cells keep the k x k bins of the spot map aligned with the crop.
    rows = k * torch.randint(0, (S - c) // k + 1, (config.batch_size,), generator=gen)
    cols = k * torch.randint(0, (S - c) // k + 1, (config.batch_size,), generator=gen)
    xs, ys = [], []
    for i, r, q in zip(idx.tolist(), rows.tolist(), cols.tolist(), strict=True):
        x = data.inputs[i, :, r : r + c, q : q + c].float()
        y = data.targets[i, :, r // k : (r + c) // k, q // k : (q + c) // k].float()
        turns = int(torch.randint(0, 4, (1,), generator=gen))
        x, y = x.rot90(turns, (1, 2)), y.rot90(turns, (1, 2))
        if torch.rand(1, generator=gen) < 0.5:
            x, y = x.flip(2), y.flip(2)
        n_hot = int(torch.randint(0, config.hot_pixels + 1, (1,), generator=gen))
        if n_hot:
            at = torch.randint(0, c, (2, n_hot), generator=gen)
            z = 3.0 * (config.spike_max_sigma / 3.0) ** torch.rand(n_hot, generator=gen)  # log-uniform
            x = x.clone()
            x[0, at[0], at[1]] = torch.log1p(z)  # the "log" scaling of a z-score
            y = y.clone()
            y[0, at[0] // k, at[1] // k] = 0.0
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def train_spot_head(model: SpotNet, data: SpotSet, config: SpotTrainConfig, *, progress: bool = True) -> list[float]:
    """Train ``model.spots`` in place (CPU); returns the mean loss of every 100 steps."""
    if not isinstance(model, SpotNet):
        raise ConfigError("train_spot_head needs a SpotNet")
    gen = torch.Generator().manual_seed(config.seed)
    params = list(model.spots.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps)
    pos_weight = torch.tensor(config.pos_weight)
    model.train()
    losses, running = [], 0.0
    with progress_bar(progress) as bar:
        task = bar.add_task("training the spot head", total=config.steps, info="")
        for step in range(config.steps):
            x, y = _crops(data, config, gen)
            loss = functional.binary_cross_entropy_with_logits(model.spot_logits(x), y, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            if (step + 1) % 100 == 0 or step + 1 == config.steps:
                losses.append(running / ((step % 100) + 1))
                running = 0.0
                bar.update(task, info=f"loss {losses[-1]:.4f}")
            bar.advance(task)
    model.eval()
    return losses


def _check_peak_snr(spec: ModelSpec, peak_snr: Sequence[float]) -> tuple[float, ...]:
    snr = tuple(float(v) for v in peak_snr)
    if snr and spec.preprocess.scaling != "log":
        raise ConfigError(f"bright-peak counts need log-scaled inputs, this model's are {spec.preprocess.scaling!r}")
    if any(not v > 0 for v in snr):
        raise ConfigError(f"bright-peak SNR levels must be positive, got {list(snr)}")
    return snr


def with_lone_pixel_snr(model: SpotNet, spec: ModelSpec, snr: float | None) -> tuple[SpotNet, ModelSpec]:
    """The same network (every weight kept) counting no spot that is a lone pixel of z ``snr`` or more
    (:class:`~sfx_cnnhit.models.spotnet.SpotCount`; None or 0: count them), and its spec."""
    if snr and spec.preprocess.scaling != "log":
        raise ConfigError(f"the lone-pixel rule needs log-scaled inputs, this model's are {spec.preprocess.scaling!r}")
    pair = float(spec.arch_kwargs.get("peak_second_snr", 2.5))
    if snr and not snr > pair:
        raise ConfigError(f"--lone-pixel-snr must be above the second pixel's z-score {pair:g}, got {snr:g}")
    spec = replace(spec, arch_kwargs={**spec.arch_kwargs, "lone_pixel_snr": float(snr) if snr else None})
    new = cast(SpotNet, build_model(spec))  # the same SpotNet architecture and parameters
    new.load_state_dict(model.state_dict())
    return new.eval(), spec


def with_peak_snr(model: SpotNet, spec: ModelSpec, peak_snr: Sequence[float]) -> tuple[SpotNet, ModelSpec]:
    """The same spot head with bright-peak counts at ``peak_snr`` (empty: none) as head inputs, and its
    spec; the count head is new (zero weights): refit it (:func:`fit_count_head`)."""
    spec = replace(spec, arch_kwargs={**spec.arch_kwargs, "peak_snr": _check_peak_snr(spec, peak_snr)})
    new = cast(SpotNet, build_model(spec))  # the same SpotNet architecture
    spots = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    new.load_state_dict({**new.state_dict(), **spots})
    return new.eval(), spec


@torch.no_grad()
def frame_features(model: SpotNet, spec: ModelSpec, frames: Iterable[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's inputs ``(n, f)`` and the labels ``(n,)`` of labelled raw batches (model in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    features, labels = [], []
    for batch in frames:
        x, y = batch_input(batch, spec, device, layout=None)
        features.append(model.features(x).cpu())
        labels.append(y.cpu())
    if not features:
        raise InputError("fitting the spot-count head needs validation frames")
    return torch.cat(features), torch.cat(labels)


def fit_count_head(
    model: SpotNet, features: torch.Tensor, labels: torch.Tensor, *, l2: float = 1e-5, peak_l2: float = 1e-3
) -> dict[str, Any]:
    """Fit the linear head on the head inputs ``features`` ``(n, f)`` of frames of class ``labels``
    ``(n,)`` (the spot head frozen), in place: multinomial logistic regression of the classes on
    ``log(1 + nSpots)`` (and the diffuse contrast and the bright-peak counts), L2 ``l2`` on the
    weights (``peak_l2`` on those of the bright-peak counts: their misses and hits barely overlap on
    validation frames, and ``1e-5`` let a single maximum of z 15 make a hit; docs/models.md, session
    16). The penalty ``l2`` is weak on purpose: the diffuse contrast of a blank frame spans about
    0.038-0.047 and a frame with any water starts above it, a boundary only a large weight can draw
    (``l2 = 1e-3`` put it at 0.24 and called 7 of nanoBragg's 40 no-crystal frames blank; ``1e-5``:
    0.12 and none; docs/models.md).

    Returns the weights and biases, the spot count at P(hit) = 0.5 (hit/miss; with every other input 0)
    and the fit's accuracy.
    """
    f, y = features.double(), labels.long()
    k = model.head.out_features
    if len(torch.unique(y)) < 2:
        raise InputError("fitting the spot-count head needs validation frames of at least two classes")
    weight = torch.zeros((k, f.shape[1]), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")
    n_peaks = 0 if model.peaks is None else len(model.peaks.snr)  # the last inputs (SpotNet.features)
    penalty = torch.tensor([l2] * (f.shape[1] - n_peaks) + [peak_l2] * n_peaks, dtype=torch.float64)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = functional.cross_entropy(f @ weight.T + bias, y) + (penalty * weight.square()).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weight, bias = weight.detach(), bias.detach()
    with torch.no_grad():
        model.head.weight.copy_(weight.float())
        model.head.bias.copy_(bias.float())
        accuracy = float(((f @ weight.T + bias).argmax(1) == y).double().mean())
    out: dict[str, Any] = {"weight": weight.tolist(), "bias": bias.tolist(), "val_accuracy": accuracy}
    if k == 2:
        slope, intercept = float(weight[1, 0] - weight[0, 0]), float(bias[1] - bias[0])
        if not slope > 0:
            raise InputError(f"the spot count does not separate hits from misses (slope {slope:.3g})")
        out["spots_at_half"] = math.expm1(-intercept / slope)
    return out


@torch.no_grad()
def spot_map_scores(model: SpotNet, data: SpotSet, batch_size: int = 32) -> dict[str, float]:
    """Pixel precision and recall of the spot map (P(spot) > 0.5) against the targets of ``data``."""
    model.eval()
    tp = fp = fn = 0
    for i in range(0, len(data), batch_size):
        pred = model.spot_logits(data.inputs[i : i + batch_size].float()) > 0
        truth = data.targets[i : i + batch_size]
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    return {"pixel_precision": tp / max(tp + fp, 1), "pixel_recall": tp / max(tp + fn, 1)}


def fit_spotnet(
    output: str | os.PathLike[str],
    train_files: Sequence[str],
    val_files: Sequence[str],
    *,
    arch: str = "spotnet",
    task: Task = "hitmiss",
    channels: tuple[int, ...] | None = None,
    stride: int | None = None,
    config: SpotTrainConfig | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    hot_pixels: HotPixelRule | None = DEFAULT_HOT_PIXELS,
    peak_snr: Sequence[float] = (),
    background: Background | None = None,
    lone_pixel_snr: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train a SpotNet end to end into a calibrated checkpoint at ``output``.

    The input normalisation is ``background`` (:class:`~sfx_cnnhit.models.preprocess.PreprocessConfig`;
    default ``panel`` for hit/miss, as the shipped model, and ``hybrid`` for five-class models, which also
    read the diffuse contrast).
    ``channels`` and ``stride`` override the architecture's spot-head widths (stem, then one per 3x3
    layer) and spot-map cell; ``peak_snr``: the head also reads bright-peak counts at these z-scores;
    ``lone_pixel_snr``: lone pixels this bright are not counted as spots (:func:`with_lone_pixel_snr`).

    The spot head learns from ``train_files`` (:func:`train_spot_head`); on ``val_files`` the count
    head is fitted (:func:`fit_count_head`), then calibrated like every model (class offsets and the
    hit threshold, :func:`~sfx_cnnhit.models.fit.validate_and_calibrate`), on validation frames read
    as the commands read them (``hot_pixels`` masked, :mod:`sfx_cnnhit.io.hotpixels`). Both need
    ``/truth/bragg_mask`` and the labels (``/truth/hit`` or ``/truth/label``). Returns the checkpoint
    path and its metrics.
    """
    output = Path(output)
    if output.exists():
        raise OutputError(f"{output}: exists; choose another name (checkpoints are never overwritten)")
    if not train_files or not val_files:
        raise ConfigError("SpotNet training needs training files and validation files (--val)")
    config = config or SpotTrainConfig()
    five = task == "fiveclass"
    widths: dict[str, Any] = {} if channels is None else {"channels": tuple(channels)}
    if stride is not None:
        widths["stride"] = stride
    preprocess_settings = {"background": background or ("hybrid" if five else "panel")}
    model, spec = create_model(arch, task=task, preprocess=preprocess_settings, diffuse=five, **widths)
    if not isinstance(model, SpotNet):
        raise ConfigError(f"{arch!r} is not a SpotNet architecture")
    if peak_snr:
        model, spec = with_peak_snr(model, spec, peak_snr)
    if lone_pixel_snr:
        model, spec = with_lone_pixel_snr(model, spec, lone_pixel_snr)
    seed = config.seed if config.augment else None
    train_set = load_spot_set(
        train_files, spec, augment_seed=seed, max_frames=max_frames, stride=model.stride, progress=progress,
        hot_pixels=hot_pixels if config.hot_pixel_map else None,
        augment_config=SPOT_AUGMENT if config.augment_hot else replace(SPOT_AUGMENT, p_hot=0.0),
    )
    losses = train_spot_head(model, train_set, config, progress=progress)
    del train_set
    val_set = load_spot_set(val_files, spec, augment_seed=None, stride=model.stride, progress=progress)
    metrics: dict[str, Any] = {"spot_training": {"loss_per_100_steps": losses, **spot_map_scores(model, val_set)}}
    del val_set
    labels = "/truth/label" if five else "/truth/hit"
    val = LabelledFrames(list(val_files), labels, class_names=spec.class_names, shuffle=False, hot_pixels=hot_pixels)
    metrics["count_head"] = fit_count_head(model, *frame_features(model, spec, val))
    metrics.update(validate_and_calibrate(model, spec, val))
    recipe = {
        "train": data_recipe(list(train_files)),
        "val": data_recipe(list(val_files)),
        "spot_training": config.to_dict(),
        "max_frames": max_frames,
    }
    save_checkpoint(output, model, spec, recipe=recipe, metrics=metrics)
    return output, metrics
