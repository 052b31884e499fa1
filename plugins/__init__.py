"""Adapters to the programs beamlines run, installed as ``sfx_cnnhit.plugins``.

- :mod:`~sfx_cnnhit.plugins.om`: ``CnnPeakFinding`` and ``CnnCrystallographyProcessing`` for OM's
  crystallography monitor (``cnn_hit_detection`` YAML group); :mod:`~sfx_cnnhit.plugins.om_monitor`
  starts OM with it.
- :mod:`~sfx_cnnhit.plugins.cheetah`: the CNN hit finder from a Cheetah ini (``cnn*`` keys).
- :mod:`~sfx_cnnhit.plugins.crystfel`: the ``indexamajig`` recipe for a reduction's hits.

No module here imports OM until an OM class is asked for.
"""
