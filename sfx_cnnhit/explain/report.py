"""The ``explain`` job as a library call: maps, scores, histograms, inversions and figures for frames.

:func:`explain_source` streams the chosen frames of a :class:`~sfx_cnnhit.io.sources.FrameSource`
through a :class:`~sfx_cnnhit.explain.gradcam.GradCamExplainer` and returns a JSON-compatible report.
Ground truth (simulated files: ``/truth/bragg_mask``, ``/truth/label``, ``/truth/hit``) is read with
h5py from each frame's own input file at its ``source_index``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import h5py
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.explain.capture import eval_mode, model_device
from sfx_cnnhit.explain.figures import (
    FramePanels,
    save_explanation_figure,
    save_histogram_figure,
    save_inversion_figure,
)
from sfx_cnnhit.explain.gradcam import GradCamExplainer, Method
from sfx_cnnhit.explain.histograms import activation_histograms
from sfx_cnnhit.explain.inversion import inversion_layers, invert_representation
from sfx_cnnhit.explain.score import ExplanationScorer, fair_dilation_px
from sfx_cnnhit.io.atomic import check_output_path, make_output_folder
from sfx_cnnhit.io.hdf5 import open_hdf5
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.models.checkpoint import load_model
from sfx_cnnhit.models.inference import resolve_device
from sfx_cnnhit.models.preprocess import panel_layout_for, preprocess
from sfx_cnnhit.models.tasks import HIT_CLASS_NAMES
from sfx_cnnhit.models.zoo import ModelSpec
from sfx_cnnhit.simulate.output import TRUTH
from sfx_cnnhit.types import FrameBatch, PeakList, ProgressFactory

#: Ground-truth datasets of simulated files (``sfx-cnnhit simulate``).
TRUTH_BRAGG_MASK = f"{TRUTH}/bragg_mask"
TRUTH_LABEL = f"{TRUTH}/label"
TRUTH_HIT = f"{TRUTH}/hit"


#: Peaks of one ``(ss, fs)`` frame with its mask (True = good), e.g. ``Peakfinder8Finder.find_peaks_masked``.
PeakFinding = Callable[[NDArray[np.float32], NDArray[np.bool_]], PeakList]


@dataclass(frozen=True)
class ExplainSettings:
    """What :func:`explain_source` computes.

    Attributes:
        method: ``"gradcam"``, ``"guided"`` or ``"hirescam"``: the maps that are scored.
        target: ``"hit"`` or a class index (see :class:`GradCamExplainer`).
        score: score the maps against the ground truth at ``truth_path``.
        truth_path: ``(N, ss, fs)`` bool Bragg-spot mask dataset in each input file.
        labels_path: ``(N,)`` int class-label dataset (optional: used when present); its parent
            group's ``class_names`` attribute names the labels.
        hit_path: ``(N,)`` bool hit flags (optional; else hits are the labels' hit classes, else
            the frames with spot pixels).
        dilation_px: spot-region radius; None: :func:`fair_dilation_px` of the method's map cell.
        figures_dir: folder for PNG figures (None: no figures).
        max_figures: explanation figures for at most this many of the chosen frames (the first ones).
        peaks: circle the peaks of :func:`explain_source`'s ``peak_finder`` in the figures.
        invert: layers to invert (module paths, or ``("all",)`` for the architecture's defaults).
        invert_frames: how many of the figure frames to invert.
        invert_steps: optimisation steps per inversion.
        histogram_layer: layer whose activation histograms per class are computed (None: none).
        histogram_bins: bins of those histograms.
        batch_size: frames read and explained at once.
    """

    method: Method = "gradcam"
    target: Literal["hit"] | int = "hit"
    score: bool = False
    truth_path: str = TRUTH_BRAGG_MASK
    labels_path: str = TRUTH_LABEL
    hit_path: str = TRUTH_HIT
    dilation_px: float | None = None
    figures_dir: Path | None = None
    max_figures: int = 16
    peaks: bool = True
    invert: tuple[str, ...] = ()
    invert_frames: int = 2
    invert_steps: int = 300
    histogram_layer: str | None = None
    histogram_bins: int = 64
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.max_figures < 0 or self.invert_frames < 0 or self.invert_steps < 1 or self.histogram_bins < 1:
            raise ConfigError("explain: max_figures and invert_frames must be >= 0, steps and bins >= 1")
        if self.invert and self.figures_dir is None:
            raise ConfigError("explain: inversions are drawn as figures; give a figures folder")


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted unique indices as ``(start, stop)`` runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(int(v) for v in indices)):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _batches(source: FrameSource, frames: Sequence[int] | None, batch_size: int) -> Iterator[FrameBatch]:
    if frames is None:
        yield from source.batches(batch_size)
        return
    for start, stop in _runs(frames):
        yield from source.batches(batch_size, start=start, stop=stop)


def parse_frames(text: str | None) -> list[int] | None:
    """``"0,3,7"`` or ``"10-19,40"`` -> sorted frame indices (``--frames``)."""
    if text is None:
        return None
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--frames must be indices or ranges such as 0,3,7 or 10-19, got {text!r}") from None
    return sorted(out)


def parse_target(text: str) -> str | int:
    """``"hit"`` or a class index (``--target``)."""
    if text == "hit":
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--target must be 'hit' or a class index, got {text!r}") from None


def select_frames(source: FrameSource, frames: Sequence[int] | None, n_frames: int | None) -> list[int] | None:
    """Global frame indices to explain: ``frames``, the first ``n_frames``, or None for all."""
    if frames is not None and n_frames is not None:
        raise ConfigError("explain: choose frames either by index or by count, not both")
    if n_frames is not None:
        if n_frames < 1:
            raise ConfigError(f"explain: the number of frames must be >= 1, got {n_frames}")
        return list(range(min(n_frames, source.n_frames)))
    if frames is None:
        return None
    bad = [i for i in frames if not 0 <= i < source.n_frames]
    if bad:
        raise InputError(f"explain: frame indices {bad} outside 0..{source.n_frames - 1}")
    return sorted(set(frames))


@dataclass
class _Truth:
    bragg: NDArray[np.bool_] | None
    labels: NDArray[np.int64] | None
    hit: NDArray[np.bool_] | None
    class_names: tuple[str, ...] | None


def _read_rows(dset: h5py.Dataset, rows: NDArray[np.int64]) -> NDArray[Any]:
    """``dset[rows]`` for any order of ``rows`` (h5py needs increasing unique indices)."""
    unique, inverse = np.unique(rows, return_inverse=True)
    if unique.size and unique[-1] >= dset.shape[0]:
        raise InputError(f"{dset.file.filename}: {dset.name} has {dset.shape[0]} rows, frame {unique[-1]} needs more")
    return np.asarray(dset[unique])[inverse]


def read_truth(batch: FrameBatch, settings: ExplainSettings, *, need_bragg: bool) -> _Truth:
    """Ground truth of a batch's frames from their input file (missing optional datasets give None)."""
    rows = np.asarray(batch.source_index, dtype=np.int64)
    try:
        with open_hdf5(batch.source_file) as f:
            bragg = labels = hit = None
            names: tuple[str, ...] | None = None
            if settings.truth_path in f:
                bragg = _read_rows(f[settings.truth_path], rows).astype(bool)
                if bragg.shape != batch.data.shape:
                    raise InputError(
                        f"{batch.source_file}: {settings.truth_path} frames {bragg.shape[1:]} differ from "
                        f"the data's {batch.data.shape[1:]}"
                    )
            elif need_bragg:
                raise InputError(f"{batch.source_file}: no ground-truth dataset {settings.truth_path} to score against")
            if settings.labels_path in f:
                dset = f[settings.labels_path]
                labels = _read_rows(dset, rows).astype(np.int64)
                raw_names = dset.attrs.get("class_names", dset.parent.attrs.get("class_names"))
                if raw_names is not None:
                    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw_names)
            if settings.hit_path in f:
                hit = _read_rows(f[settings.hit_path], rows).astype(bool)
    except OSError as err:
        raise InputError(f"{batch.source_file}: cannot read the ground truth ({err})") from None
    return _Truth(bragg, labels, hit, names)


