"""The CNN hit finder: a cheap CNN veto, with peakfinder8 localising the peaks of hits only.

It is constructed like OM's ``Peakfinder8PeakDetection`` (the peakfinder8 settings then describe the
peak localisation on hits) plus ``model``, ``threshold`` and ``device``, so a script that calls
``find_peaks(data=...)`` and tests ``num_peaks`` keeps working: a miss returns an empty peak list.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import numpy as np
import torch
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry, PanelLayout
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.finders.base import check_options, detector_mask, finder_params, probability_threshold
from sfx_cnnhit.finders.config import CnnHitParams, params_from_om_group
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.hotpixels import HotPixelTracker
from sfx_cnnhit.models.calibration import UNBINNED_THRESHOLD
from sfx_cnnhit.models.checkpoint import decision_threshold, load_checkpoint, model_from_checkpoint, resolve_model_path
from sfx_cnnhit.models.guards import VETOED_FLAGS, frame_flags
from sfx_cnnhit.models.inference import resolve_device
from sfx_cnnhit.models.preprocess import photon_adu, plan_input, preprocess
from sfx_cnnhit.types import Classification, PeakList

Precision = Literal["auto", "float32", "bfloat16"]
#: The run-time options of :meth:`CnnHitFinder.for_detector` (fields of :class:`CnnHitParams`).
RUN_OPTIONS = ("device", "batch_size", "precision", "hot_pixel_map")
#: Forward-pass arithmetic of :class:`CnnHitFinder`.
PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16
    or AMX (elsewhere bfloat16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return cast(bool, torch.cuda.is_bf16_supported())  # unannotated in torch
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False

if TYPE_CHECKING:
    from sfx_cnnhit.explain.gradcam import GradCamExplainer


class CnnHitFinder:
    """CNN veto + peakfinder8 on hits, behind the :class:`~sfx_cnnhit.finders.base.HitFinder` interface.

    Args:
        radius_pixel_map, layout_info, crystallography_parameters: OM's arguments of
            ``Peakfinder8PeakDetection``; when given they build the peakfinder8 that localises peaks
            on hits (``crystallography_parameters`` is OM's ``peakfinder8_peak_detection`` group).
        model: checkpoint path or shipped model name (default: the shipped default model).
        threshold: a frame is a hit when its hit probability is at least this (default: the threshold
            the model was calibrated to on its validation set, else 0.5).
        device: ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``, ...
        peakfinder: a ready peakfinder8 for hits (instead of OM's arguments); without either, one is
            made on the first frame with its beam at the frame centre and CrystFEL's default settings.
        panel_layout: panels of a multi-panel slab for the preprocessing (None: the slab is one image).
        batch_size: frames per forward pass.
        precision: arithmetic of the forward pass: ``"float32"``, ``"bfloat16"`` (about 3x faster on
            CPUs with AMX or AVX512-BF16 and on GPUs), or ``"auto"``: bfloat16 where the hardware has
            it (:func:`native_bfloat16`), else float32. Preprocessing and Grad-CAM stay float32.
            On a GPU the raw frames are uploaded and preprocessed there.
        hot_pixel_map: learn hot pixels from the frames :meth:`classify` and :meth:`find_peaks` are
            shown and mask them (:class:`~sfx_cnnhit.io.hotpixels.HotPixelTracker`, Cheetah's
            ``hotpixFreq``; the first three frames are judged without a map). False where the caller
            masks them: ``reduce`` and ``compare`` read frames with a run-level map.
        mask: static ``(ss, fs)`` good-pixel mask (True = good) ANDed into the masks :meth:`classify`
            sees; None: none.

    Attributes:
        hot_pixels: the hot-pixel tracker (None without ``hot_pixel_map``).
        model_path, checkpoint_metrics: the checkpoint file and its recorded metrics (calibration,
            validation scores).
        model: the float32 model (Grad-CAM runs on it); ``forward_model``: the model the veto runs,
            in ``precision`` (the same object for float32).
        last_score: hit probability of the frame of the last :meth:`find_peaks` call.
        last_inputs: the preprocessed float32 network inputs ``(n, 1, S, S)`` of the frames of the last
            :meth:`hit_probability` (or :meth:`classify`) call when they took one forward pass, else
            None; a reused buffer, valid until the next call (Grad-CAM of hits reuses it).
        stage_seconds: wall seconds spent so far in ``preprocess`` (with the upload to a GPU),
            ``network`` (forward pass and softmax) and ``peakfinder8`` (on hits).
    """

    name: ClassVar[str] = "cnn"

    def __init__(
        self,
        radius_pixel_map: NDArray[np.floating] | None = None,
        layout_info: Mapping[str, int] | None = None,
        crystallography_parameters: Mapping[str, Any] | None = None,
        *,
        model: str | os.PathLike[str] | None = None,
        threshold: float | None = None,
        device: str = "auto",
        peakfinder: Peakfinder8Finder | None = None,
        panel_layout: PanelLayout | None = None,
        batch_size: int = 64,
        precision: Precision = "float32",
        hot_pixel_map: bool = True,
        mask: NDArray[np.bool_] | None = None,
    ) -> None:
        path = resolve_model_path(model)
        ckpt = load_checkpoint(path)
        # A model calibrated on binned and unbinned frames has a threshold for each (see
        # threshold_for); a threshold given here holds for every frame.
        self._unbinned_threshold = (
            decision_threshold(ckpt.metrics, 1) if threshold is None and UNBINNED_THRESHOLD in ckpt.metrics else None
        )
        if threshold is None:
            threshold = decision_threshold(ckpt.metrics)
        threshold = probability_threshold(threshold)
        if peakfinder is None and radius_pixel_map is not None:
            params = params_from_om_group(crystallography_parameters or {}) if crystallography_parameters else None
            peakfinder = Peakfinder8Finder(params, radius_map=radius_pixel_map, layout=layout_info)
        self.peakfinder = peakfinder
        self.threshold = threshold
        self.device = resolve_device(device)
        if precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"CNN hit finder: precision must be auto, float32 or bfloat16, got {precision!r}")
        self.model = model_from_checkpoint(ckpt, source=path, device=self.device, optimize=True)
        self.spec = ckpt.spec
        if precision == "auto":
            precision = "bfloat16" if native_bfloat16(self.device) else "float32"
        self.precision = precision
        self._dtype = PRECISIONS[precision]
        self.forward_model = self.model if precision == "float32" else copy.deepcopy(self.model).to(self._dtype)
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.model_source = str(model) if model is not None else "default"
        self.model_path = path
        self.checkpoint_metrics = ckpt.metrics
        self.panel_layout = panel_layout
        self.batch_size = int(batch_size)
        self._hit_classes = list(self.spec.hit_classes)
        self._explainers: dict[str, GradCamExplainer] = {}
        self._centred: dict[tuple[int, int], Peakfinder8Finder] = {}
        self._bin_factors: dict[tuple[int, int], int] = {}
        self.hot_pixels = HotPixelTracker() if hot_pixel_map else None
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.last_score: float | None = None
        self.last_inputs: torch.Tensor | None = None
        self.stage_seconds: dict[str, float] = {}

    @classmethod
    def from_params(cls, params: CnnHitParams, **detector: Any) -> CnnHitFinder:
        """The finder ``params`` describe, on the detector given as :meth:`__init__` takes it (OM's
        ``radius_pixel_map``, ``layout_info`` and ``crystallography_parameters``, or ``peakfinder``;
        and ``panel_layout``)."""
        return cls(**detector, **params.finder_kwargs())

    @classmethod
    def for_detector(
        cls,
        params: CnnHitParams | Mapping[str, Any] | None = None,
        *,
        detector: DetectorGeometry,
        mask: NDArray[np.bool_] | None = None,
        peakfinder: Peakfinder8Finder | None = None,
        **options: Any,
    ) -> CnnHitFinder:
        """The uniform factory (:func:`~sfx_cnnhit.finders.base.create_finder`).

        Args:
            params: :class:`CnnHitParams` or a mapping of their field values (``adu_per_photon``, when
                given, replaces the geometry's gain).
            detector: its panels (and gain) tile the CNN's input.
            mask: static ``(ss, fs)`` good-pixel mask (True = good) of every frame.
            peakfinder: the peakfinder8 that localises peaks on hits (default: CrystFEL's defaults on
                ``detector`` and ``mask``).
            options: run-time choices replacing those of ``params``: :data:`RUN_OPTIONS`.

        Raises:
            ConfigError: unknown parameter or option, invalid value, or a mask of another shape.
        """
        check_options(cls.name, options, RUN_OPTIONS)
        params = finder_params(cls.name, CnnHitParams, params)
        params = replace(params, **options)
        layout = PanelLayout.from_geometry(detector)
        if params.adu_per_photon is not None:
            layout = replace(layout, adu_per_photon=params.adu_per_photon)
        mask = detector_mask(cls.name, mask, detector)
        if peakfinder is None:
            peakfinder = Peakfinder8Finder.for_detector(detector=detector, mask=mask)
        return cls.from_params(params, peakfinder=peakfinder, panel_layout=layout, mask=mask)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the block to ``stage_seconds[name]`` (on a GPU, after its work is done)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - t0

    def with_threshold(self, threshold: float) -> CnnHitFinder:
        """The same finder (sharing the loaded model) deciding at another threshold, for every frame."""
        threshold = probability_threshold(threshold)
        other = copy.copy(self)
        other.threshold = threshold
        other._unbinned_threshold = None
        other.stage_seconds = {}
        return other

    def threshold_for(self, frame_shape: tuple[int, ...]) -> float:
        """The P(hit) threshold of frames of ``(ss, fs)`` ``frame_shape``: :attr:`threshold`, or the model's
        own threshold of unbinned frames for frames the input does not bin (512² and smaller)."""
        if self._unbinned_threshold is None:
            return self.threshold
        shape = (int(frame_shape[-2]), int(frame_shape[-1]))
        if shape not in self._bin_factors:
            self._bin_factors[shape] = plan_input(shape, self.spec.preprocess, self.panel_layout).bin_factor
        return self._unbinned_threshold if self._bin_factors[shape] == 1 else self.threshold

    @torch.inference_mode()
    def hit_probability(
        self, frames: NDArray[np.floating] | torch.Tensor, masks: NDArray[np.bool_] | torch.Tensor | None = None
    ) -> NDArray[np.float64]:
        """P(hit) of ``(n, ss, fs)`` frames: the summed probability of the hit classes.

        ``masks`` (True = good): ``(n, ss, fs)``, one static ``(ss, fs)`` mask for all frames, or None.
        Frames and masks may be numpy arrays or torch tensors (on a GPU model, tensors already on the
        GPU are not copied).
        """
        frames = frames if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        static = masks is not None and np.ndim(masks) == 2
        out = np.empty(frames.shape[0], np.float64)
        for i in range(0, frames.shape[0], self.batch_size):
            batch = frames[i : i + self.batch_size]
            m = masks if static or masks is None else masks[i : i + self.batch_size]
            raw, x = self._input_buffers(len(batch))
            with self._stage("preprocess"):
                if self.device.type == "cuda":  # upload the raw frames; preprocess on the GPU
                    # batch is never None here; mypy cannot tell from the shared generator.
                    batch, m = (None if a is None else torch.as_tensor(a).to(self.device) for a in (batch, m))  # type: ignore[assignment]
                preprocess(batch, m, self.spec.preprocess, self.panel_layout, out=raw)
                if x.data_ptr() != raw.data_ptr():
                    x.copy_(raw)
            with self._stage("network"):
                probs = torch.softmax(self.forward_model(x).float(), dim=1)
                out[i : i + len(x)] = probs[:, self._hit_classes].sum(dim=1).cpu().numpy()
        self.last_inputs = raw if 0 < frames.shape[0] <= self.batch_size else None
        return out

    def _input_buffers(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reused buffers for ``n`` frames on the model's device: the preprocessed float32 input and the
        network input (in the forward pass's dtype, channels_last). Allocated once for a full batch;
        shorter batches use the leading frames."""
        if self._inputs is None or len(self._inputs[0]) < n:
            S, size = self.spec.input_size, max(n, self.batch_size)
            raw = torch.empty((size, 1, S, S), dtype=torch.float32, device=self.device)
            if self._dtype == torch.float32:
                x = raw  # (n, 1, S, S) with one channel is already channels_last
            else:
                x = torch.empty_like(raw, dtype=self._dtype, device=self.device, memory_format=torch.channels_last)
            self._inputs = (raw, x)
        raw, x = self._inputs
        return raw[:n], x[:n]

    def _localiser(self, frame_shape: tuple[int, int]) -> Peakfinder8Finder:
        """The peakfinder8 for hits: the one given, else one per frame shape with the beam at its centre."""
        if self.peakfinder is not None:
            return self.peakfinder
        if frame_shape not in self._centred:
            self._centred[frame_shape] = Peakfinder8Finder.from_beam_center(frame_shape)
        return self._centred[frame_shape]

    def classify(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> Classification:
        """Hit probabilities, hit decisions (``P(hit) >= threshold``), peaks (found on hits only) and the
        frames the model cannot judge (:func:`~sfx_cnnhit.models.guards.frame_flags`; those with a
        vetoing flag are misses whatever their score). With ``hot_pixels`` the frames are first shown
        to the tracker and its hot pixels are masked."""
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
            masks = None if masks is None else np.asarray(masks)[None]
        if self.mask is not None:
            masks = self.mask if masks is None else np.asarray(masks, dtype=bool) & self.mask
        if self.hot_pixels is not None:
            masks = self.hot_pixels.mask(frames, masks, evidence=self.mask)  # saturated readings count
        scores = self.hit_probability(frames, masks)
        flags = frame_flags(frames, masks, adu_per_photon=photon_adu(self.spec.preprocess, self.panel_layout))
        hits = (scores >= self.threshold_for(frames.shape)) & np.array([f not in VETOED_FLAGS for f in flags], bool)
        peaks = [PeakList.empty()] * len(frames)
        if hits.any():
            pf8 = self._localiser(tuple(frames.shape[1:]))
            static = masks is None or np.ndim(masks) == 2  # one (ss, fs) mask for every frame
            with self._stage("peakfinder8"):
                for i in np.flatnonzero(hits):
                    mask_i = masks if static else cast("NDArray[np.bool_]", masks)[i]  # not static: a stack
                    peaks[i] = pf8.find_peaks_masked(frames[i], mask_i)
        return Classification(scores=scores, hits=hits, peaks=peaks, flags=flags)

    def explainer(self, method: Literal["gradcam", "guided", "hirescam"] = "gradcam") -> GradCamExplainer:
        """The heat-map maker of this finder's model (made once per method; hooks live only per call)."""
        if method not in self._explainers:
            from sfx_cnnhit.explain.gradcam import GradCamExplainer

            self._explainers[method] = GradCamExplainer(self.model, self.spec, method=method, layout=self.panel_layout)
        return self._explainers[method]

    def heatmaps(
        self, frames: NDArray[np.floating], masks: NDArray[np.bool_] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Grad-CAM of the hit decision on ``(k, ss, fs)`` frames: maps in [0, 1] on the frames' own
        pixel grid and each map's raw (unnormalised) maximum."""
        frames = np.asarray(frames, np.float32)
        masks = np.ones(frames.shape, bool) if masks is None else np.asarray(masks, bool)
        maps, raw_max = self.explainer("gradcam")(frames, masks)
        return maps.astype(np.float32, copy=False), raw_max

    def find_peaks(self, data: NDArray[np.floating]) -> PeakList:
        """OM-style: peaks of a hit, an empty list for a miss; the hit probability is ``last_score``."""
        result = self.classify(np.asarray(data)[None])
        self.last_score = float(result.scores[0])
        peaks = result.peaks[0] if result.peaks else PeakList.empty()
        return replace(peaks, hit_score=self.last_score)

