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
and Markdown outputs). The names below are imported from their modules on first use.
"""

import importlib
from typing import Any

#: Each exported name -> the module that defines it, imported on first use (so importing one
#: submodule, e.g. :mod:`.methods` in a benchmark worker, does not import torch through the others).
_HOMES = {
    **dict.fromkeys(("CsvLabels", "DatasetLabels", "FrameLabels", "load_labels"), "sfx_cnnhit.io.labels"),
    **dict.fromkeys(("CnnHitParams",), "sfx_cnnhit.finders.config"),
    **dict.fromkeys(("Method", "MethodChoice", "build_methods", "dials_settings"), ".methods"),
    **dict.fromkeys(("agreement", "cohen_kappa", "hit_metrics"), ".metrics"),
    **dict.fromkeys(("RunContext", "summarize", "write_comparison"), ".report"),
    **dict.fromkeys(("ComparisonResult", "run_comparison"), ".runner"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)


__all__ = sorted(_HOMES)
