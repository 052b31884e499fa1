"""Frames per second and peak memory of every method on the same frames (``sfx-cnnhit benchmark``).

Frames are simulated once per detector (:mod:`sfx_cnnhit.simulate`; by default a 512x512 detector and
the 1-Mpx, 16-module AGIPD layout) with a realistic share of hits, repeated into an in-memory pool,
and every method then runs on that same pool:

=====================  ===============================================================================
``cnn_veto``           the default model's veto: preprocessing (panel tiling, masked max-pool binning,
                       normalisation) and the forward pass, batched (:class:`CnnHitFinder.hit_probability`)
``cnn_veto_gradcam``   the veto, then Grad-CAM maps (on the frame's pixel grid) of the frames it passes
``reduce``             the whole ``sfx-cnnhit reduce`` job on a CXI file of the pool's frames: reading,
                       veto, peakfinder8 and Grad-CAM on hits, writing the reduced CXI (gzip) and tables
``peakfinder8``        our peakfinder8 (numba), frame by frame
``om_peakfinder8``     OM 23.8.3's compiled peakfinder8 (the reference; needs ``ondamonitor``)
``dials_dispersion``   our built-in DIALS ``dispersion_extended`` spot finder
``dials``              real DIALS in its own interpreter (``--full`` only, when installed)
``alexnet``            the seed's AlexNet, untrained, 512x512 only (preprocessing + forward pass)
``resnet101``          the seed's ResNet-101, untrained, 512x512 only
=====================  ===============================================================================

Every method runs in a fresh Python process, so its peak resident memory (``VmHWM``,
:func:`.process.peak_rss_mb`) is its own.
Timing starts after imports, set-up and one warm-up batch (JIT compilation, caches) and includes
everything per frame (preprocessing, masks, peak lists). A method is timed on at most ``max_frames``
frames or for about ``seconds_per_method``. ``frames_per_second`` is frames over wall time;
``frames_per_cpu_second`` is frames over the CPU time of all the process's threads (steadier on a
busy machine; equal to frames/s for a single-threaded method on an idle core). Every figure is also
given as a ratio to ``om_peakfinder8`` measured in the same run on the same frames.

Until the shipped default model exists, an untrained network of the same architecture stands in
(speed does not depend on the weights); its decision threshold is then set so that the veto passes
as many frames as there are true hits, so the work done on hits is realistic.

Modules, by capability: :mod:`.config` (the methods and :class:`BenchmarkConfig`), :mod:`.frames`
(simulated frames), :mod:`.run` (the parent: :func:`run_benchmark`), :mod:`.process` (the
worker-process protocol, peak memory), :mod:`.worker` and :mod:`.cases` (a worker: set-up through
:mod:`sfx_cnnhit.comparisons.methods`, warm-up, timing), :mod:`.reference` (OM's peakfinder8),
:mod:`.machine` and :mod:`.report`.
"""

from .config import DEFAULT_METHODS, METHODS, PEAKFINDER8_SETTINGS, REFERENCE, BenchmarkConfig, BenchmarkMethod
from .machine import machine_info
from .process import current_rss_mb, peak_rss_mb
from .reference import om_available, om_peakfinder8
from .report import format_report
from .run import benchmark_model, run_benchmark

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "PEAKFINDER8_SETTINGS",
    "REFERENCE",
    "BenchmarkConfig",
    "BenchmarkMethod",
    "benchmark_model",
    "current_rss_mb",
    "format_report",
    "machine_info",
    "om_available",
    "om_peakfinder8",
    "peak_rss_mb",
    "run_benchmark",
]
