"""Run-level hot-pixel maps, in the spirit of Cheetah's ``hotpixFreq``.

A hot pixel reads high in frame after frame; a Bragg spot moves with the crystal. A per-frame finder
cannot tell a one-pixel spot from a hot pixel, so unmasked hot pixels make misses look like weak hits.
:class:`HotPixelRule` flags, in each window of ``window`` consecutive frames of a run, the pixels that
are a *strict local maximum* (above all eight neighbours) in at least half of ``samples`` frames read
evenly across the window, and so often that background noise would get there by chance with odds
below ``noise_odds`` (in all of them when fewer than ``all_below`` were read). Background noise makes a
pixel the maximum of its 3x3 neighbourhood in about 1 frame of 9, so at the defaults (12 of 24) a false
flag has odds of 2.6e-6 per pixel (1.7e-4 on a panel edge, 7e-3 at a panel corner: about one pixel in
a million is masked for nothing), and about 1.5e-4 for a short file of 4 frames (4 of 4). A hot pixel
a few sigmas above its background is the maximum in most frames, and one of two noise sigmas still in
about two of three (half finds it; three in four missed such pixels of our simulated detectors, whose
lone bright pixels then counted as spots). The test is free of units and gains, and works on photon
counters with zero background (a pixel that counts in most frames while its neighbours do not is hot).

Windows are fixed by frame index, so a map depends only on the run's frames, never on the order or
the resumption of processing (restarted and MPI runs see the same maps). Windows with fewer than
``min_samples`` readable frames get no map.

Code that sees frames one call at a time (the OM and Cheetah plugins) uses :class:`HotPixelTracker`
instead: the same test on the frames it has been shown, like Cheetah's ``hotpixFreq`` /
``hotpixMemory`` / ``hotpixRecalc``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray


def _noise_odds(k: int, n: int, p: float = 1 / 9) -> float:
    """Odds that a noise pixel, a strict local maximum with probability ``p`` per frame, is one in ``k``
    or more of ``n`` frames (the binomial tail)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@dataclass(frozen=True)
class HotPixelRule:
    """How hot-pixel maps are made.

    Attributes:
        window: frames per map (consecutive frame indices of the run; hot pixels come and go slowly).
        samples: frames read per window, evenly spaced (the extra reading costs ``samples / window``).
        min_samples: windows with fewer readable frames get no map (single images, short files).
        frequency: fraction of the sampled frames in which a pixel must at least be a strict local maximum.
        noise_odds: and so many of them that a noise pixel (a maximum in 1 frame of 9) gets there with
            odds below this (binomial; it raises 4 of 8 to 7 of 8, 8 of 16 to 10 of 16).
        all_below: with fewer sampled frames than this, a pixel must be a maximum in every one.
    """

    window: int = 500
    samples: int = 24
    min_samples: int = 4
    frequency: float = 0.5
    noise_odds: float = 3e-6
    all_below: int = 8

    def __post_init__(self) -> None:
        if self.window < 1 or self.samples < 1 or self.min_samples < 1:
            raise ValueError("hot-pixel window, samples and min_samples must be >= 1")
        if not 0.5 <= self.frequency <= 1.0:
            raise ValueError("hot-pixel frequency must lie in [0.5, 1]")
        if not 0.0 < self.noise_odds < 1.0:
            raise ValueError("hot-pixel noise_odds must lie in (0, 1)")

    def window_of(self, index: NDArray[np.int64]) -> NDArray[np.int64]:
        """The window number of each frame index."""
        return np.asarray(index, np.int64) // self.window

    def required(self, n: int) -> int | None:
        """In how many of ``n`` sampled frames a pixel must be a strict local maximum to be hot (None: no map)."""
        if n < self.min_samples:
            return None
        if n < self.all_below:
            return n
        need = math.ceil(self.frequency * n)
        while need < n and _noise_odds(need, n) > self.noise_odds:
            need += 1
        return need

    def sample_indices(self, window: int, n_frames: int) -> NDArray[np.int64]:
        """Frame indices read to make the map of ``window`` in a run of ``n_frames`` frames."""
        lo, hi = window * self.window, min((window + 1) * self.window, n_frames)
        if hi <= lo:
            return np.zeros(0, np.int64)
        n = min(self.samples, hi - lo)
        return np.unique(np.round(np.linspace(lo, hi - 1, n)).astype(np.int64))

    def hot_map(self, frames: Iterable[tuple[NDArray[np.float32], NDArray[np.bool_]]]) -> NDArray[np.bool_] | None:
        """``(ss, fs)`` bool, True = hot, from ``(frame, good)`` pairs (``(ss, fs)`` each, good = True);
        None when fewer than ``min_samples`` frames were given.

        Two passes over the frames: the second, at the first pass's hot pixels' neighbours only and with
        those hot pixels hidden (:func:`strict_local_maxima`), finds the hot pixels that a brighter hot
        neighbour kept from being a maximum (clusters, pairs).
        """
        samples = list(frames)
        need = self.required(len(samples))
        if need is None:
            return None
        count = np.zeros(samples[0][0].shape, np.int32)
        for frame, good in samples:
            count += strict_local_maxima(frame, good)
        hot = count >= need
        if hot.any():  # only a hot pixel's neighbours see another neighbourhood: recount just them
            ss, fs = np.nonzero(_beside(hot))
            again = np.zeros(ss.size, np.int32)
            for frame, good in samples:
                again += _maxima_at(frame, good, ss, fs, hidden=hot)
            hot[ss, fs] = again >= need
        return hot


