"""Side-by-side comparison of hit finders (installed as ``sfx_cnnhit.comparisons``).

The same frames go through several :class:`~sfx_cnnhit.finders.base.HitFinder` methods (CNN, real
DIALS, the built-in DIALS-style ``dispersion`` finder, peakfinder8); each is timed in the same run,
and its decisions are compared with labels and with the other methods::

    from sfx_cnnhit.comparisons import (
        MethodChoice, build_methods, dials_settings, load_labels, run_comparison, write_comparison)

    params, rule = dials_settings("ke2018_ln83")
    methods, warnings = build_methods(MethodChoice(dials=True, dials_params=params, dials_rule=rule,
                                                   peakfinder8=pf8), geometry=source.geometry)
    result = run_comparison(source, methods, labels=load_labels("/truth/hit"))
    write_comparison(result, "compare_out", source=source)

Modules: labels come from :mod:`sfx_cnnhit.io.labels`; :mod:`.job` (the whole ``sfx-cnnhit compare``
job: ``CompareRequest`` -> ``run_compare``), :mod:`.runner` (running and timing), :mod:`.methods`
(building the methods), :mod:`.plan` (given, gain-aware default or tuned settings), :mod:`.contest` and
:mod:`.grids` (tuning on validation frames), :mod:`.pedestal` (pedestal estimate), :mod:`.metrics`
(figures), :mod:`.curves` (ROC/PR), :mod:`.gallery` (disagreement gallery), :mod:`.report` (CSV, JSON
and Markdown outputs).
"""

from sfx_cnnhit.io.labels import CsvLabels, DatasetLabels, FrameLabels, load_labels

from .methods import CnnHitParams, MethodChoice, build_methods, dials_settings
from .metrics import agreement, cohen_kappa, hit_metrics
from .report import RunContext, summarize, write_comparison
from .runner import ComparisonResult, Method, run_comparison

__all__ = [
    "CnnHitParams",
    "ComparisonResult",
    "CsvLabels",
    "DatasetLabels",
    "FrameLabels",
    "Method",
    "MethodChoice",
    "RunContext",
    "agreement",
    "build_methods",
    "cohen_kappa",
    "dials_settings",
    "hit_metrics",
    "load_labels",
    "run_comparison",
    "summarize",
    "write_comparison",
]
