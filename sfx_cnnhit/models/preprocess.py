"""Frame preprocessing: one code path from detector frames to the network input, and back for heat maps.

``preprocess`` turns a batch of raw frames ``(n, ss, fs)`` and their masks (True = good pixel) into the
fixed network input ``(n, 1, S, S)``:

1. **Panels.** The raw slab is cut into panels (a :class:`PanelLayout`; without one the whole slab is a
   single panel) which are tiled on a near-square grid, so long slabs (AGIPD, JUNGFRAU) are not squeezed.
2. **Masking and binning, fused.** Bad pixels become ``-inf`` and every panel is reduced by MAX-pooling
   over ``k x k`` bins (``k`` is the smallest factor that fits the tiled frame into ``S x S``); a Bragg
   spot 1-3 pixels wide keeps its peak value. Bins never straddle panels. A bin with no good pixel, or
   with an unmasked NaN/inf pixel, counts as masked.
3. **Robust normalisation** of the binned frame: ``z = (v - median) / max(1.4826 MAD, one photon)``
   over good bins (median and MAD estimated on a regular sub-grid of at most ``stats_samples`` bins),
   then ``sign(z) log1p|z|`` (or ``asinh(z)``, or ``z``). Masked bins, bins with an unmasked NaN or
   inf, and padding are set to 0, the background level. The one-photon floor keeps sparse frames
   (MAD = 0, or read noise only) from turning single photons into huge z-scores. One photon is the
   detector's gain in ADU, :attr:`PanelLayout.adu_per_photon` (the geometry's ``adu_per_photon``:
   32 for a CSPAD, 71 for an AGIPD at 9.5 keV), else ``PreprocessConfig.adu_per_photon`` (1, a photon
   counter). Only this floor depends on the gain: the z-score itself is scale-free.
4. **Padding** centres the binned canvas in ``S x S`` (or crops its centre if a forced bin factor makes
   it larger).

:class:`InputPlan` records the geometry of steps 1, 2 and 4 for a frame shape; its
:meth:`InputPlan.to_frame` maps a heat map at network-input (or Grad-CAM) resolution back onto the
frame's own ``(ss, fs)`` pixel grid.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from sfx_cnnhit.detector import DetectorGeometry, PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError

Scaling = Literal["asinh", "log", "linear"]
_SCALINGS = ("asinh", "log", "linear")
Background = Literal["local", "panel", "hybrid", "global"]
_BACKGROUNDS = ("local", "panel", "hybrid", "global")
MAD_TO_SIGMA = 1.4826
#: z-scores saturate here (asinh(1e18) = 42.1), so float32 never overflows.
Z_MAX = 1e18


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of :func:`preprocess`; stored in every checkpoint.

    Attributes:
        input_size: side ``S`` of the square network input (pixels).
        bin_factor: max-pool bin size; None picks the smallest that fits the frame into ``S x S``.
        scaling: ``"log"`` (``sign(z) log1p|z|``, default), ``"asinh"`` or ``"linear"`` applied to the
            z-score; log and asinh are both linear near 0 and logarithmic for bright spots, log is cheaper.
        adu_per_photon: floor of the noise estimate (one photon, in ADU) for frames whose panel
            layout does not give the detector's gain.
        background: ``"local"`` (default): background and noise are the median and MAD of each
            ``background_cell``-square cell of the binned frame, interpolated between cell centres, so
            water and solvent rings, air scatter, ADC offsets and panel pedestals are removed the way
            peakfinder8's radial statistics remove them; ``"panel"``: the same within each panel's tile
            of the input, with cells fitted to the tile, so no cell and no interpolation mixes two
            panels that the input tiles side by side (their pedestals, gains and backgrounds differ);
            a frame of one tile that fills the input gets exactly ``"local"``; ``"hybrid"``: the local
            z-score plus the smooth background's shape in units of the frame's median noise
            (``(b - median b) / median sigma``), so spots keep their local significance and water rings
            stay visible (what tells blank from no-crystal frames); ``"global"``: one median and MAD per
            frame (checkpoints written before this setting existed).
        background_cell: cell side (network-input pixels) of the local background estimate.
        stats_samples: at most this many binned pixels estimate the per-frame median and MAD
            (``global``; ``local`` samples every second bin of each cell in both directions).
        chunk_pixels: pixels (of one panel, or of the binned frame where it is binned whole, and of the
            input) processed at once: bounds temporary memory, so buffers are reused instead of freshly
            mapped; no effect on results.
    """

    input_size: int = 256
    bin_factor: int | None = None
    scaling: Scaling = "log"
    adu_per_photon: float = 1.0
    background: Background = "local"
    background_cell: int = 32
    stats_samples: int = 4096
    chunk_pixels: int = 1 << 20

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ConfigError(f"preprocessing: input_size must be >= 8, got {self.input_size}")
        if self.bin_factor is not None and self.bin_factor < 1:
            raise ConfigError(f"preprocessing: bin_factor must be >= 1 or None, got {self.bin_factor}")
        if self.scaling not in _SCALINGS:
            raise ConfigError(f"preprocessing: scaling must be one of {_SCALINGS}, got {self.scaling!r}")
        if not self.adu_per_photon > 0:
            raise ConfigError(f"preprocessing: adu_per_photon must be > 0, got {self.adu_per_photon}")
        if self.background not in _BACKGROUNDS:
            raise ConfigError(f"preprocessing: background must be one of {_BACKGROUNDS}, got {self.background!r}")
        if self.background_cell < 8 or self.background_cell % 8:
            raise ConfigError(f"preprocessing: background_cell must be a multiple of 8, got {self.background_cell}")
        if self.stats_samples < 16 or self.chunk_pixels < 1:
            raise ConfigError("preprocessing: stats_samples must be >= 16 and chunk_pixels >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"preprocessing: unknown settings {sorted(unknown)}")
        # Checkpoints written before the local background existed were trained on the global one.
        return cls(**{"background": "global", **values})


@dataclass(frozen=True)
class Tile:
    """One panel's place: slab rectangle, binned size and top-left corner in the network input."""

    ss: tuple[int, int]
    fs: tuple[int, int]
    binned: tuple[int, int]
    origin: tuple[int, int]


@dataclass(frozen=True)
class InputPlan:
    """How frames of one shape map onto the network input (see :func:`plan_input`)."""

    frame_shape: tuple[int, int]
    input_size: int
    bin_factor: int
    tiles: tuple[Tile, ...] = field(repr=False)

    @property
    def covers_input(self) -> bool:
        """True when the tiles fill the whole ``S x S`` input (no padding)."""
        area = 0
        for tile in self.tiles:
            clip = self._clip(tile)
            if clip is not None:
                area += (clip[0].stop - clip[0].start) * (clip[1].stop - clip[1].start)
        return area == self.input_size**2

    def _clip(self, tile: Tile) -> tuple[slice, slice, slice, slice] | None:
        """Destination slices in the input and the matching source slices in the binned panel."""
        (r0, c0), (h, w), S = tile.origin, tile.binned, self.input_size
        dr0, dr1, dc0, dc1 = max(r0, 0), min(r0 + h, S), max(c0, 0), min(c0 + w, S)
        if dr0 >= dr1 or dc0 >= dc1:
            return None
        return slice(dr0, dr1), slice(dc0, dc1), slice(dr0 - r0, dr1 - r0), slice(dc0 - c0, dc1 - c0)

    @cached_property
    def tile_groups(self) -> dict[tuple[int, int], list[tuple[slice, slice]]]:
        """The tiles' places in the input (row and column slices), grouped by their shape ``(h, w)``."""
        groups: dict[tuple[int, int], list[tuple[slice, slice]]] = {}
        for tile in self.tiles:
            clip = self._clip(tile)
            if clip is not None:
                groups.setdefault((clip[0].stop - clip[0].start, clip[1].stop - clip[1].start), []).append(clip[:2])
        return groups

    @cached_property
    def tile_grid(self) -> tuple[tuple[slice, slice], tuple[int, int], tuple[int, int]] | None:
        """``(place, (rows, cols), (h, w))`` when every tile is ``h x w`` bins, uncropped, on a grid of
        that pitch, so the input's region ``place`` is ``rows x cols`` tiles (empty places padding);
        else None."""
        h, w = self.tiles[0].binned
        r0, c0 = min(t.origin[0] for t in self.tiles), min(t.origin[1] for t in self.tiles)
        places = set()
        for tile in self.tiles:
            (i, di), (j, dj) = divmod(tile.origin[0] - r0, h), divmod(tile.origin[1] - c0, w)
            if tile.binned != (h, w) or di or dj:
                return None
            places.add((i, j))
        rows, cols = max(i for i, _ in places) + 1, max(j for _, j in places) + 1
        if len(places) < len(self.tiles) or min(r0, c0) < 0 or max(r0 + rows * h, c0 + cols * w) > self.input_size:
            return None
        return (slice(r0, r0 + rows * h), slice(c0, c0 + cols * w)), (rows, cols), (h, w)

    @property
    def bins_whole_frame(self) -> bool:
        """True when binning the whole frame at once serves every tile: ``k > 1`` and each panel starts
        and ends on the bin grid, and the panels cover at least 90 % of the binned frame."""
        k, (ss, fs) = self.bin_factor, self.frame_shape
        if k == 1:
            return False
        area = 0
        for tile in self.tiles:
            if any(v % k for v in (*tile.ss, *tile.fs)):
                return False
            area += (tile.ss[1] - tile.ss[0]) * (tile.fs[1] - tile.fs[0])
        return area >= 0.9 * (ss // k) * (fs // k) * k * k

    def frames_per_chunk(self, chunk_pixels: int) -> int:
        """Frames :meth:`assemble` takes at once so that its temporaries hold about ``chunk_pixels``."""
        if self.bins_whole_frame:
            binned = (self.frame_shape[0] // self.bin_factor) * (self.frame_shape[1] // self.bin_factor)
            return max(1, chunk_pixels // binned)
        return max(1, chunk_pixels // max((t.ss[1] - t.ss[0]) * (t.fs[1] - t.fs[0]) for t in self.tiles))

    def assemble(self, x: torch.Tensor, mask: torch.Tensor | None, canvas: torch.Tensor) -> None:
        """Mask, max-bin and tile raw frames ``x`` ``(n, ss, fs)`` into ``canvas`` ``(n, S, S)`` float32.

        ``mask``: bool (True = good), ``(n, ss, fs)``, ``(ss, fs)`` or None; masked pixels read ``-inf``.
        Only the tiles' places in ``canvas`` are written (padding is left as it is).
        """
        if self.bins_whole_frame:
            binned = _masked_max_bin(x, mask, self.bin_factor)
            k = self.bin_factor
            for tile in self.tiles:
                clip = self._clip(tile)
                if clip is not None:
                    dst_r, dst_c, src_r, src_c = clip
                    panel = binned[:, tile.ss[0] // k : tile.ss[1] // k, tile.fs[0] // k : tile.fs[1] // k]
                    canvas[:, dst_r, dst_c] = panel[:, src_r, src_c]
            return
        k = self.bin_factor
        ninf = torch.tensor(-math.inf, dtype=torch.float32, device=x.device)
        for tile in self.tiles:
            clip = self._clip(tile)
            if clip is None:
                continue
            (s0, s1), (f0, f1) = tile.ss, tile.fs
            dst_r, dst_c, src_r, src_c = clip
            dst = canvas[:, dst_r, dst_c]
            whole = dst.shape[1:] == tile.binned  # not cropped: write straight into the input
            v = x[:, s0:s1, f0:f1].to(torch.float32)
            if mask is not None:
                mv = mask[s0:s1, f0:f1] if mask.ndim == 2 else mask[:, s0:s1, f0:f1]
                if k == 1 and whole:
                    torch.where(mv, v, ninf, out=dst)
                    continue
                v = torch.where(mv, v, ninf)
            if k > 1 and whole:
                _max_bin(v, k, tile.binned, out=dst)
            else:
                dst.copy_(_max_bin(v, k, tile.binned)[:, src_r, src_c] if k > 1 else v[:, src_r, src_c])

    def to_frame(self, heatmap: torch.Tensor | NDArray[np.floating]) -> Any:
        """Map heat maps from the network input (or a coarser Grad-CAM grid) onto the frame's pixels.

        Args:
            heatmap: ``(..., h, w)``; ``(h, w) = (S, S)`` is taken as is, any other grid is first
                resized to ``S x S`` bilinearly (as Grad-CAM does), then binning and padding are undone.

        Returns:
            ``(..., ss, fs)`` of the input's type (torch tensor or numpy array), float32; pixels outside
            every panel (and parts cropped away by a forced bin factor) are 0.
        """
        as_numpy = isinstance(heatmap, np.ndarray)
        hm = torch.from_numpy(np.ascontiguousarray(heatmap)) if as_numpy else cast(torch.Tensor, heatmap)
        if hm.ndim < 2:
            raise InputError(f"heat map must have at least 2 dimensions, got shape {tuple(hm.shape)}")
        lead, S, k = hm.shape[:-2], self.input_size, self.bin_factor
        hm = hm.reshape(-1, *hm.shape[-2:]).float()
        if hm.shape[-2:] != (S, S):
            hm = functional.interpolate(hm[:, None], size=(S, S), mode="bilinear", align_corners=False)[:, 0]
        # Every pixel of every tile is written below; only pixels outside all panels need zeros.
        area = sum((t.ss[1] - t.ss[0]) * (t.fs[1] - t.fs[0]) for t in self.tiles)
        whole = len(self.tiles) == 1 and area == self.frame_shape[0] * self.frame_shape[1]
        out = (hm.new_empty if whole else hm.new_zeros)((hm.shape[0], *self.frame_shape))
        for tile in self.tiles:
            clip = self._clip(tile)
            if clip is None:
                continue
            dst_r, dst_c, src_r, src_c = clip
            panel = hm.new_zeros((hm.shape[0], *tile.binned))
            panel[:, src_r, src_c] = hm[:, dst_r, dst_c]
            (s0, s1), (f0, f1) = tile.ss, tile.fs
            h, fh = s1 - s0, (s1 - s0) // k  # pixel rows, whole bin rows
            rows = panel.repeat_interleave(k, dim=2)[:, :, : f1 - f0] if k > 1 else panel  # (n, bin rows, fs)
            # Each whole bin row fills its k pixel rows in one contiguous broadcast copy (2x faster than
            # repeating along both axes, and no frame-sized temporaries: large outputs cost page faults).
            out[:, s0 : s0 + fh * k, f0:f1].unflatten(1, (fh, k)).copy_(rows[:, :fh, None].expand(-1, -1, k, -1))
            if fh * k < h:  # the last, partial bin row
                out[:, s0 + fh * k : s1, f0:f1] = rows[:, fh : fh + 1]
        out = out.reshape(*lead, *self.frame_shape)
        return out.numpy() if as_numpy else out


def _choose_grid(n_panels: int, cell: tuple[int, int], size: int) -> tuple[int, int]:
    """Grid ``(rows, cols)`` that needs the least binning, then has the fewest empty cells."""
    best: tuple[tuple[int, int, int], tuple[int, int]] | None = None
    for rows in range(1, n_panels + 1):
        cols = math.ceil(n_panels / rows)
        key = (math.ceil(max(rows * cell[0], cols * cell[1]) / size), rows * cols - n_panels, rows)
        if best is None or key < best[0]:
            best = (key, (rows, cols))
    assert best is not None
    return best[1]


@lru_cache(maxsize=64)
def plan_input(
    frame_shape: tuple[int, int], config: PreprocessConfig, layout: PanelLayout | None = None
) -> InputPlan:
    """Geometry of tiling, binning and padding for frames of ``frame_shape = (ss, fs)``."""
    ss, fs = (int(v) for v in frame_shape)
    if ss < 1 or fs < 1:
        raise InputError(f"frame shape {frame_shape} is empty")
    if layout is None:
        layout = PanelLayout(((0, ss, 0, fs),), grid=(1, 1))
    layout.check_frame((ss, fs))
    panels, S = layout.panels, config.input_size
    cell = (max(p[1] - p[0] for p in panels), max(p[3] - p[2] for p in panels))
    rows, cols = layout.grid or _choose_grid(len(panels), cell, S)
    k = config.bin_factor
    if k is None:
        k = max(1, math.ceil(max(rows * cell[0], cols * cell[1]) / S))
        while rows * math.ceil(cell[0] / k) > S or cols * math.ceil(cell[1] / k) > S:
            k += 1
    cell_b = (math.ceil(cell[0] / k), math.ceil(cell[1] / k))
    off = ((S - rows * cell_b[0]) // 2, (S - cols * cell_b[1]) // 2)
    tiles = []
    for i, (s0, s1, f0, f1) in enumerate(panels):
        r, c = divmod(i, cols)
        tiles.append(
            Tile(
                ss=(s0, s1),
                fs=(f0, f1),
                binned=(math.ceil((s1 - s0) / k), math.ceil((f1 - f0) / k)),
                origin=(off[0] + r * cell_b[0], off[1] + c * cell_b[1]),
            )
        )
    return InputPlan(frame_shape=(ss, fs), input_size=S, bin_factor=k, tiles=tuple(tiles))


def _as_tensor(array: Any, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number):
        with warnings.catch_warnings():  # read-only arrays (h5py, memmaps) are only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(array)
    raise InputError(f"{name}: unsupported dtype {array.dtype}")


def _max_bin(
    v: torch.Tensor, k: int, binned: tuple[int, int], out: torch.Tensor | None = None, *, minimum: bool = False
) -> torch.Tensor:
    """Max-pool ``(c, h, w)`` by ``k x k`` (partial edge bins padded with -inf), into ``out`` if given;
    with ``minimum`` the minimum of whole bins instead (any dtype, e.g. a mask as uint8)."""
    c, h, w = v.shape
    hb, wb = binned
    if (hb * k, wb * k) != (h, w):
        v = functional.pad(v, (0, wb * k - w, 0, hb * k - h), value=-math.inf)
    # Two single-axis reductions are several times faster on CPU than max_pool2d with one channel;
    # for k = 2 an elementwise maximum of the two halves beats amax (no -inf initialisation pass).
    if k == 2:
        pair = torch.minimum if minimum else torch.maximum
        halves = v.reshape(c, hb, 2, wb * 2)
        rows = pair(halves[:, :, 0], halves[:, :, 1]).view(c, hb, wb, 2)
        return pair(rows[..., 0], rows[..., 1], out=out)
    if minimum:
        return torch.amin(v.reshape(c, hb, k, wb * k).amin(dim=2).view(c, hb, wb, k), dim=3, out=out)
    rows = v.reshape(c, hb, k, wb * k).amax(dim=2).view(c, hb, wb, k)
    return torch.amax(rows, dim=3, out=out)


def _masked_max_bin(x: torch.Tensor, mask: torch.Tensor | None, k: int) -> torch.Tensor:
    """``(n, ss, fs)`` frames -> ``(n, ss // k, fs // k)`` float32: the maximum of each whole ``k x k``
    bin over its good pixels (``mask`` True, ``(n, ss, fs)`` or ``(ss, fs)``), ``-inf`` where none is.

    The same values as masking with ``-inf`` first, with one pass over the frames instead of three:
    all bins are max-binned unmasked, then only the bins holding a masked pixel are recomputed.
    """
    ss, fs = x.shape[1:]
    hb, wb = ss // k, fs // k
    binned = _max_bin(x[:, : hb * k, : wb * k].to(torch.float32), k, (hb, wb))
    if mask is None:
        return binned
    bad = (~mask[..., : hb * k, : wb * k]).view(torch.uint8)
    any_bad = _max_bin(bad.reshape(-1, hb * k, wb * k), k, (hb, wb))
    where = any_bad.reshape(*bad.shape[:-2], hb, wb).nonzero(as_tuple=True)  # (frame,) row, column
    if where[0].numel() == 0:
        return binned
    offsets = torch.arange(k, device=x.device)
    rows = (where[-2][:, None] * k + offsets)[:, :, None]  # (bins, k, 1)
    cols = (where[-1][:, None] * k + offsets)[:, None, :]  # (bins, 1, k)
    ninf = torch.tensor(-math.inf, dtype=torch.float32, device=x.device)
    if mask.ndim == 2:  # one mask for every frame: the same bins in each
        values = torch.where(mask[rows, cols], x[:, rows, cols].to(torch.float32), ninf)
        binned[:, where[0], where[1]] = values.amax(dim=(-2, -1))
    else:
        frame = where[0][:, None, None]
        values = torch.where(mask[frame, rows, cols], x[frame, rows, cols].to(torch.float32), ninf)
        binned[where] = values.amax(dim=(-2, -1))
    return binned


def _asinh_(z: torch.Tensor) -> torch.Tensor:
    """In-place ``asinh`` of finite values, as ``sign(z) log(|z| + sqrt(z² + 1))`` on ``|z| <= Z_MAX``.

    Vectorised (``torch.asinh`` on CPU is not, and took half of the preprocessing time); agrees with
    it to 1e-6 absolute.
    """
    a = z.clamp_(-Z_MAX, Z_MAX).abs()
    t = (a * a).add_(1.0).sqrt_().add_(a).log_()
    return z.copy_(t.copysign_(z))


def _robust_stats(sample: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and noise ``max(1.4826 MAD, floor)`` over the last axis of ``sample``; non-finite values
    are ignored. Where no value is finite the median is NaN."""
    sample = torch.where(torch.isfinite(sample), sample, torch.nan)
    med = torch.nanmedian(sample, dim=-1).values
    mad = torch.nanmedian((sample - med[..., None]).abs(), dim=-1).values
    return med, (MAD_TO_SIGMA * mad).clamp_min(floor)


def _global_background(canvas: torch.Tensor, config: PreprocessConfig, floor: float) -> tuple[torch.Tensor, ...]:
    """Per-frame median and noise of ``(c, S, S)``, shaped ``(c, 1, 1)``."""
    c, S, _ = canvas.shape
    step = max(1, math.ceil(S / math.sqrt(config.stats_samples)))
    med, sigma = _robust_stats(canvas[:, ::step, ::step].reshape(c, -1), floor)
    empty = torch.isnan(med)
    med, sigma = torch.where(empty, 0.0, med), torch.where(empty, 1.0, sigma)
    return med[:, None, None], sigma[:, None, None]


def _cells(sub: torch.Tensor, grid: tuple[int, int], per: tuple[int, int]) -> torch.Tensor:
    """``(c, h, w)`` samples (``h <= grid[0] per[0]``, ``w <= grid[1] per[1]``) as ``(c, rows, cols,
    per[0] per[1])`` cells; the missing edge is NaN."""
    c, h, w = sub.shape
    (nr, nc), (pr, pc) = grid, per
    if (h, w) != (nr * pr, nc * pc):
        sub = functional.pad(sub, (0, nc * pc - w, 0, nr * pr - h), value=math.nan)
    return sub.reshape(c, nr, pr, nc, pc).permute(0, 1, 3, 2, 4).reshape(c, nr, nc, pr * pc)


def _fill_and_interpolate(values: torch.Tensor, per: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``(c, rows, cols)`` cell values (NaN: no good bin; such cells take the median of the other cells,
    or 0 when none has one), bilinear between cell centres onto the ``(c, *size)`` sample grid."""
    c, nr, nc = values.shape
    empty = torch.isnan(values)
    if empty.any():
        fill = torch.nanmedian(values.reshape(c, -1), dim=1).values.nan_to_num_(0.0)
        values = torch.where(empty, fill[:, None, None], values)
    full = functional.interpolate(values[:, None], size=(nr * per[0], nc * per[1]), mode="bilinear")
    return full[:, 0, : size[0], : size[1]]


def _cell_stats(
    sub: torch.Tensor, grid: tuple[int, int], per: tuple[int, int], floor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Background and noise on the sample grid ``sub`` ``(c, h, w)``, from ``grid`` cells of ``per``
    samples each.

    The background is each cell's median (spots cover a few samples, so the median ignores them),
    interpolated bilinearly between cell centres; the noise is ``1.4826`` times each cell's median
    absolute deviation *from that interpolated background* (so a steep water ring's slope is not taken
    for noise), at least ``floor``, interpolated likewise. Both ``(c, h, w)``.
    """
    size = (sub.shape[1], sub.shape[2])
    sub = torch.where(torch.isfinite(sub), sub, torch.nan)
    background = _fill_and_interpolate(torch.nanmedian(_cells(sub, grid, per), dim=-1).values, per, size)
    deviation = torch.nanmedian(_cells((sub - background).abs_(), grid, per), dim=-1).values
    noise = _fill_and_interpolate((MAD_TO_SIGMA * deviation).clamp_min_(floor), per, size).clamp_min_(floor)
    return background, noise


def _local_background(canvas: torch.Tensor, config: PreprocessConfig, floor: float) -> tuple[torch.Tensor, ...]:
    """Background and noise of ``(c, S, S)`` per ``background_cell`` square, on a grid of ``cell / 8`` bins.

    The bins at a stride of ``r = cell / 8`` are the samples: 8 x 8 per cell (:func:`_cell_stats`).
    Cells without a good bin take the median of the frame's other cells; a frame without any good bin
    gets background 0 and noise ``floor``. The ``cell / 8``-bin steps are smooth enough to leave no
    visible edges and 64 times cheaper than per-bin interpolation.

    Returns:
        background and noise, each ``(c, m, m)`` on steps of ``r`` bins (``m = ceil(S / r)``).
    """
    n = math.ceil(canvas.shape[1] / config.background_cell)
    return _cell_stats(canvas[:, :: config.background_cell // 8, :: config.background_cell // 8], (n, n), (8, 8), floor)


def _subtract_(
    view: torch.Tensor,
    med: torch.Tensor,
    sigma: torch.Tensor,
    step: tuple[int, int],
    shape: torch.Tensor | None = None,
) -> None:
    """``view = (view - med) / sigma (+ shape)`` in place, for ``(c, h, w)`` bins and ``(c, ceil(h / rs),
    ceil(w / rf))`` statistics on steps of ``step = (rs, rf)`` bins."""
    c, h, w = view.shape
    rs, rf = step
    if med.shape[-2] * rs == h and med.shape[-1] * rf == w and view.is_contiguous():
        # Each statistics step covers rs x rf bins: broadcast, no temporaries.
        blocks = view.view(c, h // rs, rs, w // rf, rf)
        blocks.sub_(med[:, :, None, :, None]).div_(sigma[:, :, None, :, None])
        if shape is not None:
            blocks.add_(shape[:, :, None, :, None])
        return
    med, sigma = (v.repeat_interleave(rf, -1).repeat_interleave(rs, -2)[:, :h, :w] for v in (med, sigma))
    view.sub_(med).div_(sigma)
    if shape is not None:
        view.add_(shape.repeat_interleave(rf, -1).repeat_interleave(rs, -2)[:, :h, :w])


def _panel_cells(h: int, w: int, cell: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Cells of the ``"panel"`` background for a tile of ``h x w`` bins: ``(grid, step, per)``.

    ``round(h / cell) x round(w / cell)`` cells, but at least two along a side of 16 bins or more (so
    the background follows a gradient across a small ASIC tile), each sampled about 8 x 8 times, as
    ``"local"`` samples its cells: every ``step = (cell height // 8, cell width // 8)`` bins (at least
    1); ``per`` samples per cell along each axis. A tile of whole ``cell`` squares gets the ``"local"``
    cells exactly.
    """
    grid = (max(1, round(h / cell), min(2, h // 16)), max(1, round(w / cell), min(2, w // 16)))
    step = (max(1, h // grid[0] // 8), max(1, w // grid[1] // 8))
    return grid, step, (math.ceil(h / (grid[0] * step[0])), math.ceil(w / (grid[1] * step[1])))


def _panel_normalise_(canvas: torch.Tensor, plan: InputPlan, config: PreprocessConfig, floor: float) -> None:
    """The ``"panel"`` z-score of ``(c, S, S)`` in place: :func:`_cell_stats` within each tile
    (:func:`_panel_cells`); tiles of one shape are estimated together. Bins outside every tile are left."""
    if plan.tile_grid is not None and _grid_normalise_(canvas, plan.tile_grid, config, floor):
        return
    for (h, w), places in plan.tile_groups.items():
        grid, step, per = _panel_cells(h, w, config.background_cell)
        views = [canvas[:, rows, cols] for rows, cols in places]
        tiles = views[0] if len(views) == 1 else torch.stack(views, dim=1).flatten(0, 1)
        med, sigma = _cell_stats(tiles[:, :: step[0], :: step[1]], grid, per, floor)
        _subtract_(tiles, med, sigma, step)
        if len(views) > 1:
            for view, values in zip(views, tiles.unflatten(0, (canvas.shape[0], len(views))).unbind(1), strict=True):
                view.copy_(values)


def _grid_normalise_(
    canvas: torch.Tensor,
    tile_grid: tuple[tuple[slice, slice], tuple[int, int], tuple[int, int]],
    config: PreprocessConfig,
    floor: float,
) -> bool:
    """:func:`_panel_normalise_` for tiles on a regular grid (:attr:`InputPlan.tile_grid`), on views of
    ``canvas`` without gathering the tiles; False (nothing done) where the sample steps do not divide
    the tile."""
    (rows_at, cols_at), (rows, cols), (h, w) = tile_grid
    grid, (rs, rf), per = _panel_cells(h, w, config.background_cell)
    if h % rs or w % rf:
        return False
    c, hs, ws = canvas.shape[0], h // rs, w // rf
    region = canvas[:, rows_at, cols_at].unflatten(2, (cols, ws, rf)).unflatten(1, (rows, hs, rs))
    samples = region[:, :, :, 0, :, :, 0].permute(0, 1, 3, 2, 4).reshape(-1, hs, ws)  # (c * tiles, hs, ws)
    med, sigma = (v.view(c, rows, cols, hs, ws).permute(0, 1, 3, 2, 4)[:, :, :, None, :, :, None]
                  for v in _cell_stats(samples, grid, per, floor))
    region.sub_(med).div_(sigma)
    return True


def _normalise_(canvas: torch.Tensor, plan: InputPlan, config: PreprocessConfig, floor: float) -> torch.Tensor:
    """Robust z-score (noise at least ``floor`` ADU) and scaling of ``(c, S, S)`` in place.

    Non-finite bins become 0.
    """
    c = canvas.shape[0]
    if config.background == "panel":
        _panel_normalise_(canvas, plan, config, floor)
    elif config.background in ("local", "hybrid"):
        med, sigma = _local_background(canvas, config, floor)
        shape = None
        if config.background == "hybrid":
            flat = (c, -1)
            shape = (med - med.reshape(flat).median(dim=1).values[:, None, None]).div_(
                sigma.reshape(flat).median(dim=1).values[:, None, None]
            )
        _subtract_(canvas, med, sigma, (config.background_cell // 8,) * 2, shape)
    else:
        med, sigma = _global_background(canvas, config, floor)
        canvas.sub_(med).div_(sigma)
    # Masked bins (-inf), bins with an unmasked NaN or inf, and z beyond the float range: background.
    canvas.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    if config.scaling == "asinh":
        _asinh_(canvas)
    elif config.scaling == "log":
        torch.copysign(canvas.abs().log1p_(), canvas, out=canvas)
    return canvas


def photon_adu(config: PreprocessConfig, layout: PanelLayout | None = None) -> float:
    """One photon in ADU for frames of ``layout``: its gain, else ``config.adu_per_photon``."""
    return layout.adu_per_photon if layout is not None and layout.adu_per_photon else config.adu_per_photon


@torch.no_grad()
def preprocess(
    data: torch.Tensor | NDArray[Any],
    mask: torch.Tensor | NDArray[np.bool_] | None = None,
    config: PreprocessConfig | None = None,
    layout: PanelLayout | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw frames to the network input (the one code path of training and inference).

    Args:
        data: ``(n, ss, fs)`` or ``(ss, fs)`` frames (any real dtype; float32 preferred), numpy or torch;
            never modified. A torch tensor's device is kept.
        mask: bool, True = good pixel; ``(n, ss, fs)``, ``(ss, fs)`` (shared by all frames) or None.
        config: preprocessing settings (default :class:`PreprocessConfig()`).
        layout: panels of a multi-panel slab and the detector's gain; None treats the slab as one
            image of ``config.adu_per_photon`` ADU per photon.
        out: a float32 ``(n, 1, S, S)`` contiguous tensor on the frames' device to write into (a
            streaming loop reuses one buffer instead of mapping fresh memory for every batch).

    Returns:
        float32 ``(n, 1, S, S)``, finite, 0 = background level (``out`` when given).
    """
    config = config or PreprocessConfig()
    x = _as_tensor(data, "frames")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"frames must be real (n, ss, fs) arrays, got shape {tuple(x.shape)} {x.dtype}")
    n, ss, fs = x.shape
    m = None
    if mask is not None:
        m = _as_tensor(mask, "mask").to(device=x.device)
        if m.dtype != torch.bool:
            m = m != 0
        if m.shape not in ((n, ss, fs), (ss, fs)):
            raise InputError(f"mask shape {tuple(m.shape)} does not match frames {(n, ss, fs)}")
    plan = plan_input((ss, fs), config, layout)
    S = config.input_size
    floor = photon_adu(config, layout)
    if out is None:
        out = torch.empty((n, 1, S, S), dtype=torch.float32, device=x.device)
    elif out.shape != (n, 1, S, S) or out.dtype != torch.float32 or out.device != x.device or not out.is_contiguous():
        raise InputError(f"preprocess: out must be a contiguous float32 {(n, 1, S, S)} tensor on {x.device}")
    # Where the tiles fill the input, every element is written below; padding must read -inf (= masked).
    if not plan.covers_input:
        out.fill_(-math.inf)
    # Chunks of frames bound the temporaries of one panel (raw stage) and of the input (normalisation).
    chunk, norm_chunk = plan.frames_per_chunk(config.chunk_pixels), max(1, config.chunk_pixels // S**2)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        canvas = out[i0:i1, 0]
        plan.assemble(x[i0:i1], None if m is None else m if m.ndim == 2 else m[i0:i1], canvas)
        for j0 in range(0, canvas.shape[0], norm_chunk):
            _normalise_(canvas[j0 : j0 + norm_chunk], plan, config, floor)
    return out


@torch.no_grad()
def input_map(
    values: torch.Tensor | NDArray[Any], config: PreprocessConfig, layout: PanelLayout | None = None
) -> torch.Tensor:
    """Per-pixel maps ``(n, ss, fs)`` (e.g. a Bragg-spot mask) onto the network input's grid, unnormalised.

    The same tiling and max-binning as :func:`preprocess` (a bin is True when any of its pixels is),
    so a target drawn on the frame lines up with the input. Returns float32 ``(n, S, S)``, padding 0.
    """
    v = _as_tensor(values, "map")
    v = v[None] if v.ndim == 2 else v
    plan = plan_input(tuple(v.shape[1:]), config, layout)
    S = config.input_size
    out = torch.zeros((v.shape[0], S, S), dtype=torch.float32, device=v.device)
    plan.assemble(v.to(torch.float32), None, out)
    return out


def panel_layout_for(geometry: DetectorGeometry | None) -> PanelLayout | None:
    """The panel layout (panels and gain) preprocessing uses for frames of ``geometry``.

    None (no geometry known): the slab is one image of ``PreprocessConfig.adu_per_photon``.
    """
    return None if geometry is None else PanelLayout.from_geometry(geometry)
