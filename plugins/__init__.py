"""Adapters to the programs beamlines run, installed as ``sfx_cnnhit.plugins``.

- :mod:`~sfx_cnnhit.plugins.om`: ``CnnPeakFinding`` and ``CnnCrystallographyProcessing`` for OM's
  crystallography monitor (``cnn_hit_detection`` YAML group); :mod:`~sfx_cnnhit.plugins.om_monitor`
  starts OM with it.
- :mod:`~sfx_cnnhit.plugins.cheetah`: the CNN hit finder from a Cheetah ini (``cnn*`` keys).

The ``indexamajig`` recipe written beside a reduction's hits is I/O: :mod:`sfx_cnnhit.io.crystfel_recipe`.

No module here imports OM until an OM class is asked for.
"""
