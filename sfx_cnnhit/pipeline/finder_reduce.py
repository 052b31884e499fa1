"""`reduce` with any registered hit finder, as a library call: build it by name, run :func:`reduce_run`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Unpack

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.finders.base import HitRule, create_finder
from sfx_cnnhit.io.sources import FrameSource
from sfx_cnnhit.pipeline.reduce import ReduceSummary, RunOptions, reduce_run


def source_detector(source: FrameSource) -> DetectorGeometry:
    """The detector of ``source``: its geometry, else a flat detector of its frame shape (one ASIC,
    beam at the slab centre)."""
    return source.geometry if source.geometry is not None else DetectorGeometry.simple(source.frame_shape)


def finder_reduce(
    source: FrameSource,
    outdir: str | os.PathLike[str],
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    min_peaks: int | None = None,
    batch_size: int = 64,
    **run: Unpack[RunOptions],
) -> ReduceSummary:
    """Reduce ``source`` into ``outdir`` with the hit finder ``name`` (no heat maps).

    The finder is ``create_finder(name, params, detector=source_detector(source))``: ``params`` maps its
    parameter names to values (text as on the command line, or YAML scalars); no static mask is given
    to it, since every frame's mask already holds the source's (stored mask, bad-pixel rules, hot pixels).
    ``min_peaks``: a hit has at least this many peaks (None: the finder's own hit rule; the finder must
    take a ``hit_rule`` option, as every peak-counting finder of this package does). The summary's method
    is ``name``; ``batch_size`` and the ``run`` options are those of :func:`reduce_run`.

    Raises:
        ConfigError: unknown finder, parameter or invalid value (before any output is written).
    """
    given = dict(params or {})
    options: dict[str, Any] = {} if min_peaks is None else {"hit_rule": HitRule(min_peaks=min_peaks)}
    finder = create_finder(name, given, detector=source_detector(source), **options)
    return reduce_run(
        source,
        finder,
        outdir,
        method=name,
        settings={"finder": name, "finder_params": given, "min_peaks": min_peaks},
        batch_size=batch_size,
        **run,
    )
