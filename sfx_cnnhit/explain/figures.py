"""PNG figures of explanations (matplotlib's Agg canvas; no global pyplot state, safe in threads).

- :func:`save_explanation_figure`: a row per frame with the frame, its Grad-CAM overlay, guided
  Grad-CAM and peaks (seed Figs. 8, 10-12);
- :func:`save_inversion_figure`: representation inversions, a row per layer (seed Figs. 6-7);
- :func:`save_histogram_figure`: activation histograms per class (seed Fig. 9).

Frames are shown in their raw slab layout (panels as the file stores them), with the local
background removed and the rest in units of the local noise, ``asinh``-stretched (or ``log``), so
faint spots show white on black whatever the water ring, detector gain or panel (:func:`display_image`).
"""

from __future__ import annotations

import os
import warnings
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


#: Side (pixels) of the squares over which :func:`display_image` estimates the local background.
BACKGROUND_BLOCK = 16
#: :func:`display_image` shows what stands this many noise sigmas above the local background.
NOISE_FLOOR_SIGMA = 2.5


def display_image(
    data: NDArray[np.floating], mask: NDArray[np.bool_] | None = None, scaling: DisplayScaling = "asinh"
) -> NDArray[np.float64]:
    """A frame scaled for display in [0, 1], so that spots stand out at a glance: the local background
    (median of each 16x16 square) is subtracted and the rest divided by the local noise (1.4826 MAD
    of the square, at least half the frame's median noise), then ``asinh`` (or ``log1p``) of that
    z-score from 2.5 sigma (or its 99.5th percentile) up, clipped at its 99.99th percentile (at least
    8 sigma higher). Water rings, air
    scatter and gain steps between panels therefore vanish and Bragg spots show white on black;
    masked pixels are NaN (drawn as the colour map's "bad" colour)."""
    if scaling not in ("asinh", "log"):
        raise ConfigError(f"display scaling must be 'asinh' or 'log', got {scaling!r}")
    img = np.asarray(data, dtype=np.float64)
    good = np.isfinite(img) if mask is None else (np.asarray(mask, bool) & np.isfinite(img))
    out = np.full(img.shape, np.nan)
    if not good.any():
        return out
    background, noise = _local_background(np.where(good, img, np.nan))
    z = np.nan_to_num((img - background) / noise)
    # black up to the noise floor or the 99.5th percentile (photon-sparse frames of integrating
    # detectors put single photons far out in the noise), white from the 99.99th (at least 8 more)
    low = max(NOISE_FLOOR_SIGMA, float(np.percentile(z[good], 99.5)))
    z = np.maximum(z - low, 0.0)
    stretch = np.arcsinh if scaling == "asinh" else np.log1p
    top = stretch(max(float(np.percentile(z[good], 99.99)), 8.0))
    out[good] = np.clip(stretch(z[good]) / top, 0.0, 1.0)
    return out


def _squares(img: NDArray[np.float64], b: int) -> NDArray[np.float64]:
    """``(ceil(ss / b), ceil(fs / b), b * b)``: the pixels of each ``b`` x ``b`` square of ``img``, the
    squares past its edge padded with NaN."""
    ss, fs = img.shape
    padded = np.full((-(-ss // b) * b, -(-fs // b) * b), np.nan)
    padded[:ss, :fs] = img
    blocks = padded.reshape(padded.shape[0] // b, b, padded.shape[1] // b, b).transpose(0, 2, 1, 3)
    return blocks.reshape(*blocks.shape[:2], b * b)


def _local_background(img: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Median and robust noise ``(ss, fs)`` of each ``BACKGROUND_BLOCK`` square of ``img`` (NaN = bad)."""
    b = BACKGROUND_BLOCK
    ss, fs = img.shape
    blocks = _squares(img, b)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-masked squares give NaN, handled below
        median = np.nanmedian(blocks, axis=2)
        mad = 1.4826 * np.nanmedian(np.abs(blocks - median[..., None]), axis=2)
    typical = float(np.nanmedian(mad)) if np.isfinite(mad).any() else 0.0
    floor = max(0.5 * typical, 1e-6 * float(np.nanmax(np.abs(img))), 1e-12)
    noise = np.maximum(np.nan_to_num(mad, nan=floor), floor)
    median = np.nan_to_num(median, nan=float(np.nanmedian(img)))

    def full(values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.repeat(np.repeat(values, b, axis=0), b, axis=1)[:ss, :fs]

    return full(median), full(noise)


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
    """Draw a display image, max-pooled to about the panel's pixels so one-pixel spots survive the
    shrinking (axes stay in frame pixels, so overlays line up)."""
    ss, fs = image.shape
    k = max(1, int(np.ceil(max(ss, fs) / (PANEL_INCHES * DPI))))
    if k > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-masked blocks stay NaN
            image = np.nanmax(_squares(image, k), axis=2)
    ax.imshow(image, cmap=FRAME_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(-0.5, fs - 0.5, ss - 0.5, -0.5))


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
