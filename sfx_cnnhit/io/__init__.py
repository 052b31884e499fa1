"""Frame I/O (modules are imported directly; this package imports nothing heavy on its own).

- ``sources``: :func:`~sfx_cnnhit.io.sources.open_frames` -> ``FrameSource.batches()`` over CXI/HDF5,
  ``%`` paths, CBF/SMV/EDF/TIFF images and ``.lst`` lists; ``masks``: mask conventions and bad pixels;
  ``hdf5``, ``images``, ``lists``: the format-specific pieces.
- ``cxi``: :class:`~sfx_cnnhit.io.cxi.CXIWriter` (reduced CXI output), ``write_geometry``, ``write_lst``,
  ``read_peak_lists``; ``atomic``: ``.inprogress`` outputs that never replace an input.
- ``geometry``: ``read_geometry``/``write_geometry``, CrystFEL geometry files of a
  :class:`~sfx_cnnhit.detector.DetectorGeometry`; ``crystfel_geom``: their text (``parse_geometry``,
  ``format_geometry``).

File layouts and conventions: ``docs/formats.md``.
"""
