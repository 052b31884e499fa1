"""The CNN zoo, preprocessing, metrics, training and checkpoints.

- :mod:`~sfx_cnnhit.models.zoo`: ``create_model``, ``list_models``, ``ModelSpec``, ``register_model``;
- :mod:`~sfx_cnnhit.models.preprocess`: ``preprocess``, ``PreprocessConfig``, ``plan_input``
  (and ``InputPlan.to_frame`` for heat maps); the panels they tile: :class:`sfx_cnnhit.detector.PanelLayout`;
- :mod:`~sfx_cnnhit.models.metrics`: confusion matrices, the seed's Table 3/5 forms, ROC/PR, thresholds;
- :mod:`~sfx_cnnhit.models.training`: ``train``, ``TrainConfig``, ``PRESETS``, ``augment``, predictions;
- :mod:`~sfx_cnnhit.models.checkpoint`: ``save_checkpoint``, ``load_checkpoint``, ``load_model``.
"""

from sfx_cnnhit.models.checkpoint import DEFAULT_MODEL, load_checkpoint, load_model, save_checkpoint
from sfx_cnnhit.models.preprocess import PreprocessConfig, plan_input, preprocess
from sfx_cnnhit.models.zoo import ModelSpec, build_model, cam_layer, create_model, list_models, make_spec

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "PreprocessConfig",
    "build_model",
    "cam_layer",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_model",
    "make_spec",
    "plan_input",
    "preprocess",
    "save_checkpoint",
]
