"""A gallery of frames on which the methods disagree: each method's peaks, and heat maps where given.

:func:`select_disagreements` picks frames after the run (from the decisions alone, so memory stays
bounded); :func:`render_gallery` reads those frames again, runs every method on them once more for
its peak positions (and heat maps, for methods that make them), and draws for each frame: the
frame on an asinh scale with each method's peaks as circles of its own colour and size, then one
panel per heat-map method with the map over the frame; frames sit side by side up to 4 panels a line.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.io.atomic import atomic_output
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.types import PeakList

from .runner import ComparisonResult

#: Peak-circle colours, one per method in order (bright on a grey frame).
COLOURS = ("#ff3b30", "#00c8ff", "#ffd60a", "#34c759", "#ff2dfd", "#ff9500")
PANEL_INCHES = 3.6
PANELS_PER_LINE = 4  # frames are placed side by side up to this many panels per line
DPI = 90


@dataclass(frozen=True)
class GalleryFrame:
    """A frame chosen for the gallery.

    Attributes:
        position: its row in the :class:`ComparisonResult`.
        reason: what disagrees (``dials, dispersion: hit; peakfinder8: miss``).
    """

    position: int
    reason: str


def _decision_words(names: Sequence[str], decisions: NDArray[np.bool_]) -> str:
    groups = {word: [n for n, d in zip(names, decisions, strict=True) if d == flag] for word, flag in
              (("hit", True), ("miss", False))}
    return "; ".join(f"{', '.join(members)}: {word}" for word, members in groups.items() if members)


def select_disagreements(result: ComparisonResult, n: int) -> list[GalleryFrame]:
    """Up to ``n`` frames where the methods disagree (or, failing that, all agree against the label).

    Frames where methods disagree with each other come first, then frames where every method
    contradicts the label. Frames are grouped by their pattern of decisions (and label); the groups,
    largest first, take turns, so each kind of disagreement is shown before any repeats.
    """
    names = [m.name for m in result.methods]
    if n < 1 or result.n_frames == 0:
        return []
    decisions = np.column_stack([result.hits[name] for name in names])
    truth = result.true_hit
    split = decisions.any(axis=1) & ~decisions.all(axis=1)
    against = result.labelled & ~split & (decisions[:, 0] != (truth == 1))
    groups: list[list[int]] = []
    for chosen in (split, against):
        keyed: dict[tuple[int, ...], list[int]] = {}
        for row in np.flatnonzero(chosen):
            keyed.setdefault((*decisions[row].astype(int), int(truth[row])), []).append(int(row))
        groups.extend(sorted(keyed.values(), key=len, reverse=True))  # stable: ties keep first-seen order
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(g) for g in groups):
        picked.extend(g[depth] for g in groups if depth < len(g))
        depth += 1
    picked = picked[:n]
    out = []
    for i in picked:
        reason = _decision_words(names, decisions[i])
        if truth[i] >= 0:
            reason += f"; label: {'hit' if truth[i] else 'miss'}"
        out.append(GalleryFrame(position=i, reason=reason))
    return out


def _read_frames(
    source: FrameSource, global_index: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The frames at ``global_index`` (positions in ``source``) and their masks, read one by one."""
    frames, masks = [], []
    for g in global_index:
        batch = next(source.batches(1, start=int(g), stop=int(g) + 1))
        frames.append(batch.data[0])
        masks.append(batch.mask[0])
    return np.stack(frames), np.stack(masks)