def _beside(hot: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Pixels that are not ``hot`` but have a hot one among their 8 neighbours."""
    padded = np.pad(hot, 1)
    ss, fs = hot.shape
    near = np.zeros_like(hot)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= padded[dy : dy + ss, dx : dx + fs]
    return near & ~hot


def _maxima_at(
    frame: NDArray[np.float32], good: NDArray[np.bool_], ss: NDArray[np.intp], fs: NDArray[np.intp],
    hidden: NDArray[np.bool_],
) -> NDArray[np.bool_]:
    """:func:`strict_local_maxima` at the pixels ``(ss, fs)`` only (``(k,)`` each): as cheap as the few
    pixels asked for, not the frame."""
    height, width = frame.shape
    value = frame[ss, fs]
    peak = good[ss, fs] & np.isfinite(value)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            y, x = ss + dy, fs + dx
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            y, x = np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)
            counts = inside & good[y, x] & ~hidden[y, x]
            peak &= ~counts | (value > frame[y, x])
    return peak


#: What every command uses unless told ``--no-hot-pixel-map``.
DEFAULT_HOT_PIXELS = HotPixelRule()


def strict_local_maxima(
    frame: NDArray[np.float32], good: NDArray[np.bool_], hidden: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_]:
    """``(ss, fs)`` bool: good pixels above every good pixel of their 3x3 neighbourhood (bad pixels
    and the frame's border count as lower than anything; so do ``hidden`` pixels as neighbours, while
    still maxima themselves: known hot pixels, so that a fainter hot neighbour shows)."""
    x = np.where(good, frame, -np.inf).astype(np.float32, copy=False)
    neighbours = x if hidden is None else np.where(hidden, -np.inf, x).astype(np.float32, copy=False)
    padded = np.pad(neighbours, 1, constant_values=-np.inf)
    ss, fs = x.shape
    peak = good & np.isfinite(x)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            peak &= x > padded[dy : dy + ss, dx : dx + fs]
    return peak


class HotPixelTracker:
    """Hot pixels learned online from the frames a per-frame finder is shown (Cheetah's ``hotpixFreq``).

    Keeps the strict-local-maximum maps of the last ``rule.samples`` frames it sampled: every frame
    until that memory is full, then one frame in ``every`` (at the defaults the memory spans the last
    96 frames and costs one 3x3 comparison per 4 frames, about 1.4 ms per megapixel). A pixel is hot
    when it is a strict local maximum in each of the last ``streak`` sampled frames (a pixel that
    turns hot is found within ``streak * every`` frames), or as often among the remembered frames as
    :meth:`HotPixelRule.required` asks (a hot pixel only a few sigmas bright, which background noise
    sometimes outshines). Background makes a pixel the local maximum in about one
    frame of nine, so a streak of four flags about 1.5e-4 of the pixels by chance, each for about one
    sample. The frames of a call are remembered before the call's map is made, so a batch of
    ``streak`` frames is already judged with a map; before that there is none.

    A crystal that stays put for ``streak`` sampled frames (a still series of one crystal) can have
    its brightest spots flagged: serial data, where every frame shows a new crystal, cannot.
    """

    def __init__(self, rule: HotPixelRule = DEFAULT_HOT_PIXELS, *, every: int = 4, streak: int = 4) -> None:
        if every < 1 or streak < 2:
            raise ValueError("a hot-pixel tracker needs every >= 1 and streak >= 2")
        self.rule = rule
        self.every = int(every)
        self.streak = int(streak)
        self._peaks: deque[NDArray[np.bool_]] = deque(maxlen=max(rule.samples, self.streak))
        self._count: NDArray[np.int16] | None = None
        self._run: NDArray[np.int16] | None = None
        self._seen = 0
        self._hot: NDArray[np.bool_] | None = None
        self._good: NDArray[np.bool_] | None = None  # ~_hot, made once per new map

    @property
    def hot(self) -> NDArray[np.bool_] | None:
        """The current ``(ss, fs)`` map (True = hot), or None while too few frames are remembered."""
        return self._hot

    def _remember(self, frame: NDArray[np.floating], good: NDArray[np.bool_]) -> None:
        known = self._hot if self._hot is not None and self._hot.shape == good.shape else None
        peak = strict_local_maxima(np.asarray(frame, np.float32), good, hidden=known)  # a fainter hot neighbour shows
        if self._count is None or self._run is None or self._count.shape != peak.shape:  # first or new shape
            self._peaks.clear()
            self._count = np.zeros(peak.shape, np.int16)
            self._run = np.zeros(peak.shape, np.int16)
        if len(self._peaks) == self._peaks.maxlen:
            self._count -= self._peaks[0]
        self._peaks.append(peak)
        self._count += peak
        self._run = np.where(peak, np.minimum(self._run + 1, self.streak), 0).astype(np.int16)

    def update(self, frames: NDArray[np.floating], evidence: NDArray[np.bool_] | None = None) -> None:
        """Show the tracker ``(n, ss, fs)`` frames. ``evidence``: the static ``(ss, fs)`` pixels whose
        readings count (True = good; None: every pixel), never a frame's own value masks: a hot pixel
        that saturates in some frames is still their local maximum (as the run-level map reads it).
        The map is remade only when a frame was sampled."""
        sampled = False
        for frame in frames:
            if len(self._peaks) < cast(int, self._peaks.maxlen) or self._seen % self.every == 0:  # deque(maxlen=int)
                self._remember(frame, np.ones(frame.shape, bool) if evidence is None else np.asarray(evidence, bool))
                sampled = True
            self._seen += 1
        if not sampled:
            return
        n = len(self._peaks)
        if self._count is None or self._run is None or n < self.streak:
            self._hot = self._good = None
            return
        self._hot = self._run >= self.streak
        need = self.rule.required(n)
        if need is not None:
            self._hot |= self._count >= need
        self._good = ~self._hot

    def mask(
        self,
        frames: NDArray[np.floating],
        masks: NDArray[np.bool_] | None = None,
        *,
        evidence: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.bool_] | None:
        """Show the tracker the frames (:meth:`update` with ``evidence``), then return their masks with
        the hot pixels removed (True = good): ``(ss, fs)`` when ``masks`` is None or static, else
        ``(n, ss, fs)``; ``masks`` itself while there is no map."""
        self.update(frames, evidence)
        good = self._good
        if good is None or good.shape != frames.shape[1:]:
            return masks
        return good if masks is None else np.asarray(masks, bool) & (good if np.ndim(masks) == 2 else good[None])
