"""SpotNet: a hit finder that segments Bragg spots, counts them, and decides from the count.

Design (``spotnet``: input ``(n, 1, 512, 512)``, the preprocessed frame at full resolution):

=========== ===================================================== ========= ==============
module      layers                                                 stride    out (512²)
=========== ===================================================== ========= ==============
spots.stem  4x4 stride-4 conv (1 -> 16) and BN, no ReLU: a learned  /4        16 x 128²
            lossless space-to-depth (16 values a 4x4 cell)
spots.body  3x3 convs, BN, ReLU: 16 -> 16 -> 16 -> 16                /4        16 x 128²
spots.logit 1x1 conv -> spot logit per 4x4 input cell                /4        1 x 128²
count       local maxima (3x3 cells) of the spot map with P(spot) > 0.5,       1: log(1 + nSpots)
            each counted as ``2 P(spot) - 1`` (a soft spot count)
peaks       optional (``peak_snr``; not in the shipped models): input      1 per SNR:
            pixels at or above each z-score, local maxima over 3x3 pixels,    log(1 + nPeaks)
            with a neighbour of z >= 2.5 (two-pixel peaks); no weights
head        linear: log(1 + nSpots) (and the bright-peak counts) -> class
            logits (five classes: and the diffuse contrast, the spread of
            the 16x16-averaged input)
=========== ===================================================== ========= ==============

About 7 000 parameters and 0.12 GMAC per frame (HitNet: 0.20). The spot head is trained as a
per-cell segmentation against the simulator's true Bragg-spot masks (``/truth/bragg_mask``, only
where a spot stands 3 sigma above the local background), with one-pixel spikes added as "no spot"
(:mod:`sfx_cnnhit.models.spot_training`), never against frame labels: it learns what a spot looks
like (a compact peak over the local background, unlike a lone hot pixel) and not which frames a
simulator happens to call hits; its receptive field is 28 input pixels, so it cannot learn a
position prior or a background texture. The head then maps the count to the classes (two
parameters per class, fitted on validation frames). Measured on frames our simulator did not make,
this generalises where a frame classifier did not (docs/models.md).

The optional bright-peak counts are peakfinder8's test (a local maximum ``peak_snr`` sigma over the
local background, at least two pixels) on the same normalised input, for spots that put nearly all
their photons into one pixel (small crystals; the spot head, taught to reject lone bright pixels,
misses some of them); the head weighs both counts. Measured on nanoBragg, it keeps one more of the
five hits the shipped head loses (docs/models.md, session 16). Grad-CAM sees only the spot map: a hit
decided by bright peaks alone has a faint or empty map.

``stride`` and ``channels`` are parameters (``spotnet_test``: stride 2); the Grad-CAM target is
``spots.logit``, the spot map the count is taken from: heat maps at ``1/stride`` of the input, i.e.
spot resolution, that show the spots the decision counted (``spots.body``, one layer earlier, spread
Grad-CAM's mass over background texture: docs/explain.md).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from typing import cast

import torch
from torch import nn
from torch.nn import functional

from sfx_cnnhit.models.hitnet import ConvBNReLU


class SpotHead(nn.Sequential):
    """``(n, 1, S, S)`` preprocessed frames -> ``(n, 1, S/k, S/k)`` spot logits, one per ``k x k`` input
    bins (``k = stride``: the stem is a ``k x k`` stride-``k`` linear convolution, a learned space-to-depth)."""

    def __init__(self, channels: tuple[int, ...] = (4, 8, 8), stride: int = 2) -> None:
        if len(channels) < 2:
            raise ValueError("SpotHead needs a stem and at least one 3x3 layer")
        if stride < 1:
            raise ValueError(f"SpotHead: stride must be positive, got {stride}")
        body = (ConvBNReLU(i, o) for i, o in itertools.pairwise(channels))
        super().__init__(
            OrderedDict(
                stem=ConvBNReLU(1, channels[0], stride=stride, relu=False, kernel=stride),
                body=nn.Sequential(*body),
                logit=nn.Conv2d(channels[-1], 1, 1),
            )
        )


def _window_max(v: torch.Tensor, window: int) -> torch.Tensor:
    """Maximum of ``(..., h, w)`` over ``window x window`` squares centred on each element (outside the
    map counts as -inf): ``max_pool2d(v, window, 1, window // 2)``, as two one-axis sliding maxima
    (exactly equal, and on CPU about 20x faster than max_pool2d on one channel)."""
    half = window // 2
    for dim in (-1, -2):
        if half == 0:
            break
        length = v.shape[dim]
        pad = [half, half, 0, 0] if dim == -1 else [0, 0, half, half]
        padded = functional.pad(v, pad, value=-math.inf)
        out = torch.maximum(padded.narrow(dim, 0, length), padded.narrow(dim, 1, length))
        for shift in range(2, window):
            torch.maximum(out, padded.narrow(dim, shift, length), out=out)
        v = out
    return v


class SpotCount(nn.Module):
    """Spot logits ``(n, 1, h, w)`` -> ``(n, 1)`` ``log(1 + nSpots)``, a soft count of local maxima.

    A spot is a local maximum of the logits over ``window x window`` with P(spot) > 0.5; it counts
    ``2 P - 1`` (0 at the threshold, 1 when certain), so the count is continuous in the logits.

    With ``lone_snr`` (and the log-scaled input ``x``, ``stride`` input pixels a cell) a maximum is not
    counted when the brightest input pixel of its cell and the pixels around it reaches z ``lone_snr``
    but no two adjacent pixels there reach z ``pair_snr``: a lone pixel that bright is a zinger or a hot
    pixel not yet masked, not a Bragg spot (peakfinder8's ``min_pix_count`` 2 for bright peaks).
    """

    def __init__(self, window: int = 3, *, lone_snr: float | None = None, pair_snr: float = 2.5,
                 stride: int = 4) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"SpotCount: window must be odd and positive, got {window}")
        if lone_snr is not None and not lone_snr > pair_snr >= 0:
            raise ValueError(f"SpotCount: need lone_snr > pair_snr >= 0, got {lone_snr} and {pair_snr}")
        self.window = window
        self.lone_snr, self.pair_snr, self.stride = lone_snr, pair_snr, stride

    def peaks(self, logits: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``(n, 1, h, w)``: local maxima with a positive logit (not lone pixels, given ``x``)."""
        local = _window_max(logits.detach(), self.window)
        peaks = (logits >= local) & (logits > 0)
        if self.lone_snr is not None and x is not None:
            where = peaks.nonzero(as_tuple=True)
            peaks[where] = ~self._lone(x, where[0], where[2], where[3])
        return peaks

    def _lone(self, x: torch.Tensor, frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Bool ``(m,)``: is the spot-map cell ``(frame, row, col)`` a lone bright pixel of ``x``?"""
        s, (height, width) = self.stride, x.shape[-2:]
        offsets = torch.arange(-1, s + 1, device=x.device)
        rows, cols = row[:, None] * s + offsets, col[:, None] * s + offsets  # the cell and one pixel around
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        patch = x.detach()[frame[:, None, None], 0, rows.clamp(0, height - 1)[:, :, None],
                           cols.clamp(0, width - 1)[:, None, :]]  # (m, s+2, s+2)
        patch = patch.masked_fill_(~inside, -math.inf)
        pairs = torch.stack([
            torch.minimum(patch[:, :, :-1], patch[:, :, 1:]).amax(dim=(1, 2)),
            torch.minimum(patch[:, :-1], patch[:, 1:]).amax(dim=(1, 2)),
            torch.minimum(patch[:, :-1, :-1], patch[:, 1:, 1:]).amax(dim=(1, 2)),
            torch.minimum(patch[:, :-1, 1:], patch[:, 1:, :-1]).amax(dim=(1, 2)),
        ]).amax(dim=0)
        assert self.lone_snr is not None  # only called with the rule on
        return (patch.amax(dim=(1, 2)) >= math.log1p(self.lone_snr)) & (pairs < math.log1p(self.pair_snr))

    def forward(self, logits: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        weight = (2 * torch.sigmoid(logits) - 1) * self.peaks(logits, x)
        return torch.log1p(weight.sum(dim=(2, 3)))


class DiffuseContrast(nn.Module):
    """``(n, 1, S, S)`` inputs -> ``(n, 1)``: the spread (standard deviation) of the input averaged over
    squares of ``S / 32`` (16 at 512), i.e. of the smooth background's shape that ``background="hybrid"``
    preprocessing keeps (water and solvent rings, air scatter); about 0 for a blank frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.avg_pool2d(x, max(2, x.shape[-1] // 32)).flatten(1).std(dim=1, keepdim=True)


class BrightPeakCount(nn.Module):
    """``(n, 1, S, S)`` log-scaled inputs (``sign(z) log1p|z|``) -> ``(n, len(snr))``: ``log(1 + nPeaks)``.

    A bright peak is an input pixel at or above each z-score of ``snr`` that is a local maximum (no
    higher pixel among its 8 neighbours) and whose brightest neighbour reaches ``second_snr``: a peak
    of at least two pixels, as peakfinder8 with ``min_pix_count`` 2, so a lone hot pixel or spike is
    not one. Only pixels over the lowest level are visited (a few per frame).
    """

    _OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

    def __init__(self, snr: tuple[float, ...], second_snr: float = 2.5) -> None:
        super().__init__()
        if not snr or min(snr) <= 0 or second_snr < 0:
            raise ValueError(f"BrightPeakCount: SNR levels must be positive, got {snr} and {second_snr}")
        self.snr = tuple(float(v) for v in snr)
        self.second_snr = float(second_snr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [math.log1p(v) for v in self.snr]
        frame, row, col = (x[:, 0] >= min(levels)).nonzero(as_tuple=True)
        padded = functional.pad(x[:, 0], (1, 1, 1, 1), value=-math.inf)
        value = padded[frame, row + 1, col + 1]
        second = torch.stack([padded[frame, row + 1 + dr, col + 1 + dc] for dr, dc in self._OFFSETS]).amax(dim=0)
        peak = (value >= second) & (second >= math.log1p(self.second_snr))
        counts = [torch.bincount(frame[peak & (value >= level)], minlength=x.shape[0]) for level in levels]
        return torch.stack(counts, dim=1).to(x.dtype).log1p_()


class SpotNet(nn.Module):
    """Spot segmentation + soft spot count (+ diffuse contrast) + linear head (see the module docstring).

    Args:
        num_classes: outputs.
        channels: output channels of the stem and of each 3x3 layer of the spot head.
        stride: the spot map's cell, in input pixels (the stem's kernel and stride).
        window: side of the local-maximum window on the spot map (cells).
        diffuse: also feed the head :class:`DiffuseContrast` (for five classes on ``hybrid`` inputs,
            where it tells blank from no-crystal frames).
        peak_snr: also feed the head :class:`BrightPeakCount` at these z-scores (inputs scaled ``log``,
            every SpotNet's); empty: not.
        peak_second_snr: :class:`BrightPeakCount`'s brightest-neighbour z-score, and the z-score two
            adjacent pixels of a counted spot must reach under ``lone_pixel_snr``.
        lone_pixel_snr: do not count spots that are a lone pixel of at least this z-score
            (:class:`SpotCount`); None: count them.
    """

    def __init__(
        self,
        num_classes: int = 2,
        channels: tuple[int, ...] = (4, 8, 8),
        stride: int = 2,
        window: int = 3,
        diffuse: bool = False,
        peak_snr: tuple[float, ...] = (),
        peak_second_snr: float = 2.5,
        lone_pixel_snr: float | None = None,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.spots = SpotHead(channels, stride)
        self.count = SpotCount(window, lone_snr=lone_pixel_snr, pair_snr=peak_second_snr, stride=stride)
        self.diffuse = DiffuseContrast() if diffuse else None
        self.peaks = BrightPeakCount(peak_snr, peak_second_snr) if peak_snr else None
        self.head = nn.Linear(1 + bool(diffuse) + len(peak_snr), num_classes)
        for module in self.spots.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Start with spots rare (P = 0.05) and "3 spots = 50 % hit" for hit/miss.
        logit = cast(nn.Conv2d, self.spots.logit)
        assert logit.bias is not None  # nn.Conv2d(..., bias=True)
        nn.init.constant_(logit.bias, -math.log(19.0))
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[:, 0] = torch.linspace(-2.0, 2.0, num_classes)
            self.head.bias.copy_(-self.head.weight[:, 0] * math.log1p(3.0))

    def spot_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 1, S, S) -> (n, 1, S/stride, S/stride)`` spot logits."""
        logits: torch.Tensor = self.spots(x)
        return logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 1, S, S) -> (n, f)``: ``log(1 + nSpots)`` (then the diffuse contrast, then the bright-peak counts)."""
        parts = [self.count(self.spots(x), x)]
        parts += [extra(x) for extra in (self.diffuse, self.peaks) if extra is not None]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, num_classes)``."""
        logits: torch.Tensor = self.head(self.features(x))
        return logits
