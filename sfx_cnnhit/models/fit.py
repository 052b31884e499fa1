"""Training and evaluation as library calls (what ``sfx-cnnhit train`` and ``evaluate`` run)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, OutputError
from sfx_cnnhit.io.geometry import read_geometry
from sfx_cnnhit.io.hotpixels import DEFAULT_HOT_PIXELS, HotPixelRule
from sfx_cnnhit.models.calibration import (
    CALIBRATION,
    DECISION_THRESHOLD,
    UNBINNED_THRESHOLD,
    apply_logit_offsets_,
    calibration_record,
    frame_thresholds,
    hit_thresholds,
)
from sfx_cnnhit.models.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    resolve_model_path,
    save_checkpoint,
)
from sfx_cnnhit.models.data import LabelledFrames, SimulatedFrames, round_robin
from sfx_cnnhit.models.inference import BatchSource, predict_batches
from sfx_cnnhit.models.metrics import VALIDATION_HIT_SCORES, evaluation_summary
from sfx_cnnhit.models.spotnet import SpotNet
from sfx_cnnhit.models.tasks import Task
from sfx_cnnhit.models.training import PRESETS, TrainConfig, TrainResult, train
from sfx_cnnhit.models.zoo import ModelSpec, create_model, hit_probability


def data_recipe(paths: list[str]) -> list[dict[str, Any]]:
    """Where training data came from: each file with the simulator's seed/split when it records them."""
    import h5py

    out = []
    for path in paths:
        entry: dict[str, Any] = {"path": str(path)}
        with h5py.File(path, "r") as f:
            if "/truth" in f:
                attrs = f["/truth"].attrs
                for key in ("seed", "split"):
                    if key in attrs:
                        value = attrs[key]
                        entry[key] = value.item() if hasattr(value, "item") else value
            entry["n_frames"] = int(f["/entry_1/data_1/data"].shape[0]) if "/entry_1/data_1/data" in f else None
        out.append(entry)
    return out


def hit_scores_of_true_hits(probs: np.ndarray, labels: np.ndarray, spec: ModelSpec) -> list[float]:
    """P(hit) of every frame whose label is a hit class, sorted descending (for threshold choice)."""
    hit_idx = list(spec.hit_classes)
    p_hit = probs[:, hit_idx].sum(axis=1)
    true_hit = np.isin(labels, hit_idx)
    return [round(float(v), 7) for v in np.sort(p_hit[true_hit])[::-1]]