def asinh_image(frame: NDArray[np.floating], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """``asinh((v - median) / scale)`` with the scale a robust background sigma; masked pixels NaN."""
    good = frame[mask & np.isfinite(frame)]
    if good.size == 0:
        return np.full(frame.shape, np.nan)
    median = float(np.median(good))
    spread = float(np.median(np.abs(good - median))) * 1.4826
    scaled = np.arcsinh((frame.astype(np.float64) - median) / max(spread, 1e-6))
    return np.where(mask, scaled, np.nan)


def _label_text(result: ComparisonResult, i: int) -> str:
    if result.true_hit[i] < 0:
        return "no label"
    word = "hit" if result.true_hit[i] else "miss"
    raw = result.label[i]
    return f"label {word}" + (f" ({raw})" if raw not in ("", "0", "1", "True", "False") else "")


def _method_text(result: ComparisonResult, i: int) -> str:
    parts = []
    for m in result.methods:
        verdict = "hit" if result.hits[m.name][i] else "miss"
        score = float(result.scores[m.name][i])
        value = f"{score:.2f}" if m.score_name == "p_hit" or not score.is_integer() else f"{int(score)}"
        parts.append(f"{m.name}: {verdict} ({m.score_name} {value})")
    return "\n".join(", ".join(parts[k : k + 2]) for k in range(0, len(parts), 2))


def render_gallery(
    source: FrameSource,
    result: ComparisonResult,
    frames: Sequence[GalleryFrame],
    path: str | os.PathLike[str],
    *,
    colours: Sequence[str] = COLOURS,
) -> Path | None:
    """Draw the chosen frames into a PNG (written atomically; None when there is nothing to draw).

    The PNG is reduced to a 128-colour palette, which keeps it small without visible loss.
    """
    if not frames:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from PIL import Image

    positions = [f.position for f in frames]
    data, masks = _read_frames(source, result.global_index[positions])
    peaks: dict[str, list[PeakList]] = {}
    maps: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    for m in result.methods:
        found = m.finder.classify(data, masks).peaks
        peaks[m.name] = found if found is not None else [PeakList.empty()] * len(frames)
        if m.heatmaps is not None:
            maps[m.name] = m.heatmaps(data, masks)
    n_panels = 1 + len(maps)  # per frame: the frame with peaks, then one heat map per method making them
    per_line = min(len(frames), max(1, PANELS_PER_LINE // n_panels))  # frames side by side
    n_lines = -(-len(frames) // per_line)
    n_cols = per_line * n_panels
    legend_per_line = max(1, min(len(result.methods), 2 * n_cols))
    legend_inches = 0.25 * -(-len(result.methods) // legend_per_line)
    panel_height = PANEL_INCHES * min(data.shape[1] / data.shape[2], 2.0)  # frames are (ss, fs)
    fig, axes = plt.subplots(
        n_lines, n_cols, figsize=(PANEL_INCHES * n_cols, (panel_height + 0.7) * n_lines + legend_inches),
        squeeze=False,
    )
    for a in axes.ravel():
        a.set_axis_off()
    grey = matplotlib.colormaps["gray"].with_extremes(bad="#3a0a4a")
    for row, pos in enumerate(positions):
        line, first = divmod(row, per_line)
        panels = axes[line, first * n_panels : (first + 1) * n_panels]
        image = asinh_image(data[row], masks[row])
        # Background (the median) black, bright pixels saturating at the 99.9th percentile.
        low, high = 0.0, max(float(np.nanpercentile(image, 99.9)) if np.isfinite(image).any() else 1.0, 1.0)
        ax = panels[0]
        ax.imshow(image, cmap=grey, vmin=low, vmax=high, interpolation="antialiased")
        for k, m in enumerate(result.methods):
            p = peaks[m.name][row]
            ax.scatter(p.fs, p.ss, s=(7 + 4 * k) ** 2, facecolors="none", edgecolors=colours[k % len(colours)],
                       linewidths=0.9)
        event = result.event_ids[pos]
        event = event if len(event) <= 48 else "..." + event[-45:]
        ax.set_title(f"{event}: {_label_text(result, pos)}\n{_method_text(result, pos)}", fontsize=7)
        for hax, (name, (hmaps, raw_max)) in zip(panels[1:], maps.items(), strict=True):
            hax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="antialiased")
            hax.imshow(hmaps[row], cmap="inferno", alpha=0.55, vmin=0.0, vmax=1.0, interpolation="antialiased")
            hax.set_title(f"{name} heat map (raw max {float(raw_max[row]):.3g})", fontsize=7)
    handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor=colours[k % len(colours)],
               label=f"{m.name} peaks")
        for k, m in enumerate(result.methods)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=legend_per_line, fontsize=8, frameon=False)
    fig.tight_layout(pad=0.8, rect=(0, legend_inches / fig.get_figheight(), 1, 0.99))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    buffer.seek(0)
    palette = Image.open(buffer).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
    with atomic_output(path) as tmp:
        palette.save(tmp, format="PNG", optimize=True)
    return Path(path)
