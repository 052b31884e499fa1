"""What a benchmark run measures: the methods it knows (:data:`METHODS`) and :class:`BenchmarkConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfx_cnnhit.errors import ConfigError

if TYPE_CHECKING:
    from sfx_cnnhit.models.tasks import Task

REFERENCE = "om_peakfinder8"
SQUARE_DETECTOR = "square512"
#: peakfinder8 settings for the simulated detectors (1 ADU per photon): CrystFEL's, 100 ADU floor.
PEAKFINDER8_SETTINGS: dict[str, Any] = {"adc_threshold": 100.0, "minimum_snr": 5.0}
#: Architecture that stands in for the default model until its weights exist.
STANDIN_ARCHITECTURE: tuple[str, Task] = ("hitnet", "fiveclass")


@dataclass(frozen=True)
class BenchmarkMethod:
    """A benchmarked method: which finder it times, on which frames, in which batches (what each one
    times is the table of :mod:`sfx_cnnhit.pipeline.benchmark`).

    Attributes:
        name: the method's name in the report and on the command line.
        finder: the finder it times, under its :class:`sfx_cnnhit.comparisons.methods.Method` name:
            ``cnn``, ``dispersion`` or ``dials`` (built by ``compare``'s builder of that method) or
            ``peakfinder8``; None for the seed networks, which are no finders.
        square_only: runs on the 512x512 frames only.
        full_only: runs with ``--full`` (or when named) only.
        batch_size: frames per batch (None: the run's batch size).
        seed_net: timed on ``seed_net_frames`` frames at most.
    """

    name: str
    finder: str | None
    square_only: bool = False
    full_only: bool = False
    batch_size: int | None = None
    seed_net: bool = False


METHODS: dict[str, BenchmarkMethod] = {
    m.name: m
    for m in (
        BenchmarkMethod("cnn_veto", "cnn"),
        BenchmarkMethod("cnn_veto_gradcam", "cnn"),
        BenchmarkMethod("reduce", "cnn"),
        BenchmarkMethod("peakfinder8", "peakfinder8"),
        BenchmarkMethod(REFERENCE, "peakfinder8"),
        BenchmarkMethod("dials_dispersion", "dispersion"),
        BenchmarkMethod("dials", "dials", full_only=True),
        BenchmarkMethod("alexnet", None, square_only=True, batch_size=8, seed_net=True),
        BenchmarkMethod("resnet101", None, square_only=True, batch_size=2, seed_net=True),
    )
}
DEFAULT_METHODS = tuple(name for name, m in METHODS.items() if not m.full_only)
CNN_METHODS = tuple(name for name, m in METHODS.items() if m.finder == "cnn")
TORCH_METHODS = (*CNN_METHODS, *(name for name, m in METHODS.items() if m.seed_net))


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark run measures.

    Attributes:
        detectors: simulated detectors (:data:`sfx_cnnhit.simulate.DETECTORS`); the largest frames
            give the headline figures.
        methods: names from :data:`METHODS`.
        distinct_frames: frames simulated per detector.
        pool_frames: frames held in memory (the distinct ones repeated); methods cycle through them.
        max_frames: frames timed per method at most (seed networks: ``seed_net_frames``).
        seed_net_frames: frames timed for ``alexnet`` and ``resnet101`` at most.
        reduce_frames: frames in the file ``reduce`` processes.
        seconds_per_method: timing stops after the batch that passes this wall time (s).
        hit_rate: fraction of hits among the simulated frames.
        batch_size: frames per batch of the CNN and the reduction.
        model: checkpoint path or shipped name (None: the shipped default, or a stand-in).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
        precision: the CNN veto's forward-pass arithmetic (:class:`CnnHitFinder`'s ``precision``).
        threads: torch threads in every method (None: torch's default, one per core).
        seed: simulator seed.
        worker_timeout_s: a method taking longer (s) is stopped and reported as failed.
    """

    detectors: tuple[str, ...] = (SQUARE_DETECTOR, "agipd1m")
    methods: tuple[str, ...] = DEFAULT_METHODS
    distinct_frames: int = 8
    pool_frames: int = 32
    max_frames: int = 256
    seed_net_frames: int = 8
    reduce_frames: int = 32
    seconds_per_method: float = 3.0
    hit_rate: float = 0.25
    batch_size: int = 16
    model: str | None = None
    device: str = "auto"
    precision: str = "float32"
    threads: int | None = None
    seed: int = 0
    worker_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"benchmark: unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if not self.detectors:
            raise ConfigError("benchmark: no detector given")
        if min(self.distinct_frames, self.pool_frames, self.max_frames, self.seed_net_frames, self.reduce_frames,
               self.batch_size) < 1:
            raise ConfigError("benchmark: frame counts and the batch size must be at least 1")
        if not 0.0 <= self.hit_rate <= 1.0:
            raise ConfigError(f"benchmark: hit_rate must lie in [0, 1], got {self.hit_rate}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"benchmark: threads must be at least 1, got {self.threads}")

    @classmethod
    def full(cls, **overrides: Any) -> BenchmarkConfig:
        """The longer ``--full`` run: more frames, and real DIALS."""
        values: dict[str, Any] = {
            "methods": tuple(METHODS),
            "distinct_frames": 16,
            "pool_frames": 64,
            "max_frames": 1024,
            "seed_net_frames": 16,
            "reduce_frames": 128,
            "seconds_per_method": 10.0,
        }
        values.update(overrides)
        return cls(**values)
