"""OM (OnDA Monitor) drop-ins: the CNN hit finder where OM's crystallography monitor runs peakfinder8,
and our peakfinder8 with OM's algorithm class interface.

Three pieces:

- :class:`Peakfinder8PeakDetection`: our peakfinder8 built and called like OM's
  ``om.algorithms.crystallography.Peakfinder8PeakDetection`` (its keyword arguments, getters and
  setters); the algorithm itself is :class:`~sfx_cnnhit.finders.peakfinder8.Peakfinder8Finder`.

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
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.cnn import CnnHitFinder
from sfx_cnnhit.finders.config import CnnHitParams, Peakfinder8Params, load_bad_pixel_map, params_from_om_group
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.types import PeakList

if TYPE_CHECKING:
    from sfx_cnnhit.explain.gradcam import Method as MapMethod

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


def settings_from_om_group(group: Mapping[str, Any]) -> CnnHitParams:
    """:class:`CnnHitParams` from the ``cnn_hit_detection`` group (unknown keys are errors)."""
    source = f"OM configuration, group {CNN_GROUP}"
    unknown = sorted(set(group) - set(CNN_KEYS) - {OM_GROUP_NAME_KEY})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(CNN_KEYS)})")
    return CnnHitParams.from_values({k: v for k, v in group.items() if k in CNN_KEYS}, source=source)


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
        self.finder = CnnHitFinder.from_params(
            self.settings,
            radius_pixel_map=geometry_information.get_pixel_maps()["radius"],
            layout_info=layout_info,
            crystallography_parameters=pf8_group,
            panel_layout=PanelLayout.from_layout_info(layout_info, self.settings.adu_per_photon),
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
        hit = self.last_score is not None and self.last_score >= self.finder.threshold_for(frame.shape)
        if self.settings.explain != "none" and hit:
            method = cast("MapMethod", self.settings.explain)  # CnnHitParams allows gradcam, guided or none
            maps, _ = self.finder.explainer(method)(frame[None], None)
            self.last_heatmap = maps[0]
        return peaks.as_om_dict()


class Peakfinder8PeakDetection:
    """Drop-in for OM's ``om.algorithms.crystallography.Peakfinder8PeakDetection``.

    Same keyword arguments, ``find_peaks(data=...)`` and setters/getters; returns a
    :class:`~sfx_cnnhit.types.PeakList`, which also reads like OM's dict (``peaks["fs"]``).

    Args:
        radius_pixel_map: ``(ss, fs)`` distance of each pixel from the beam, in pixels.
        layout_info: ``{"asic_nx", "asic_ny", "nasics_x", "nasics_y"}``.
        crystallography_parameters: OM's ``peakfinder8_peak_detection`` group as a dict.
    """

    def __init__(
        self,
        *,
        radius_pixel_map: NDArray[np.floating],
        layout_info: Mapping[str, int],
        crystallography_parameters: Mapping[str, Any],
    ) -> None:
        self._params = params_from_om_group(crystallography_parameters, source="crystallography_parameters")
        self._radius = np.asarray(radius_pixel_map, dtype=np.float32)
        self._layout = PanelLayout.from_layout_info(layout_info)
        self._bad_pixel_map: NDArray[Any] | None = None
        if self._params.bad_pixel_map_filename is not None:
            self._bad_pixel_map = load_bad_pixel_map(
                self._params.bad_pixel_map_filename, str(self._params.bad_pixel_map_hdf5_path)
            ).astype(np.int8)
        self._finder: Peakfinder8Finder | None = None

    @property
    def params(self) -> Peakfinder8Params:
        return self._params

    @property
    def finder(self) -> Peakfinder8Finder:
        """The current configuration as a :class:`Peakfinder8Finder` (built on first use)."""
        if self._finder is None:
            self._finder = Peakfinder8Finder(self._params, radius_map=self._radius, layout=self._layout,
                                             bad_pixel_map=self._bad_pixel_map)
        return self._finder

    def find_peaks(self, data: NDArray[np.floating]) -> PeakList:
        """Peaks on one ``(ss, fs)`` frame (``find_peaks(data=frame)``, as in OM)."""
        return self.finder.find_peaks(data)

    def _set(self, **changes: Any) -> None:
        self._params = replace(self._params, **changes)
        if self._finder is not None:
            self._finder = self._finder.with_params(self._params)

    def _reset(self) -> None:
        self._finder = None

    def get_adc_thresh(self) -> float:
        return self._params.adc_threshold

    def set_adc_thresh(self, *, adc_thresh: float) -> None:
        self._set(adc_threshold=float(adc_thresh))

    def get_minimum_snr(self) -> float:
        return self._params.minimum_snr

    def set_minimum_snr(self, *, minimum_snr: float) -> None:
        self._set(minimum_snr=float(minimum_snr))

    def get_min_pixel_count(self) -> int:
        return self._params.min_pixel_count

    def set_min_pixel_count(self, *, min_pixel_count: int) -> None:
        self._set(min_pixel_count=min_pixel_count)

    def get_max_pixel_count(self) -> int:
        return self._params.max_pixel_count

    def set_max_pixel_count(self, *, max_pixel_count: int) -> None:
        self._set(max_pixel_count=max_pixel_count)

    def get_local_bg_radius(self) -> int:
        return self._params.local_bg_radius

    def set_local_bg_radius(self, *, local_bg_radius: int) -> None:
        self._set(local_bg_radius=local_bg_radius)

    def get_min_res(self) -> float:
        return self._params.min_res

    def set_min_res(self, *, min_res: float) -> None:
        self._set(min_res=min_res)

    def get_max_res(self) -> float | None:
        return self._params.max_res

    def set_max_res(self, max_res: float | None) -> None:
        self._set(max_res=max_res)

    def get_bad_pixel_map(self) -> NDArray[Any] | None:
        return self._bad_pixel_map

    def set_bad_pixel_map(self, bad_pixel_map: NDArray[Any] | None) -> None:
        """Set the bad-pixel map (1 = use, 0 = ignore) or None; unlike OM it takes effect at once."""
        self._bad_pixel_map = bad_pixel_map
        self._reset()

    def get_radius_pixel_map(self) -> NDArray[np.float32]:
        return self._radius

    def set_radius_pixel_map(self, radius_pixel_map: NDArray[np.floating]) -> None:
        self._radius = np.asarray(radius_pixel_map, dtype=np.float32)
        self._reset()

    def get_layout_info(self) -> dict[str, int]:
        return self._layout.layout_info()

    def set_layout_info(self, layout_info: Mapping[str, int]) -> None:
        self._layout = PanelLayout.from_layout_info(layout_info)
        self._reset()


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
