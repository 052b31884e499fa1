"""The one interface every hit finder implements (CNN, peakfinder8, DIALS dispersion).

``find_peaks(data)`` mirrors OM's ``Peakfinder8PeakDetection.find_peaks``; ``classify(frames)`` is the
batch entry point that ``reduce`` and ``compare`` use, so they treat every method alike. Every finder is
built the same way, from ``(params, detector, mask)``: its ``for_detector`` classmethod, which
:func:`create_finder` calls by name.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.types import Classification, PeakList


def probability_threshold(value: float, what: str = "CNN hit threshold") -> float:
    """``value`` as a float if it is a probability in [0, 1].

    Raises:
        ConfigError: otherwise (the message names ``what``).
    """
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value}")
    return float(value)


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


def check_options(finder: str, options: Collection[str], known: Collection[str]) -> None:
    """Refuse run-time options a finder's ``for_detector`` does not take.

    Raises:
        ConfigError: naming the unknown options and the known ones.
    """
    unknown = sorted(set(options) - set(known))
    if unknown:
        known_words = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"hit finder {finder!r}: unknown option(s) {', '.join(unknown)}; known: {known_words}")


class FinderParams(Protocol):
    """A finder's frozen ``*Params`` type: buildable from ``{field name: value}`` as files and flags give them."""

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, source: str) -> Self: ...


ParamsT = TypeVar("ParamsT", bound=FinderParams)


def finder_params(finder: str, kind: type[ParamsT], params: ParamsT | Mapping[str, Any] | None) -> ParamsT:
    """``params`` as ``kind``: as given, or built from a mapping of field values (None: the defaults).

    Raises:
        ConfigError: unknown field or invalid value (named as ``finder``'s parameters).
    """
    if isinstance(params, kind):
        return params
    return kind.from_values(cast(Mapping[str, Any], params or {}), source=f"{finder} parameters")


def detector_mask(
    finder: str, mask: NDArray[np.bool_] | None, detector: DetectorGeometry
) -> NDArray[np.bool_] | None:
    """The static good-pixel ``mask`` as bool, checked against the detector's ``(ss, fs)`` slab.

    Raises:
        ConfigError: the mask's shape is not the slab's.
    """
    if mask is None:
        return None
    good = np.asarray(mask, dtype=bool)
    if good.shape != detector.slab_shape:
        raise ConfigError(
            f"hit finder {finder!r}: mask shape {good.shape} differs from the detector's {detector.slab_shape}"
        )
    return good


class PeakCountingHitFinder(ABC):
    """Base for classical finders: classify = find peaks on each frame, then apply the hit rule.

    Subclasses implement :meth:`find_peaks_masked`; the score is the peak count.

    Attributes:
        static_mask: ``(ss, fs)`` good-pixel mask (True = good) ANDed into every frame's mask; set by
            the default :meth:`for_detector` (finders that take a mask themselves leave it None).
    """

    name: ClassVar[str]
    hit_rule: HitRule
    static_mask: NDArray[np.bool_] | None = None

    @classmethod
    def for_detector(
        cls,
        params: Mapping[str, Any] | None = None,
        *,
        detector: DetectorGeometry,
        mask: NDArray[np.bool_] | None = None,
        **options: Any,
    ) -> PeakCountingHitFinder:
        """The finder for frames of ``detector`` (the factory :func:`create_finder` calls).

        This default suits a finder that needs nothing of the detector: ``params`` (its constructor's
        keyword arguments) and ``options`` go to the constructor, and ``mask`` (True = good, the
        detector's ``(ss, fs)`` slab) becomes :attr:`static_mask`. Finders that use the geometry override it.

        Raises:
            ConfigError: an argument the constructor does not take, or a mask of another shape.
        """
        kwargs = {**(params or {}), **options}
        try:
            inspect.signature(cls).bind(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"hit finder {cls.name!r}: {exc}") from None
        finder = cls(**kwargs)
        finder.static_mask = detector_mask(cls.name, mask, detector)
        return finder

    @abstractmethod
    def find_peaks_masked(self, data: NDArray[np.floating], mask: NDArray[np.bool_] | None) -> PeakList:
        """Peaks on one frame with an extra per-frame mask (True = good) on top of the finder's own."""

    def _with_static_mask(self, mask: NDArray[np.bool_] | None) -> NDArray[np.bool_] | None:
        """A frame's mask ANDed with :attr:`static_mask` (either may be None)."""
        if self.static_mask is None or mask is None:
            return self.static_mask if mask is None else mask
        return cast("NDArray[np.bool_]", self.static_mask & np.asarray(mask, dtype=bool))

    def find_peaks(self, data: NDArray[np.floating]) -> PeakList:
        return self.find_peaks_masked(data, self.static_mask)

    def classify(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> Classification:
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        peaks = [
            self.find_peaks_masked(frame, self._with_static_mask(None if masks is None else masks[i]))
            for i, frame in enumerate(frames)
        ]
        counts = np.array([p.num_peaks for p in peaks], dtype=np.int64)
        return Classification(scores=counts.astype(np.float64), hits=self.hit_rule.is_hit(counts), peaks=peaks)


#: The entry-point group of hit finders: ``name = "module:Class.for_detector"`` (the uniform factory).
ENTRY_POINT_GROUP = "sfx_cnnhit.finders"

_REGISTRY: dict[str, Callable[..., HitFinder]] = {}


def _entry_points() -> dict[str, EntryPoint]:
    """The installed finders (ours are declared in pyproject.toml; other packages add their own)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register_finder(name: str) -> Callable[[Callable[..., HitFinder]], Callable[..., HitFinder]]:
    """Decorator: make a factory constructible by name through :func:`create_finder` in this process
    (for scripts and tests; an installed finder declares an entry point instead). The factory takes
    ``for_detector``'s arguments (e.g. ``register_finder("mine")(MyFinder.for_detector)``)."""

    def decorate(factory: Callable[..., HitFinder]) -> Callable[..., HitFinder]:
        if name in _REGISTRY:
            raise ValueError(f"hit finder {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorate


def available_finders() -> list[str]:
    """Names of the installed (entry points) and registered hit finders."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def finder_factory(name: str) -> Callable[..., HitFinder]:
    """The factory of the hit finder ``name`` (an entry point is loaded, importing its module, on first use).

    Raises:
        ConfigError: no finder of that name, or its entry point cannot be loaded.
    """
    if name not in _REGISTRY:
        point = _entry_points().get(name)
        if point is None:
            raise ConfigError(f"unknown hit finder {name!r}; known: {', '.join(available_finders())}")
        try:
            _REGISTRY[name] = point.load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"hit finder {name!r} ({point.value}) cannot be loaded: {exc}") from None
    return _REGISTRY[name]


def create_finder(
    name: str,
    params: object = None,
    *,
    detector: DetectorGeometry,
    mask: NDArray[np.bool_] | None = None,
    **options: object,
) -> HitFinder:
    """Build the hit finder ``name`` for frames of ``detector``, the same way for every finder.

    Args:
        params: the finder's own parameters object, or a mapping of its field values (``key=value``
            pairs of the command line, a YAML group); None: its defaults.
        detector: the detector geometry (a file without one: ``DetectorGeometry.simple(frame_shape)``).
        mask: static ``(ss, fs)`` good-pixel mask (True = good) of the detector's slab, or None.
        options: run-time choices that are not science parameters (e.g. the CNN's ``device``).

    Raises:
        ConfigError: unknown finder, unknown parameter or option, or an invalid value.
    """
    return finder_factory(name)(params, detector=detector, mask=mask, **options)
