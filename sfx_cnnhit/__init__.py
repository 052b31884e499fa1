"""sfx-cnnhit: an explainable CNN hit finder for serial femtosecond crystallography.

Layers, in the direction data flows:

- ``sfx_cnnhit.io``: frame sources (CXI, HDF5, CBF/SMV/EDF/TIFF, .lst), masks, CrystFEL geometry,
  the reduced-CXI writer.
- ``sfx_cnnhit.simulate``: synthetic serial-crystallography frames with ground truth.
- ``sfx_cnnhit.finders``: hit finders behind one interface (peakfinder8, CNN, DIALS dispersion).
- ``sfx_cnnhit.models``: the CNN zoo, preprocessing, training and evaluation.
- ``sfx_cnnhit.explain``: Grad-CAM, guided Grad-CAM, inversion, activation histograms, scores.
- ``sfx_cnnhit.pipeline``: the reduction pipeline behind ``sfx-cnnhit reduce``.
- ``sfx_cnnhit.cli``: the thin ``sfx-cnnhit`` command line.
"""

__version__ = "0.1.0"
