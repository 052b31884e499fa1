"""Explanations of the CNN's decisions, and a score of whether they point at Bragg peaks.

- :mod:`~sfx_cnnhit.explain.gradcam`: ``GradCamExplainer`` (Grad-CAM, HiResCAM, guided Grad-CAM
  through pytorch-grad-cam; maps on the detector's pixel grid with their raw maxima), ``LogOddsTarget``;
- :mod:`~sfx_cnnhit.explain.inversion`: ``invert_representation`` (Mahendran & Vedaldi, seed eq. 1-5);
- :mod:`~sfx_cnnhit.explain.histograms`: ``activation_histograms`` per class (seed Fig. 9);
- :mod:`~sfx_cnnhit.explain.score`: ``score_explanations``, ``ExplanationScorer`` (mass in spots,
  pointing game, where maps look on misses);
- :mod:`~sfx_cnnhit.explain.figures`: PNG figures (seed Figs. 6-12);
- :mod:`~sfx_cnnhit.explain.report`: ``explain_source``, the ``explain`` command as a library call.

Importing this package imports pytorch-grad-cam (a few seconds); command-line code imports it lazily.
"""

from sfx_cnnhit.explain.figures import (
    FramePanels,
    display_image,
    save_explanation_figure,
    save_histogram_figure,
    save_inversion_figure,
)
from sfx_cnnhit.explain.gradcam import Explanation, GradCamExplainer, LogOddsTarget
from sfx_cnnhit.explain.histograms import activation_histograms
from sfx_cnnhit.explain.inversion import inversion_layers, invert_representation
from sfx_cnnhit.explain.report import ExplainSettings, explain_source
from sfx_cnnhit.explain.score import ExplanationScorer, fair_dilation_px, score_explanations

__all__ = [
    "ExplainSettings",
    "Explanation",
    "ExplanationScorer",
    "FramePanels",
    "GradCamExplainer",
    "LogOddsTarget",
    "activation_histograms",
    "display_image",
    "explain_source",
    "fair_dilation_px",
    "inversion_layers",
    "invert_representation",
    "save_explanation_figure",
    "save_histogram_figure",
    "save_inversion_figure",
    "score_explanations",
]
