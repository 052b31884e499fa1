"""The one interface every hit finder implements (CNN, peakfinder8, DIALS dispersion).

``find_peaks(data)`` mirrors OM's ``Peakfinder8PeakDetection.find_peaks``; ``classify(frames)`` is the
batch entry point that ``reduce`` and ``compare`` use, so they treat every method alike.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.types import Classification, PeakList


@dataclass(frozen=True)
class HitRule:
    """Peak-count hit rule.

    OM calls a frame a hit iff ``min_peaks < n < max_peaks`` (strict); Cheetah iff
    ``min_peaks <= n <= max_peaks`` (inclusive); CrystFEL's ``--min-peaks`` and DIALS's
    ``n_spots >= N`` are inclusive lower bounds with no upper bound.
    """

    min_peaks: int = 10
    max_peaks: int | None = None
    inclusive: bool = True

    def __post_init__(self) -> None:
        if self.max_peaks is not None and self.max_peaks < self.min_peaks:
            raise ConfigError(f"hit rule: max_peaks ({self.max_peaks}) < min_peaks ({self.min_peaks})")

    def is_hit(self, n_peaks: NDArray[np.integer] | int) -> NDArray[np.bool_]:
        """Apply the rule to one count or an array of counts."""
        n = np.asarray(n_peaks)
        if self.inclusive:
            hit = n >= self.min_peaks
            if self.max_peaks is not None:
                hit &= n <= self.max_peaks
        else:
            hit = n > self.min_peaks
            if self.max_peaks is not None:
                hit &= n < self.max_peaks
        return hit


@runtime_checkable
class HitFinder(Protocol):
    """What ``reduce`` and ``compare`` need from a hit-finding method."""

    name: ClassVar[str]

    def find_peaks(self, data: NDArray[np.floating]) -> PeakList:
        """Peaks on one ``(ss, fs)`` frame; an empty list means "not a hit" for the CNN."""
        ...

    def classify(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> Classification:
        """Scores and hit flags for a ``(n, ss, fs)`` batch (masks: True = good pixel)."""
        ...


class PeakCountingHitFinder(ABC):
    """Base for classical finders: classify = find peaks on each frame, then apply the hit rule.

    Subclasses implement :meth:`find_peaks_masked`; the score is the peak count.
    """

    name: ClassVar[str]
    hit_rule: HitRule

    @abstractmethod
    def find_peaks_masked(self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None) -> PeakList:
        """Peaks on one frame with an extra per-frame mask (True = good) on top of the finder's own."""

    def find_peaks(self, data: NDArray[np.floating]) -> PeakList:
        return self.find_peaks_masked(data, None)

    def classify(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> Classification:
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        peaks = [
            self.find_peaks_masked(frame, None if masks is None else masks[i])
            for i, frame in enumerate(frames)
        ]
        counts = np.array([p.num_peaks for p in peaks], dtype=np.int64)
        return Classification(scores=counts.astype(np.float64), hits=self.hit_rule.is_hit(counts), peaks=peaks)


_REGISTRY: dict[str, Callable[..., HitFinder]] = {}

# Modules that register the built-in finders, imported on first use (some pull in numba or torch).
_BUILTIN_MODULES = {
    "peakfinder8": "sfx_cnnhit.finders.peakfinder8",
    "dispersion": "sfx_cnnhit.finders.dispersion",
    "dials": "sfx_cnnhit.finders.dials",
    "cnn": "sfx_cnnhit.finders.cnn",
}


def register_finder(name: str) -> Callable[[Callable[..., HitFinder]], Callable[..., HitFinder]]:
    """Class decorator: make a finder constructible by name through :func:`create_finder`."""

    def decorate(factory: Callable[..., HitFinder]) -> Callable[..., HitFinder]:
        if name in _REGISTRY:
            raise ValueError(f"hit finder {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorate


def available_finders() -> list[str]:
    """Names of the built-in and registered hit finders."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def create_finder(name: str, **kwargs: object) -> HitFinder:
    """Build a registered hit finder by name."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown hit finder {name!r}; known: {', '.join(available_finders())}") from None
    return factory(**kwargs)
