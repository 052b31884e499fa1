"""Settings of the CNN hit finder as the OM and Cheetah plugins read them from their configuration files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import probability_threshold
from sfx_cnnhit.finders.config import _to_bool, _to_float, _to_int
from sfx_cnnhit.models.preprocess import PanelLayout

EXPLAIN_METHODS = ("gradcam", "guided", "none")
PRECISION_CHOICES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class CnnHitSettings:
    """What a configuration file says about the CNN hit finder.

    Attributes:
        model: checkpoint path or shipped model name; None = the shipped default model.
        threshold: a frame is a hit when its P(hit) is at least this (in [0, 1]); None = the model's
            calibrated threshold.
        device: ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        explain: heat map made for each hit: ``"gradcam"``, ``"guided"`` (guided Grad-CAM) or ``"none"``.
        batch_size: frames per forward pass of :meth:`CnnHitFinder.classify`.
        precision: forward-pass arithmetic: ``"auto"`` (bfloat16 where the hardware has it),
            ``"float32"`` or ``"bfloat16"``.
        adu_per_photon: the detector's gain (ADU per photon, e.g. 32 for a CSPAD), the CNN's
            noise floor; None: 1 (photon counters, or frames already in photons).
        hot_pixel_map: learn the detector's hot pixels from the frames seen so far and mask them
            (:class:`~sfx_cnnhit.io.hotpixels.HotPixelTracker`, Cheetah's ``hotpixFreq``); the first
            few frames of a run are judged without a map.
    """

    model: str | None = None
    threshold: float | None = None
    device: str = "auto"
    explain: str = "none"
    batch_size: int = 64
    precision: str = "float32"
    adu_per_photon: float | None = None
    hot_pixel_map: bool = True

    def __post_init__(self) -> None:
        if self.threshold is not None:
            probability_threshold(self.threshold)
        if self.explain not in EXPLAIN_METHODS:
            raise ConfigError(f"CNN explain must be one of {', '.join(EXPLAIN_METHODS)}, got {self.explain!r}")
        if self.batch_size < 1:
            raise ConfigError(f"CNN batch size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"CNN precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if not self.device:
            raise ConfigError("CNN device must not be empty (use auto, cpu, cuda ...)")
        if self.adu_per_photon is not None and not self.adu_per_photon > 0:
            raise ConfigError(f"CNN adu_per_photon must be positive, got {self.adu_per_photon}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, source: str) -> CnnHitSettings:
        """Settings from ``{field name: value}`` as a file gives them (strings or YAML scalars).

        An empty or null ``model`` means the shipped default model.

        Raises:
            ConfigError: invalid value (the message starts with ``source``).
        """
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name in ("threshold", "adu_per_photon"):  # empty or null: the model's threshold, 1 ADU/photon
                blank = value is None or str(value).strip() == ""
                kwargs[name] = None if blank else _to_float(name, value, source)
            elif name == "batch_size":
                kwargs[name] = _to_int(name, value, source)
            elif name == "hot_pixel_map":
                kwargs[name] = _to_bool(name, value, source)
            elif name == "model":
                kwargs[name] = None if value is None or str(value).strip() == "" else str(value).strip()
            elif name in ("device", "explain", "precision"):
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
                kwargs[name] = value.strip().lower()
            else:
                raise ConfigError(f"{source}: unknown CNN setting {name!r}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def finder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~sfx_cnnhit.finders.cnn.CnnHitFinder` (all but ``explain``)."""
        return {"model": self.model, "threshold": self.threshold, "device": self.device, "batch_size": self.batch_size,
                "precision": self.precision, "hot_pixel_map": self.hot_pixel_map}


def panel_layout_from_layout_info(
    layout_info: Mapping[str, int], adu_per_photon: float | None = None
) -> PanelLayout:
    """The CNN's panel tiling (and gain, ADU per photon) for OM's ``layout_info`` ASIC grid.

    This is the tiling ``sfx-cnnhit reduce`` uses for a geometry whose panels are these ASICs.
    """
    try:
        n_x, n_y = int(layout_info["nasics_x"]), int(layout_info["nasics_y"])
        a_x, a_y = int(layout_info["asic_nx"]), int(layout_info["asic_ny"])
    except KeyError as exc:
        raise ConfigError(f"layout_info: missing {exc.args[0]!r}") from None
    return PanelLayout.regular(n_y, n_x, a_y, a_x, adu_per_photon)
