"""PNG figures of explanations (matplotlib's Agg canvas; no global pyplot state, safe in threads).

- :func:`save_explanation_figure`: a row per frame with the frame, its Grad-CAM overlay, guided
  Grad-CAM and peaks (seed Figs. 8, 10-12);
- :func:`save_inversion_figure`: representation inversions, a row per layer (seed Figs. 6-7);
- :func:`save_histogram_figure`: activation histograms per class (seed Fig. 9).

Frames are shown in their raw slab layout (panels as the file stores them), robustly z-scored and
scaled with ``asinh`` (or ``log``) so faint spots and the bright low-resolution region both show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.atomic import atomic_output
from sfx_cnnhit.types import PeakList

DisplayScaling = Literal["asinh", "log"]
PANEL_INCHES = 3.2
DPI = 110


def display_image(
    data: NDArray[np.floating], mask: NDArray[np.bool_] | None = None, scaling: DisplayScaling = "asinh"
) -> NDArray[np.float64]:
    """A frame scaled for display: ``asinh(z)`` (or ``log1p(z)``) of the robust z-score, clipped to
    [0, 1] at its 99.9th percentile; masked pixels are NaN (drawn as the colour map's "bad" colour)."""
    if scaling not in ("asinh", "log"):
        raise ConfigError(f"display scaling must be 'asinh' or 'log', got {scaling!r}")
    img = np.asarray(data, dtype=np.float64)
    good = np.isfinite(img) if mask is None else (np.asarray(mask, bool) & np.isfinite(img))
    out = np.full(img.shape, np.nan)
    if not good.any():
        return out
    values = img[good]
    med = float(np.median(values))
    sigma = max(1.4826 * float(np.median(np.abs(values - med))), 1e-6 * (float(values.max()) - med), 1e-12)
    z = np.maximum((img - med) / sigma, 0.0)
    scaled = np.arcsinh(z) if scaling == "asinh" else np.log1p(z)
    top = float(np.percentile(scaled[good], 99.9))
    top = top if top > 0 else max(float(scaled[good].max()), 1.0)
    out[good] = np.clip(scaled[good] / top, 0.0, 1.0)
    return out


@dataclass(frozen=True)
class FramePanels:
    """One row of an explanation figure.

    Attributes:
        data: ``(ss, fs)`` frame.
        mask: ``(ss, fs)`` good pixels (True = good) or None.
        cam: ``(ss, fs)`` class-activation map in [0, 1] (Grad-CAM or HiResCAM), or None.
        cam_label: its column title.
        guided: ``(ss, fs)`` guided Grad-CAM map in [0, 1], or None.
        peaks: peaks to circle (e.g. from peakfinder8), or None.
        truth: ``(ss, fs)`` ground-truth Bragg-spot pixels to outline on the peaks panel, or None.
        title: row label (event id, class, P(hit) ...).
    """

    data: NDArray[np.floating]
    mask: NDArray[np.bool_] | None = None
    cam: NDArray[np.floating] | None = None
    cam_label: str = "Grad-CAM"
    guided: NDArray[np.floating] | None = None
    peaks: PeakList | None = None
    truth: NDArray[np.bool_] | None = None
    title: str = ""


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


#: Grey scale with masked (NaN) pixels in dark blue.
FRAME_CMAP = colormaps["gray"].with_extremes(bad="#1f2f5f")


def _grey(ax: Any, image: NDArray[np.float64]) -> None:
    ax.imshow(image, cmap=FRAME_CMAP, vmin=0.0, vmax=1.0, interpolation="antialiased")


def save_explanation_figure(
    path: str | os.PathLike[str],
    rows: Sequence[FramePanels],
    *,
    scaling: DisplayScaling = "asinh",
    overlay_alpha: float = 0.45,
    peak_radius_px: float | None = None,
) -> Path:
    """Write a PNG with one row per frame: frame | Grad-CAM (or HiResCAM) overlay | guided Grad-CAM | peaks.

    A column appears when any row has its data (maps, peaks or truth); the class-activation map's
    column is titled by the first row's ``cam_label``. Guided Grad-CAM is drawn with a square-root
    colour scale (a few pixels dominate its maximum). ``peak_radius_px``: circle radius (default
    1.5 % of the frame's larger side, at least 4 pixels).
    """
    if not rows:
        raise ConfigError("explanation figure: no frames to draw")
    columns = ["frame"]
    cam_title = rows[0].cam_label
    if any(r.cam is not None for r in rows):
        columns.append(cam_title)
    if any(r.guided is not None for r in rows):
        columns.append("guided Grad-CAM")
    if any(r.peaks is not None or r.truth is not None for r in rows):
        columns.append("peaks")
    fig = Figure(figsize=(PANEL_INCHES * len(columns), PANEL_INCHES * len(rows) + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), len(columns), squeeze=False))
    for r, row in enumerate(rows):
        frame = display_image(row.data, row.mask, scaling)
        for c, column in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=10)
            if c == 0 and row.title:
                ax.set_ylabel(row.title, fontsize=8)
            if column == "frame":
                _grey(ax, frame)
            elif column == cam_title and row.cam is not None:
                _grey(ax, frame)
                ax.imshow(row.cam, cmap="jet", vmin=0.0, vmax=1.0, alpha=overlay_alpha, interpolation="bilinear")
            elif column == "guided Grad-CAM" and row.guided is not None:
                norm = PowerNorm(0.5, vmin=0.0, vmax=1.0)
                ax.imshow(row.guided, cmap="inferno", norm=norm, interpolation="antialiased")
            elif column == "peaks":
                _grey(ax, frame)
                if row.truth is not None and row.truth.any():
                    ax.contour(row.truth.astype(np.float32), levels=[0.5], colors="deepskyblue", linewidths=0.6)
                if row.peaks is not None and row.peaks.num_peaks:
                    radius = peak_radius_px or max(4.0, 0.015 * max(frame.shape))
                    circles = [Circle((f, s), radius) for f, s in zip(row.peaks.fs, row.peaks.ss, strict=True)]
                    ax.add_collection(PatchCollection(circles, facecolor="none", edgecolor="lime", linewidth=0.7))
                ax.set_xlim(-0.5, frame.shape[1] - 0.5)
                ax.set_ylim(frame.shape[0] - 0.5, -0.5)
    return _save(fig, path)