def fit(
    *,
    output: str | os.PathLike[str],
    train_files: list[str] | None = None,
    simulate_per_epoch: int | None = None,
    simulate_configs: list[Any] | None = None,
    workers: int = 1,
    val_files: list[str] | None = None,
    labels: str = "/truth/label",
    task: Task = "fiveclass",
    arch: str = "hitnet",
    preset: str = "hitnet",
    overrides: dict[str, Any] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    max_frames: int | None = None,
    progress: bool = True,
    calibrate: bool = True,
    init: str | os.PathLike[str] | None = None,
    geometry: str | os.PathLike[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> tuple[Path, TrainResult]:
    """Train a zoo model and write one checkpoint that carries everything inference needs.

    Args:
        output: the final checkpoint (the best validation epoch, with its metrics and the validation
            P(hit) of the true hits, used by ``reduce --target-hit-recall``).
        train_files: labelled files (``labels`` names the dataset or CSV), and/or
        simulate_per_epoch: that many freshly simulated frames every epoch, shared by the detectors of
        simulate_configs: one :class:`~sfx_cnnhit.simulate.SimulationConfig` each (default: the
            simulator's default detector), simulated in ``workers`` processes.
        val_files: labelled validation files, evaluated every epoch.
        task, arch, preset: classes, architecture and optimisation preset (see ``PRESETS``).
        overrides: fields of :class:`~sfx_cnnhit.models.training.TrainConfig` to change.
        workdir: folder of ``last.pt``/``best.pt`` (default ``<output>.work``); ``resume`` continues
            from its ``last.pt``.
        init: start from this checkpoint's weights (fine-tuning; same architecture and task).
        geometry: CrystFEL geometry file of every training and validation file (default: each
            file's own, see :mod:`sfx_cnnhit.models.data`).
        calibrate: fit per-class logit offsets and the hit threshold on the validation files
            (:mod:`sfx_cnnhit.models.calibration`) and store them in the checkpoint.
        preprocess: :class:`~sfx_cnnhit.models.preprocess.PreprocessConfig` fields that replace the
            architecture's defaults (e.g. ``{"background": "global"}``).
    """
    output = _new_checkpoint_path(output)
    if not train_files and not simulate_per_epoch:
        raise ConfigError("no training data: give labelled files and/or a number of frames to simulate per epoch")
    config = _train_config(preset, overrides)
    torch.manual_seed(config.seed)  # the initial weights too: the same command trains the same model
    model, spec = create_model(arch, task=task, preprocess=preprocess)
    if init is not None:
        _start_from(model, spec, init, arch)
    workdir = Path(workdir) if workdir is not None else output.with_name(output.name + ".work")
    detector = _geometry(geometry)
    train_data, val = _data_sources(
        spec, config, detector, train_files=train_files, labels=labels, max_frames=max_frames,
        simulate_per_epoch=simulate_per_epoch, simulate_configs=simulate_configs, workers=workers, val_files=val_files,
    )
    recipe = {
        "train_files": data_recipe(train_files or []),
        "simulate_per_epoch": simulate_per_epoch,
        "simulate_configs": [c.to_dict() for c in simulate_configs or []],
        "val_files": data_recipe(val_files or []),
        "labels": labels,
        "max_frames": max_frames,
        "preset": preset,
        "init": None if init is None else str(init),
    }
    last = workdir / "last.pt"
    result = train(
        model, spec, train_data, val_data=val, config=config, checkpoint_dir=workdir,
        resume=last if resume and last.exists() else None, recipe=recipe, progress=progress,
    )
    _save_final(output, workdir / "best.pt", spec, result, val, calibrate=calibrate)
    return output, result


def _save_final(
    output: Path, best_path: Path, spec: ModelSpec, result: TrainResult, val: LabelledFrames | None, *, calibrate: bool
) -> None:
    """Write ``output``: the best epoch's checkpoint with the training history and, with validation
    frames, the validation P(hit) of the true hits and (``calibrate``) the calibration."""
    best = load_checkpoint(best_path)
    final_model = model_from_checkpoint(best, source=best_path)
    metrics = {**best.metrics, "history": result.history, "best_epoch": result.best_epoch}
    if val is not None:
        metrics.update(validate_and_calibrate(final_model, spec, val, calibrate=calibrate))
    save_checkpoint(output, final_model, spec, recipe=best.recipe, metrics=metrics)


def _new_checkpoint_path(output: str | os.PathLike[str]) -> Path:
    """``output`` as a path, refused if it exists (checkpoints are never overwritten)."""
    output = Path(output)
    if output.exists():
        raise OutputError(f"{output}: exists; choose another name (checkpoints are never overwritten)")
    return output


def _train_config(preset: str, overrides: dict[str, Any] | None) -> TrainConfig:
    """The ``preset``'s :class:`TrainConfig` with ``overrides``: None keeps the preset's value, except for
    ``augment``, where None means no augmentation."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown training preset {preset!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in (overrides or {}).items() if v is not None or k == "augment"})


def _start_from(model: nn.Module, spec: ModelSpec, init: str | os.PathLike[str], arch: str) -> None:
    """Load the weights of the checkpoint ``init`` (same architecture; its task may differ) into ``model``."""
    start = load_checkpoint(resolve_model_path(init))
    if start.spec.name != spec.name:
        raise ConfigError(f"{init}: a {start.spec.name} model cannot start a {arch} run")
    model.load_state_dict(transfer_state(start.state_dict, start.spec, model, spec))


def _data_sources(
    spec: ModelSpec,
    config: TrainConfig,
    detector: DetectorGeometry | None,
    *,
    train_files: list[str] | None,
    labels: str,
    max_frames: int | None,
    simulate_per_epoch: int | None,
    simulate_configs: list[Any] | None,
    workers: int,
    val_files: list[str] | None,
) -> tuple[BatchSource, LabelledFrames | None]:
    """The training batches: labelled files and/or frames simulated afresh every epoch (alternating), each
    source reading ``ceil(batch_size / mix_batches)`` frames per batch; and the validation batches (in
    order, ``batch_size`` frames each), or None without validation files."""
    sources: list[BatchSource] = []
    source_batch = math.ceil(config.batch_size / config.mix_batches)
    if train_files:
        sources.append(
            LabelledFrames(
                train_files, labels, class_names=spec.class_names, batch_size=source_batch,
                seed=config.seed, max_frames=max_frames, geometry=detector,
            )
        )
    if simulate_per_epoch:
        sources.append(
            SimulatedFrames(simulate_per_epoch, class_names=spec.class_names, seed=config.seed,
                            batch_size=source_batch, configs=simulate_configs, workers=workers)
        )
    val = (
        LabelledFrames(val_files, labels, class_names=spec.class_names, batch_size=config.batch_size, shuffle=False,
                       geometry=detector)
        if val_files
        else None
    )
    return sources[0] if len(sources) == 1 else _Interleaved(sources), val

def transfer_state(
    state: dict[str, Any], source: ModelSpec, model: nn.Module, target: ModelSpec
) -> dict[str, Any]:
    """``state`` of a ``source`` model as the start of a ``target`` model of the same architecture.

    Same task: unchanged. Another task: every layer but the output layer is kept. Five classes ->
    hit/miss: each output row starts as the mean of the source rows of the classes it merges (miss =
    blank, no_crystal; hit = weak, good, strong); hit/miss -> five classes: each class starts as the row
    of the hit/miss class it belongs to.
    """
    if source.task == target.task:
        return state
    from sfx_cnnhit.models.calibration import last_linear
    from sfx_cnnhit.models.tasks import to_hitmiss

    head = last_linear(model, target.num_classes)
    prefix = next(name for name, module in model.named_modules() if module is head)
    out = dict(state)
    if target.task == "hitmiss":
        merged = to_hitmiss(np.arange(source.num_classes), source.class_names)
        for key in ("weight", "bias"):
            rows = state[f"{prefix}.{key}"]
            out[f"{prefix}.{key}"] = torch.stack([rows[merged == c].mean(dim=0) for c in range(target.num_classes)])
    elif source.task == "hitmiss":
        parent = torch.from_numpy(to_hitmiss(np.arange(target.num_classes), target.class_names))
        for key in ("weight", "bias"):
            out[f"{prefix}.{key}"] = state[f"{prefix}.{key}"][parent].clone()
    else:
        raise ConfigError(f"cannot start a {target.task} model from a {source.task} one")
    return out


def frame_bin_factors(frames: Any, spec: ModelSpec) -> NDArray[np.int64] | None:
    """The input bin factor of each frame of unshuffled :class:`LabelledFrames`, in the order they are
    read (None for other batch sources, whose frames' shapes are not known here)."""
    if not isinstance(frames, LabelledFrames) or frames.shuffle:
        return None
    from sfx_cnnhit.models.preprocess import plan_input

    return np.concatenate([
        np.full(n, plan_input(source.frame_shape, spec.preprocess, layout).bin_factor, np.int64)
        for source, layout, n in zip(frames.sources, frames.layouts, frames.sizes, strict=True)
    ])


def validate_and_calibrate(model: nn.Module, spec: ModelSpec, val: Any, *, calibrate: bool = True) -> dict[str, Any]:
    """Checkpoint metrics from the validation batches ``val``: the P(hit) of the true hits (for
    ``--target-hit-recall``) and, with ``calibrate``, the calibration (applied to ``model`` in place;
    see :mod:`sfx_cnnhit.models.calibration`; binned and unbinned frames of labelled files get a
    threshold each)."""
    probs: NDArray[np.floating]  # float32 predictions, float64 once calibrated
    probs, y = predict_batches(model, spec, val, layout=None)
    metrics: dict[str, Any] = {}
    if calibrate:
        record, probs = calibration_record(probs, y, spec.hit_classes, bin_factors=frame_bin_factors(val, spec))
        apply_logit_offsets_(model, record["logit_offsets"])
        metrics[CALIBRATION] = record
        metrics.update({k: record[k] for k in (DECISION_THRESHOLD, UNBINNED_THRESHOLD) if k in record})
    metrics[VALIDATION_HIT_SCORES] = hit_scores_of_true_hits(probs, y, spec)
    return metrics


def threshold_checkpoint(
    model: str | os.PathLike[str], val_files: list[str], output: str | os.PathLike[str], *,
    labels: str = "/truth/hit", batch_size: int = 64, hot_pixels: HotPixelRule | None = DEFAULT_HOT_PIXELS,
    lone_pixel_snr: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Set only a checkpoint's hit threshold(s) on labelled files (weights, count head and class offsets
    kept; binned and unbinned frames get one each, :func:`~sfx_cnnhit.models.calibration.hit_thresholds`),
    into a new checkpoint; the earlier thresholds are kept in the record. ``lone_pixel_snr`` sets a
    SpotNet's lone-pixel rule first (None: keep the checkpoint's; 0: off)."""
    output = _new_checkpoint_path(output)
    path = resolve_model_path(model)
    ckpt = load_checkpoint(path)
    net, spec = _with_lone_pixel_rule(model_from_checkpoint(ckpt, source=path), ckpt.spec, lone_pixel_snr, model)
    val = LabelledFrames(val_files, labels, class_names=_label_space(val_files[0], labels, spec),
                         batch_size=batch_size, shuffle=False, hot_pixels=hot_pixels)
    probs, y = predict_batches(net, spec, val)
    from sfx_cnnhit.models.tasks import to_hitmiss
    from sfx_cnnhit.models.zoo import hit_probability

    p_hit, is_hit = hit_probability(probs, spec), to_hitmiss(y, val.class_names).astype(bool)
    metrics = dict(ckpt.metrics)
    before = {k: metrics.pop(k) for k in (DECISION_THRESHOLD, UNBINNED_THRESHOLD) if k in metrics}
    thresholds = hit_thresholds(p_hit, is_hit, frame_bin_factors(val, spec))
    metrics.update(thresholds)
    record = {**thresholds, "n_frames": len(y), "val_files": data_recipe(val_files), "before": before}
    metrics["thresholds"] = record
    save_checkpoint(output, net, spec, recipe=ckpt.recipe, metrics=metrics)
    return output, record


def calibrate_checkpoint(
    model: str | os.PathLike[str], val_files: list[str], output: str | os.PathLike[str], *,
    labels: str = "/truth/label", batch_size: int = 64, hot_pixels: HotPixelRule | None = DEFAULT_HOT_PIXELS,
    peak_snr: Sequence[float] | None = None, lone_pixel_snr: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Calibrate a trained checkpoint on validation files into a new checkpoint (the input is kept).

    A SpotNet's count head is refitted on the same frames first (:func:`~sfx_cnnhit.models.spot_training.
    fit_count_head`), so calibrated SpotNets can be recalibrated, e.g. on a user's own labelled frames;
    ``peak_snr`` sets its bright-peak counts first (None: keep the checkpoint's; empty: none) and
    ``lone_pixel_snr`` its lone-pixel rule (None: keep; 0: off); other models are calibrated once.
    Frames are read as the commands read them (``hot_pixels``).
    """
    output = _new_checkpoint_path(output)
    path = resolve_model_path(model)
    ckpt = load_checkpoint(path)
    net, spec = _with_lone_pixel_rule(model_from_checkpoint(ckpt, source=path), ckpt.spec, lone_pixel_snr, model)
    spot_net = isinstance(net, SpotNet)
    if peak_snr is not None and not spot_net:
        raise ConfigError(f"{model}: bright-peak counts are a SpotNet head input, not one of {spec.name!r}")
    if CALIBRATION in ckpt.metrics and not spot_net:
        raise ConfigError(f"{model}: already calibrated (offsets {ckpt.metrics[CALIBRATION]['logit_offsets']})")
    val = LabelledFrames(val_files, labels, class_names=spec.class_names, batch_size=batch_size, shuffle=False,
                         hot_pixels=hot_pixels)
    metrics = {k: v for k, v in ckpt.metrics.items() if k != UNBINNED_THRESHOLD}
    if spot_net:  # the count head is refitted from scratch, which also undoes an earlier calibration
        from sfx_cnnhit.models.spot_training import fit_count_head, frame_features, with_peak_snr

        spot = cast(SpotNet, net)  # spot_net: isinstance(net, SpotNet)
        if peak_snr is not None:
            spot, spec = with_peak_snr(spot, spec, peak_snr)
            net = spot
        metrics["count_head"] = fit_count_head(spot, *frame_features(spot, spec, val))
    metrics.update(validate_and_calibrate(net, spec, val))
    metrics[CALIBRATION]["val_files"] = data_recipe(val_files)
    save_checkpoint(output, net, spec, recipe=ckpt.recipe, metrics=metrics)
    return output, metrics[CALIBRATION]


def _with_lone_pixel_rule(
    net: nn.Module, spec: ModelSpec, snr: float | None, name: str | os.PathLike[str]
) -> tuple[nn.Module, ModelSpec]:
    """``net`` and ``spec`` with a SpotNet's lone-pixel rule set to ``snr`` (None: unchanged)."""
    if snr is None:
        return net, spec
    if not isinstance(net, SpotNet):
        raise ConfigError(f"{name}: the lone-pixel rule is a SpotNet's, not one of {spec.name!r}")
    from sfx_cnnhit.models.spot_training import with_lone_pixel_snr

    return with_lone_pixel_snr(net, spec, snr)


def _geometry(path: str | os.PathLike[str] | None) -> DetectorGeometry | None:
    return None if path is None else read_geometry(path)


class _Interleaved:
    """Batches of several sources, alternating, for one epoch each."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __call__(self, epoch: int) -> Any:
        return round_robin(s(epoch) for s in self.sources)


def evaluate_files(
    paths: list[str],
    *,
    model: str | os.PathLike[str] | None = None,
    labels: str = "/truth/label",
    target_hit_recall: float = 0.995,
    batch_size: int = 64,
    max_frames: int | None = None,
    geometry: str | os.PathLike[str] | None = None,
    hot_pixels: HotPixelRule | None = DEFAULT_HOT_PIXELS,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, ModelSpec]:
    """Evaluate a model on labelled files: the :func:`evaluation_summary` dict, P(hit), true hit flags.

    Hit/miss labels (``/truth/hit``) with a five-class model are compared as hit/miss; five-class
    labels with a hit/miss model too. ``geometry``: CrystFEL geometry file of every input (default:
    each file's own, see :mod:`sfx_cnnhit.models.data`). ``hot_pixels``: mask each file's hot pixels
    (:mod:`sfx_cnnhit.io.hotpixels`; None: do not).
    """
    path = resolve_model_path(model)
    ckpt = load_checkpoint(path)
    net, spec = model_from_checkpoint(ckpt, source=path), ckpt.spec
    label_space = _label_space(paths[0], labels, spec)
    frames = LabelledFrames(paths, labels, class_names=label_space, batch_size=batch_size, shuffle=False,
                            max_frames=max_frames, geometry=_geometry(geometry), hot_pixels=hot_pixels)
    probs, y = predict_batches(net, spec, frames)
    thresholds = frame_thresholds(ckpt.metrics, cast(NDArray[np.int64], frame_bin_factors(frames, spec)))
    summary = evaluation_summary(probs, y, spec.class_names, label_space, target_hit_recall=target_hit_recall,
                                 hit_threshold=thresholds)
    p_hit = hit_probability(probs, spec)
    from sfx_cnnhit.models.tasks import to_hitmiss

    return summary, p_hit, to_hitmiss(y, label_space).astype(bool), spec


def _label_space(path: str, labels: str, spec: ModelSpec) -> tuple[str, ...]:
    """The classes the labels are written in: hit flags, or the file's (five) class names."""
    from sfx_cnnhit.models.tasks import TASK_CLASSES

    if not labels.startswith("/"):
        return spec.class_names
    import h5py

    with h5py.File(path, "r") as f:
        if labels not in f:
            return spec.class_names
        dset = f[labels]
        if dset.dtype.kind == "b":
            return TASK_CLASSES["hitmiss"]
        names = dset.attrs.get("class_names", dset.parent.attrs.get("class_names"))
        if names is not None:
            return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(names).ravel())
        values = dset[()]
        return TASK_CLASSES["hitmiss"] if values.size and values.max() <= 1 else TASK_CLASSES["fiveclass"]

