"""Raw-frame augmentation for training: detector effects a network must not depend on (gain and read
noise, flips and 90-degree rotations, panel gaps, masked rectangles, hot pixels, NaN/inf/huge values),
applied on the training device to ``(n, ss, fs)`` frames before preprocessing; presets in
:data:`AUGMENTATIONS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.models.preprocess import MAD_TO_SIGMA


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
