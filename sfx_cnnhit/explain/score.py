"""Do the explanations point at Bragg peaks? Scores of heat maps against ground-truth spot masks.

For a frame with ground truth (``/truth/bragg_mask`` of simulated files: the pixels of its counted
Bragg spots), the **spot region** is every good pixel within ``dilation_px`` of a spot pixel.

- **mass in spots**: the fraction of the map's mass (sum over good pixels) inside the spot region;
  1 = all evidence on the spots. An all-zero map scores 0.
- **chance level**: the fraction of the good pixels the spot region covers, i.e. what a uniform
  map scores (and the probability that a random pixel is in the region, the pointing game's chance).
- **mass above chance**: ``(mass - chance) / (1 - chance)`` per frame (1 = all mass on the spots,
  0 = no better than a uniform map, negative = avoids the spots), so frames with many spots, whose
  regions cover much of the detector, do not flatter the mean.
- **pointing game**: whether the map's maximum (first in (ss, fs) order among ties) is inside the
  spot region.
- **misses** (frames that are not hits): where the map's mass lies by distance from the beam
  (``radial_profile``: mass fraction per radius bin, averaged over the misses with a non-zero map,
  and area fraction; a water or solvent ring shows as a bin where mass exceeds area), its
  normalised entropy (1 = spread evenly, 0 = one pixel), how many maps are all zero (no hit
  evidence anywhere) and the raw map maxima (the hit evidence scale) against those of the hits.

Choosing ``dilation_px`` fairly: a map cannot be sharper than its cells. A Grad-CAM cell covers
``bin factor x S / CAM width`` detector pixels (HitNet on a 1024^2 frame: 2 x 512 / 32 = 32 px) and
the bilinear upsampling spreads each cell's value over +-1 cell around its centre. A *perfect* map,
with only the cells that hold a spot pixel lit, then keeps on average 86 % of its mass within one
cell of a spot (72 % when the spot sits in a cell's corner), 99.6 % within 1.5 cells (at worst 98 %)
and 100 % within 2 cells. The default radius is therefore :data:`CELLS_PER_RADIUS` = 1.5 map cells
(:meth:`GradCamExplainer.resolution_px`; a cell is one input bin for guided Grad-CAM), and never less
than :data:`STRICT_DILATION_PX`. A 3-pixel radius would cap even the perfect Grad-CAM map far below
1; those strict scores are reported beside (``*_strict``). The chance level is always given, because
a large radius on a frame with many spots covers much of the detector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sfx_cnnhit.errors import InputError

#: The strict dilation radius (detector pixels): a Bragg spot plus about one pixel of its tail.
STRICT_DILATION_PX = 3.0
#: Default spot-region radius in map cells: a perfect upsampled map keeps >= 98 % of its mass inside.
CELLS_PER_RADIUS = 1.5


def fair_dilation_px(map_resolution_px: float) -> float:
    """The default spot-region radius (detector pixels) for maps whose cells are ``map_resolution_px``
    detector pixels: :data:`CELLS_PER_RADIUS` cells, at least :data:`STRICT_DILATION_PX`."""
    return float(max(STRICT_DILATION_PX, CELLS_PER_RADIUS * map_resolution_px))


def default_radius_map(frame_shape: tuple[int, int]) -> NDArray[np.float32]:
    """Distance (pixels) of every pixel from the frame centre, for a frame whose beam is at its centre."""
    ss, fs = np.indices(frame_shape, dtype=np.float32)
    r: NDArray[np.float32] = np.hypot(ss - (frame_shape[0] - 1) / 2, fs - (frame_shape[1] - 1) / 2).astype(np.float32)
    return r


@dataclass
class _FrameScore:
    hit: bool
    label: int | None
    raw_max: float | None
    mass: float | None = None
    area: float | None = None
    pointing: bool | None = None
    mass_strict: float | None = None
    area_strict: float | None = None
    pointing_strict: bool | None = None
    zero_map: bool = False
    entropy: float | None = None


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "median": float(np.median(arr))}


def _mean(values: Sequence[float | bool]) -> float | None:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if values else None


@dataclass
class ExplanationScorer:
    """Accumulates explanation scores over batches (bounded memory: a few numbers per frame).

    Args:
        dilation_px: radius of the spot region (detector pixels); see :func:`fair_dilation_px`.
        strict_dilation_px: radius of the strict spot region reported beside.
        radius_map: ``(ss, fs)`` distance from the beam (pixels) for the misses' radial profile;
            None: from the frame centre.
        radial_bins: bins of the radial profile (equal widths from 0 to the largest good radius).
        class_names: names of the label values for the per-class breakdown.
    """

    dilation_px: float
    strict_dilation_px: float = STRICT_DILATION_PX
    radius_map: NDArray[np.floating] | None = None
    radial_bins: int = 8
    class_names: Sequence[str] | None = None
    _frames: list[_FrameScore] = field(default_factory=list, init=False)
    _n_hits_without_spots: int = field(default=0, init=False)
    _radial_mass: NDArray[np.float64] | None = field(default=None, init=False)
    _radial_n_mass: int = field(default=0, init=False)
    _radial_area: NDArray[np.float64] | None = field(default=None, init=False)
    _radial_edges: NDArray[np.float64] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.dilation_px >= 0 or not self.strict_dilation_px >= 0:
            raise InputError("explanation score: dilation radii must be >= 0 pixels")
        if self.radial_bins < 1:
            raise InputError("explanation score: radial_bins must be >= 1")

    def add(
        self,
        maps: NDArray[np.floating],
        bragg_mask: NDArray[np.bool_],
        is_hit: NDArray[np.bool_],
        *,
        mask: NDArray[np.bool_] | None = None,
        labels: NDArray[np.integer] | None = None,
        raw_max: NDArray[np.floating] | None = None,
    ) -> None:
        """Score a batch.

        Args:
            maps: ``(n, ss, fs)`` non-negative heat maps (any scale).
            bragg_mask: ``(n, ss, fs)`` bool ground-truth spot pixels.
            is_hit: ``(n,)`` bool truth: which frames are hits (the others are scored as misses).
            mask: good pixels (True = good), ``(n, ss, fs)`` or ``(ss, fs)``; None: all good.
            labels: ``(n,)`` class labels for the per-class breakdown.
            raw_max: ``(n,)`` raw maxima of the maps (the unnormalised scale), reported per class.
        """
        maps = np.asarray(maps)
        n = maps.shape[0]
        bragg_mask = np.asarray(bragg_mask, dtype=bool)
        if maps.ndim != 3 or bragg_mask.shape != maps.shape:
            raise InputError(
                f"explanation score: maps {maps.shape} and truth {bragg_mask.shape} must be equal (n, ss, fs)"
            )
        is_hit = np.asarray(is_hit, dtype=bool).reshape(-1)
        if is_hit.size != n or (labels is not None and np.size(labels) != n):
            raise InputError(f"explanation score: {n} maps but {is_hit.size} hit flags or labels")
        good_all = np.ones(maps.shape[1:], bool) if mask is None else np.asarray(mask).astype(bool)
        if good_all.shape not in (maps.shape, maps.shape[1:]):
            raise InputError(f"explanation score: mask {good_all.shape} does not match the maps {maps.shape}")
        for i in range(n):
            good = good_all if good_all.ndim == 2 else good_all[i]
            record = _FrameScore(
                hit=bool(is_hit[i]),
                label=None if labels is None else int(np.asarray(labels).reshape(-1)[i]),
                raw_max=None if raw_max is None else float(np.asarray(raw_max).reshape(-1)[i]),
            )
            m = np.where(good, np.maximum(np.asarray(maps[i], np.float64), 0.0), 0.0)
            total = float(m.sum())
            record.zero_map = not total > 0
            if record.hit:
                if not bragg_mask[i].any():
                    self._n_hits_without_spots += 1
                    continue
                self._score_hit(record, m, total, bragg_mask[i], good)
            else:
                self._score_miss(record, m, total, good)
            self._frames.append(record)

    def _score_hit(
        self,
        record: _FrameScore,
        m: NDArray[np.float64],
        total: float,
        spots: NDArray[np.bool_],
        good: NDArray[np.bool_],
    ) -> None:
        distance = ndimage.distance_transform_edt(~spots)
        n_good = max(int(good.sum()), 1)
        peak = np.unravel_index(int(np.argmax(np.where(good, m, -np.inf))), m.shape)
        for suffix, radius in (("", self.dilation_px), ("_strict", self.strict_dilation_px)):
            region = (distance <= radius) & good
            setattr(record, "area" + suffix, float(region.sum()) / n_good)
            setattr(record, "mass" + suffix, float(m[region].sum()) / total if total > 0 else 0.0)
            setattr(record, "pointing" + suffix, bool(total > 0 and region[peak]))

    def _score_miss(self, record: _FrameScore, m: NDArray[np.float64], total: float, good: NDArray[np.bool_]) -> None:
        n_good = int(good.sum())
        if total > 0 and n_good > 1:
            p = m[good] / total
            p = p[p > 0]
            record.entropy = float(-(p * np.log(p)).sum() / np.log(n_good))
        radius = default_radius_map(m.shape) if self.radius_map is None else np.asarray(self.radius_map, np.float64)
        if radius.shape != m.shape:
            raise InputError(f"explanation score: radius map {radius.shape} differs from the frames {m.shape}")
        if self._radial_edges is None:
            r_max = float(radius[good].max()) if good.any() else 1.0
            self._radial_edges = np.linspace(0.0, r_max * (1 + 1e-9) + 1e-9, self.radial_bins + 1)
            self._radial_mass = np.zeros(self.radial_bins)
            self._radial_area = np.zeros(self.radial_bins)
        assert self._radial_mass is not None and self._radial_area is not None
        which = np.clip(np.digitize(radius[good], self._radial_edges) - 1, 0, self.radial_bins - 1)
        if total > 0:
            self._radial_mass += np.bincount(which, weights=m[good], minlength=self.radial_bins) / total
            self._radial_n_mass += 1
        self._radial_area += np.bincount(which, minlength=self.radial_bins) / max(n_good, 1)

    def _summary(self, frames: list[_FrameScore]) -> dict[str, Any]:
        hits = [f for f in frames if f.hit]
        mass = _stats([f.mass for f in hits])  # type: ignore[misc]
        mass_strict = _stats([f.mass_strict for f in hits])  # type: ignore[misc]
        above = [
            (f.mass - f.area) / (1.0 - f.area)  # type: ignore[operator]
            for f in hits
            if f.area is not None and f.area < 1.0
        ]
        out: dict[str, Any] = {
            "n_frames": len(frames),
            "n_hits": len(hits),
            "mass_in_spots_mean": mass["mean"],
            "mass_in_spots_median": mass["median"],
            "pointing_game": _mean([f.pointing for f in hits]),  # type: ignore[misc]
            "chance_mass_in_spots": _mean([f.area for f in hits]),  # type: ignore[misc]
            "mass_above_chance_mean": _mean(above),
            "mass_in_spots_strict_mean": mass_strict["mean"],
            "mass_in_spots_strict_median": mass_strict["median"],
            "pointing_game_strict": _mean([f.pointing_strict for f in hits]),  # type: ignore[misc]
            "chance_mass_in_spots_strict": _mean([f.area_strict for f in hits]),  # type: ignore[misc]
            "n_zero_maps": sum(f.zero_map for f in frames),
        }
        raw = [f.raw_max for f in frames if f.raw_max is not None]
        if raw:
            out["raw_max_median"] = float(np.median(raw))
        return out

    def result(self) -> dict[str, Any]:
        """The scores so far (JSON-compatible; None where no frame qualifies)."""
        out = self._summary(self._frames)
        out.update(
            dilation_px=float(self.dilation_px),
            strict_dilation_px=float(self.strict_dilation_px),
            n_hits_without_spots=self._n_hits_without_spots,
        )
        misses = [f for f in self._frames if not f.hit]
        hit_raw = [f.raw_max for f in self._frames if f.hit and f.raw_max is not None]
        miss_raw = [f.raw_max for f in misses if f.raw_max is not None]
        out["misses"] = {
            "n_misses": len(misses),
            "entropy_mean": _mean([f.entropy for f in misses if f.entropy is not None]),
            "n_zero_maps": sum(f.zero_map for f in misses),
            "raw_max_median": float(np.median(miss_raw)) if miss_raw else None,
            "raw_max_median_hits": float(np.median(hit_raw)) if hit_raw else None,
            "radial_profile": None
            if self._radial_edges is None or not misses
            else {  # the radial arrays are set together with _radial_edges (_score_miss)
                "edges_px": self._radial_edges.tolist(),
                "mass_fraction": (
                    cast("NDArray[np.float64]", self._radial_mass) / max(self._radial_n_mass, 1)
                ).tolist(),
                "area_fraction": (cast("NDArray[np.float64]", self._radial_area) / len(misses)).tolist(),
            },
        }
        groups: dict[Any, list[_FrameScore]] = defaultdict(list)
        for f in self._frames:
            if f.label is not None:
                groups[f.label].append(f)
        names = self.class_names
        out["per_class"] = {
            (names[lab] if names is not None and 0 <= lab < len(names) else str(lab)): self._summary(group)
            for lab, group in sorted(groups.items())
        }
        return out


def score_explanations(
    maps: NDArray[np.floating],
    bragg_mask: NDArray[np.bool_],
    is_hit: NDArray[np.bool_] | None = None,
    *,
    dilation_px: float = STRICT_DILATION_PX,
    mask: NDArray[np.bool_] | None = None,
    labels: NDArray[np.integer] | None = None,
    raw_max: NDArray[np.floating] | None = None,
    class_names: Sequence[str] | None = None,
    radius_map: NDArray[np.floating] | None = None,
) -> dict[str, Any]:
    """Scores of one set of maps (see the module docstring and :class:`ExplanationScorer`).

    ``is_hit`` defaults to "the frame has ground-truth spot pixels". Returns a dict with at least
    ``n_hits, mass_in_spots_mean, mass_in_spots_median, pointing_game, chance_mass_in_spots``, the
    strict-radius variants, ``misses`` and ``per_class``.
    """
    bragg_mask = np.asarray(bragg_mask, dtype=bool)
    if is_hit is None:
        is_hit = cast("NDArray[np.bool_]", bragg_mask.reshape(bragg_mask.shape[0], -1).any(axis=1))
    scorer = ExplanationScorer(dilation_px, radius_map=radius_map, class_names=class_names)
    scorer.add(maps, bragg_mask, is_hit, mask=mask, labels=labels, raw_max=raw_max)
    return scorer.result()