def save_inversion_figure(
    path: str | os.PathLike[str],
    inputs: Sequence[NDArray[np.floating]],
    reconstructions: Mapping[str, Sequence[NDArray[np.floating]]],
    *,
    column_titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG of representation inversions: the inputs in the first row, then one row per layer
    (``reconstructions[label][j]`` belongs to ``inputs[j]``), each image on its own min-max scale."""
    if not inputs:
        raise ConfigError("inversion figure: no inputs")
    labels = ["input", *reconstructions]
    n = len(inputs)
    fig = Figure(figsize=(PANEL_INCHES * 0.8 * n, PANEL_INCHES * 0.8 * len(labels) + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(len(labels), n, squeeze=False))
    for r, label in enumerate(labels):
        images = inputs if label == "input" else reconstructions[label]
        for j in range(n):
            ax = axes[r, j]
            img = np.asarray(images[j], dtype=np.float64).squeeze()
            lo, hi = float(img.min()), float(img.max())
            ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and column_titles is not None:
                ax.set_title(column_titles[j], fontsize=9)
    return _save(fig, path)


def save_histogram_figure(
    path: str | os.PathLike[str],
    histograms: Mapping[Any, tuple[NDArray[np.integer], NDArray[np.floating]]],
    *,
    title: str = "",
) -> Path:
    """Write a PNG of activation histograms, one step curve per class, as fractions of the class's
    activations on a log scale (classes with different frame counts compare directly)."""
    if not histograms:
        raise ConfigError("histogram figure: no classes")
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, (counts, edges) in histograms.items():
        total = max(int(np.sum(counts)), 1)
        ax.stairs(np.asarray(counts) / total, edges, label=f"{name} ({total:,} values)")
    ax.set_yscale("log")
    ax.set_xlabel("activation value")
    ax.set_ylabel("fraction of activations")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)
