"""OM (OnDA Monitor) drop-in: the CNN hit finder where OM's crystallography monitor runs peakfinder8.

Two pieces:

- :class:`CnnPeakFinding`: built like OM's ``om.lib.crystallography.CrystallographyPeakFinding``
  (``monitor_parameters``, ``geometry_information``) and called the same way
  (``find_peaks(detector_data=...)`` -> OM's peak-list dict). A miss gives an empty peak list; a hit
  gives peakfinder8's peaks (settings from the ``peakfinder8_peak_detection`` group) and ``hit_score``.
  It reads a ``cnn_hit_detection`` group::

      cnn_hit_detection:
        model: /path/to/model.pt   # or a shipped model name; null/absent: the shipped default
        threshold: null            # P(hit) for a hit; null: the model's calibrated threshold
        device: auto               # auto, cpu, cuda, cuda:1 ...
        explain: none              # gradcam | guided | none: heat map of each hit in `last_heatmap`
        precision: float32         # float32 | bfloat16 | auto (bfloat16 where the CPU/GPU has it)
        adu_per_photon: null       # detector gain, e.g. 32 for a CSPAD; null: 1 (photon counter)
        hot_pixel_map: true        # learn hot pixels from the frames seen (Cheetah's hotpixFreq) and mask them

  It needs only objects with ``get_parameter_group(group=...)``, ``get_pixel_maps()["radius"]`` and
  ``get_layout_info()``, so importing this module never imports OM.

- :func:`cnn_crystallography_processing`: OM's ``CrystallographyProcessing`` with :class:`CnnPeakFinding`
  swapped in on the processing nodes (made on first call, which imports OM's processing layer).
  ``python -m sfx_cnnhit.plugins.om_monitor`` registers it with OM and starts OM's monitor.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.plugins.settings import CnnHitSettings, panel_layout_from_layout_info

CNN_GROUP = "cnn_hit_detection"
PEAKFINDER8_GROUP = "peakfinder8_peak_detection"
CNN_KEYS = ("model", "threshold", "device", "explain", "precision", "adu_per_photon", "hot_pixel_map")
OM_GROUP_NAME_KEY = "name"  # OM's MonitorParameters adds each group's own name to the group
PROCESSING_CLASS_NAME = "CnnCrystallographyProcessing"
HEATMAP_KEY = "cnn_heatmap"  # processed-data entry carrying a hit's heat map to the collecting node


class MonitorParametersLike(Protocol):
    def get_parameter_group(self, *, group: str) -> Any: ...


class GeometryInformationLike(Protocol):
    def get_pixel_maps(self) -> Any: ...

    def get_layout_info(self) -> Any: ...


def _parameter_group(monitor_parameters: MonitorParametersLike, group: str, *, required: bool) -> dict[str, Any]:
    """A group of OM's parameters without OM's ``name`` entry; ``{}`` for a missing optional group."""
    try:
        values = monitor_parameters.get_parameter_group(group=group)
    except Exception as exc:  # OM raises OmMissingParameterGroupError, a plain mapping KeyError
        if required:
            raise ConfigError(f"OM configuration: no '{group}' group ({exc})") from exc
        return {}
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"OM configuration: '{group}' must be a group of parameters, got {values!r}")
    return {key: value for key, value in values.items() if key != OM_GROUP_NAME_KEY}


def settings_from_om_group(group: Mapping[str, Any]) -> CnnHitSettings:
    """:class:`CnnHitSettings` from the ``cnn_hit_detection`` group (unknown keys are errors)."""
    source = f"OM configuration, group {CNN_GROUP}"
    unknown = sorted(set(group) - set(CNN_KEYS) - {OM_GROUP_NAME_KEY})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(CNN_KEYS)})")
    return CnnHitSettings.from_values({k: v for k, v in group.items() if k in CNN_KEYS}, source=source)


class CnnPeakFinding:
    """CNN veto + peakfinder8 on hits, with the constructor and call of OM's ``CrystallographyPeakFinding``.

    Args:
        monitor_parameters: OM's ``MonitorParameters`` (or anything with ``get_parameter_group``);
            needs the ``cnn_hit_detection`` group, and uses ``peakfinder8_peak_detection`` when present
            (else CrystFEL's peakfinder8 defaults).
        geometry_information: OM's ``GeometryInformation`` (or anything with ``get_pixel_maps()`` giving
            a ``"radius"`` map in pixels and ``get_layout_info()``).

    Attributes:
        settings: the ``cnn_hit_detection`` settings.
        finder: the :class:`~sfx_cnnhit.finders.cnn.CnnHitFinder` doing the work.
        last_score: P(hit) of the last frame.
        last_heatmap: ``(ss, fs)`` float32 heat map in [0, 1] of the last frame when it was a hit and
            ``explain`` is not ``none``; else None.

    Raises:
        ConfigError: missing ``cnn_hit_detection`` group, unknown key or invalid value.
    """

    def __init__(
        self, *, monitor_parameters: MonitorParametersLike, geometry_information: GeometryInformationLike
    ) -> None:
        self.settings = settings_from_om_group(_parameter_group(monitor_parameters, CNN_GROUP, required=True))
        pf8_group = _parameter_group(monitor_parameters, PEAKFINDER8_GROUP, required=False)
        layout_info = dict(geometry_information.get_layout_info())
        self.finder = CnnHitFinder(
            radius_pixel_map=geometry_information.get_pixel_maps()["radius"],
            layout_info=layout_info,
            crystallography_parameters=pf8_group,
            panel_layout=panel_layout_from_layout_info(layout_info, self.settings.adu_per_photon),
            **self.settings.finder_kwargs(),
        )
        self.last_score: float | None = None
        self.last_heatmap: NDArray[np.float32] | None = None

    def find_peaks(self, detector_data: NDArray[Any]) -> dict[str, Any]:
        """OM's peak-list dict (``num_peaks, fs, ss, intensity, num_pixels, max_pixel_intensity, snr``)
        plus ``hit_score``; empty lists for a miss."""
        frame = np.asarray(detector_data, dtype=np.float32)
        peaks = self.finder.find_peaks(frame)
        self.last_score = self.finder.last_score
        self.last_heatmap = None
        if self.settings.explain != "none" and self.last_score is not None and self.last_score >= self.finder.threshold:
            maps, _ = self.finder.explainer(self.settings.explain)(frame[None], None)
            self.last_heatmap = maps[0]
        return peaks.as_om_dict()


@functools.cache
def cnn_crystallography_processing() -> type:
    """OM's ``CrystallographyProcessing`` whose processing nodes detect hits with :class:`CnnPeakFinding`.

    Made on first call: this imports OM's processing layer (needs OM and its ``pyzmq``, ``msgpack``,
    ``msgpack-numpy``). The YAML must still hold OM's ``peakfinder8_peak_detection`` group, since OM
    builds its own peak finder before it is swapped out. A hit's heat map (``explain`` not ``none``)
    travels to the collecting node as ``processed_data["cnn_heatmap"]``; OM's stock collecting node
    ignores it.
    """
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # OM 23.8.3 predates numpy 2
    from om.processing_layer.crystallography import CrystallographyProcessing

    class CnnCrystallographyProcessing(CrystallographyProcessing):  # type: ignore[misc]
        """OM's crystallography monitor with the CNN hit finder (``cnn_hit_detection`` group)."""

        def initialize_processing_node(self, *, node_rank: int, node_pool_size: int) -> None:
            super().initialize_processing_node(node_rank=node_rank, node_pool_size=node_pool_size)
            self._peak_detection = CnnPeakFinding(
                monitor_parameters=self._monitor_params, geometry_information=self._geometry_information
            )

        def process_data(
            self, *, node_rank: int, node_pool_size: int, data: dict[str, Any]
        ) -> tuple[dict[str, Any], int]:
            processed, rank = super().process_data(node_rank=node_rank, node_pool_size=node_pool_size, data=data)
            heatmap = self._peak_detection.last_heatmap
            if heatmap is not None and processed["frame_is_hit"]:
                processed[HEATMAP_KEY] = heatmap
            return processed, rank

    CnnCrystallographyProcessing.__qualname__ = PROCESSING_CLASS_NAME  # importable by name: see __getattr__
    return CnnCrystallographyProcessing


def __getattr__(name: str) -> Any:
    """``from sfx_cnnhit.plugins.om import CnnCrystallographyProcessing`` makes the class (imports OM)."""
    if name == PROCESSING_CLASS_NAME:
        return cnn_crystallography_processing()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_with_om() -> type:
    """Put ``CnnCrystallographyProcessing`` into OM's ``om.processing_layer`` namespace, where OM's
    loader looks up the YAML's ``om: processing_layer:`` class name; returns the class."""
    processing_class = cnn_crystallography_processing()
    import om.processing_layer

    setattr(om.processing_layer, PROCESSING_CLASS_NAME, processing_class)
    return processing_class