def _is_hit(truth: _Truth) -> NDArray[np.bool_] | None:
    if truth.hit is not None:
        return truth.hit
    if truth.labels is not None and truth.class_names is not None:
        hit_labels = [i for i, name in enumerate(truth.class_names) if name in HIT_CLASS_NAMES]
        return np.isin(truth.labels, hit_labels)
    return (
        None
        if truth.bragg is None
        else cast("NDArray[np.bool_]", truth.bragg.reshape(truth.bragg.shape[0], -1).any(axis=1))
    )


def _class_name(truth: _Truth, i: int) -> str | None:
    if truth.labels is None:
        return None
    label = int(truth.labels[i])
    names = truth.class_names
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


class _Rereadable:
    """Labelled batches for the histograms, re-read from the source on every iteration."""

    def __init__(self, make: Callable[[], Iterable[tuple[Any, Any, Any]]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        return iter(self._make())


def explain_source(
    source: FrameSource,
    model: nn.Module,
    spec: ModelSpec,
    *,
    frames: Sequence[int] | None = None,
    settings: ExplainSettings | None = None,
    model_source: str = "",
    progress: Callable[[int, int], None] | None = None,
    peak_finder: PeakFinding | None = None,
) -> dict[str, Any]:
    """Explain ``frames`` (global indices; None = all) of ``source`` with ``model``; ``peak_finder``
    gives the peaks circled in the figures (with ``settings.peaks``).

    Returns:
        A JSON-compatible report: ``model``, ``method``, ``target``, ``dilation_px``, ``n_frames``,
        ``frames`` (per frame: index, event id, P(hit), predicted class, raw map maximum, truth class),
        ``score`` (:meth:`ExplanationScorer.result`, with ``settings.score``), ``histograms``
        (with ``settings.histogram_layer``) and ``figures`` (written PNG paths).
    """
    settings = settings or ExplainSettings()
    layout = panel_layout_for(source.geometry)
    explainer = GradCamExplainer(
        model, spec, method=settings.method, target=settings.target, layout=layout, batch_size=settings.batch_size
    )
    frame_shape = tuple(source.frame_shape)
    dilation = (
        settings.dilation_px
        if settings.dilation_px is not None
        else fair_dilation_px(explainer.resolution_px(frame_shape))  # type: ignore[arg-type]
    )
    radius_map = source.geometry.radius_map() if source.geometry is not None else None
    scorer: ExplanationScorer | None = None
    finder = peak_finder if settings.peaks else None
    figure_explainer: GradCamExplainer | None = None
    if settings.figures_dir is not None:
        figure_explainer = GradCamExplainer(model, spec, method="guided", target=settings.target, layout=layout)
    total = source.n_frames if frames is None else len(frames)
    records: list[dict[str, Any]] = []
    figure_paths: list[str] = []
    inversion_inputs: list[tuple[str, torch.Tensor]] = []
    done = 0
    for batch in _batches(source, frames, settings.batch_size):
        maps, raw_max = explainer(batch.data, batch.mask)
        probs = explainer.last_probabilities
        assert probs is not None
        truth = read_truth(batch, settings, need_bragg=settings.score)
        if settings.score:
            scorer = _score(scorer, dilation, radius_map, batch, truth, maps, raw_max)
        records += _frame_records(batch, truth, probs, raw_max, spec)
        if figure_explainer is not None:
            figure_paths += _frame_figures(
                batch, truth, records[-len(batch) :], maps, figure_explainer, finder, settings,
                remaining=settings.max_figures - len(figure_paths), inversions=inversion_inputs,
            )
        done += len(batch)
        if progress is not None:
            progress(done, total)
    report = _report_head(spec, settings, explainer, frame_shape, dilation, model_source, records)
    if scorer is not None:
        report["score"] = scorer.result()
    if settings.histogram_layer is not None:
        report["histograms"] = _histograms(source, frames, model, spec, settings, layout, figure_paths)
    if settings.invert and inversion_inputs:
        figure_paths.append(_inversions(model, spec, inversion_inputs, settings))
    report["figures"] = figure_paths
    return report


def run_explain(
    source: FrameSource,
    *,
    model: str | None,
    device: str,
    frames: str | None,
    n_frames: int | None,
    target: str,
    json_out: Path | None,
    options: Mapping[str, Any],
    progress: ProgressFactory,
    peak_finder: Callable[[FrameSource], PeakFinding],
) -> tuple[dict[str, Any], ModelSpec]:
    """What ``sfx-cnnhit explain`` does with the opened frames: choose them, load the model, explain them
    (:func:`explain_source`); returns the report and the model's spec.

    Args:
        source: the frames.
        model: checkpoint file or shipped model name (None: the shipped default); device: where it runs.
        frames: frame indices as text (:func:`parse_frames`), or None; n_frames: or the first N frames.
        target: ``hit`` or a class index, as text (:func:`parse_target`).
        json_out: where the caller will write the report: refused now if it would replace an input.
        options: the other :class:`ExplainSettings` fields; their ``figures_dir`` is created.
        progress: the progress bar of the explanation (``"explain"``).
        peak_finder: makes the peak finding whose peaks the figures circle, for ``source``.
    """
    if json_out is not None:  # refused before the work, not after it
        check_output_path(json_out, protect=source.input_paths)
    chosen = select_frames(source, parse_frames(frames), n_frames)
    net, spec = load_model(model, device=resolve_device(device))
    if options.get("figures_dir") is not None:
        make_output_folder(options["figures_dir"])
    settings = ExplainSettings(**options, target=parse_target(target))  # type: ignore[arg-type]
    with progress("explain") as update:
        report = explain_source(
            source, net, spec, frames=chosen, settings=settings, model_source=model or "default", progress=update,
            peak_finder=peak_finder(source),
        )
    return report, spec


def _score(
    scorer: ExplanationScorer | None,
    dilation: float,
    radius_map: NDArray[np.float32] | None,
    batch: FrameBatch,
    truth: _Truth,
    maps: NDArray[np.float32],
    raw_max: NDArray[np.float32],
) -> ExplanationScorer:
    """Add a batch's ``(k, ss, fs)`` maps to ``scorer`` (None: made now, with the first batch's class names)."""
    if scorer is None:
        scorer = ExplanationScorer(dilation, radius_map=radius_map, class_names=truth.class_names)
    is_hit = _is_hit(truth)
    assert truth.bragg is not None and is_hit is not None
    scorer.add(maps, truth.bragg, is_hit, mask=batch.mask, labels=truth.labels, raw_max=raw_max)
    return scorer


def _frame_records(
    batch: FrameBatch, truth: _Truth, probs: NDArray[np.float32], raw_max: NDArray[np.float32], spec: ModelSpec
) -> list[dict[str, Any]]:
    """One report entry per frame of a batch: index, event id, P(hit), predicted class, raw map maximum and,
    with labels, the truth class (``probs``: the ``(k, K)`` class probabilities)."""
    hit_classes = list(spec.hit_classes)
    records = []
    for i in range(len(batch)):
        record = {
            "index": int(batch.global_index[i]),
            "event_id": batch.event_ids[i],
            "p_hit": float(probs[i, hit_classes].sum()),
            "predicted": spec.class_names[int(np.argmax(probs[i]))],
            "raw_max": float(raw_max[i]),
        }
        if truth.labels is not None:
            record["truth"] = _class_name(truth, i)
        records.append(record)
    return records


def _report_head(
    spec: ModelSpec,
    settings: ExplainSettings,
    explainer: GradCamExplainer,
    frame_shape: tuple[int, ...],
    dilation: float,
    model_source: str,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """The report's model, maps and frames (score, histograms and figures are added after)."""
    return {
        "model": {
            "source": model_source,
            "name": spec.name,
            "task": spec.task,
            "class_names": list(spec.class_names),
            "cam_target_layer": spec.cam_target_layer,
        },
        "method": settings.method,
        "dataset": explainer.dataset,
        "target": settings.target if settings.target == "hit" else spec.class_names[int(settings.target)],
        "map_resolution_px": explainer.resolution_px(frame_shape),  # type: ignore[arg-type]
        "dilation_px": dilation,
        "n_frames": len(records),
        "frames": records,
    }


def _frame_figures(
    batch: FrameBatch,
    truth: _Truth,
    records: list[dict[str, Any]],
    maps: NDArray[np.float32],
    explainer: GradCamExplainer,
    finder: PeakFinding | None,
    settings: ExplainSettings,
    *,
    remaining: int,
    inversions: list[tuple[str, torch.Tensor]],
) -> list[str]:
    """One explanation PNG per frame (up to ``remaining``): the frame, its class-activation map (the
    batch's ``maps`` for HiResCAM, else Grad-CAM), guided Grad-CAM (from ``explainer``, method
    ``"guided"``) and peaks; collects inversion inputs on the way."""
    if remaining <= 0:
        return []
    n = min(remaining, len(batch))
    assert settings.figures_dir is not None
    both = explainer.explain(batch.data[:n], batch.mask[:n])
    hires = settings.method == "hirescam"
    paths = []
    for i in range(n):
        record = records[i]
        title = f"{record['event_id']}  P(hit)={record['p_hit']:.3f}"
        if "truth" in record:
            title += f"  truth={record['truth']}"
        row = FramePanels(
            batch.data[i],
            batch.mask[i],
            cam=maps[i] if hires else both.cam[i],
            cam_label="HiResCAM" if hires else "Grad-CAM",
            guided=None if both.guided is None else both.guided[i],
            peaks=None if finder is None else finder(batch.data[i], batch.mask[i]),
            truth=None if truth.bragg is None else truth.bragg[i],
            title=title,
        )
        path = settings.figures_dir / f"explain_{record['index']:06d}.png"
        paths.append(str(save_explanation_figure(path, [row])))
        if settings.invert and len(inversions) < settings.invert_frames:
            x0 = preprocess(batch.data[i : i + 1], batch.mask[i : i + 1], explainer.spec.preprocess, explainer.layout)
            inversions.append((f"frame {record['index']}", x0))
    return paths


def _inversions(
    model: nn.Module, spec: ModelSpec, inputs: list[tuple[str, torch.Tensor]], settings: ExplainSettings
) -> str:
    """Invert every input at every requested layer; one PNG with a row per layer."""
    if settings.invert == ("all",):
        layers = inversion_layers(model, spec)
    else:
        layers = tuple((name, name) for name in settings.invert)
    recon: dict[str, list[Any]] = {}
    for label, layer in layers:
        row_label = label if label == layer else f"{label} ({layer})"
        recon[row_label] = [
            invert_representation(model, layer, x0, steps=settings.invert_steps)[0, 0].cpu().numpy()
            for _, x0 in inputs
        ]
    assert settings.figures_dir is not None
    path = settings.figures_dir / "inversion.png"
    save_inversion_figure(
        path, [x0[0, 0].cpu().numpy() for _, x0 in inputs], recon, column_titles=[title for title, _ in inputs]
    )
    return str(path)


def _histograms(
    source: FrameSource,
    frames: Sequence[int] | None,
    model: nn.Module,
    spec: ModelSpec,
    settings: ExplainSettings,
    layout: PanelLayout | None,
    figure_paths: list[str],
) -> dict[str, Any]:
    """Activation histograms of ``settings.histogram_layer`` per truth class (per predicted class when
    the input files have no labels), as JSON; a PNG too when a figures folder is set."""
    assert settings.histogram_layer is not None
    first = next(_batches(source, [frames[0]] if frames else [0], 1))
    first_truth = read_truth(first, settings, need_bragg=False)
    use_truth = first_truth.labels is not None
    class_names = first_truth.class_names if use_truth else spec.class_names

    def labelled() -> Iterator[tuple[Any, Any, Any]]:
        for batch in _batches(source, frames, settings.batch_size):
            if use_truth:
                labels = read_truth(batch, settings, need_bragg=False).labels
                if labels is None:
                    raise InputError(f"{batch.source_file}: no {settings.labels_path} (other inputs have one)")
            else:
                with torch.no_grad(), eval_mode(model):
                    x = preprocess(batch.data, batch.mask, spec.preprocess, layout).to(model_device(model))
                    labels = model(x).argmax(dim=1).cpu().numpy()
            yield batch.data, batch.mask, labels

    hists = activation_histograms(
        model,
        spec,
        _Rereadable(labelled),
        None,
        settings.histogram_layer,
        bins=settings.histogram_bins,
        class_names=class_names,
        layout=layout,
    )
    kind = "truth" if use_truth else "predicted"
    if settings.figures_dir is not None:
        path = settings.figures_dir / f"histograms_{settings.histogram_layer.replace('.', '_')}.png"
        save_histogram_figure(path, hists, title=f"{spec.name} {settings.histogram_layer} ({kind} classes)")
        figure_paths.append(str(path))
    return {
        "layer": settings.histogram_layer,
        "labels": kind,
        "classes": {str(k): {"counts": c.tolist(), "edges": e.tolist()} for k, (c, e) in hists.items()},
    }
