"""The frames of all inputs as one :class:`FrameSource`, streamed in bounded batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.io.hdf5 import CXI_DATA_PATHS
from sfx_cnnhit.io.hotpixels import HotPixelRule
from sfx_cnnhit.io.masks import BadPixelRules, describe_convention
from sfx_cnnhit.io.sources.base import _Input
from sfx_cnnhit.io.sources.reader import _Reader
from sfx_cnnhit.types import FailedFrame, FrameBatch


def _layout_name(inp: _Input) -> str:
    if inp.kind == "hdf5-%":
        return "one 2-D frame per path matching the % placeholder"
    if inp.kind == "image":
        return "image file"
    if inp.stored_rank == 4:
        return "4-D (N, modules, ss, fs) stack, modules stacked along ss"
    return "3-D (N, ss, fs) stack" if inp.stored_rank == 3 else "2-D single frame"


class FrameSource:
    """Frames of one or more inputs, streamed in bounded batches (build with :func:`open_frames`).

    Attributes:
        n_frames: frames over all inputs (after any ``.lst`` selection).
        frame_shape: ``(ss, fs)`` of every frame (the raw slab).
        dtype: the stored dtype of the first input's frames (batches are always float32).
        layout_info: OM's ``{asic_nx, asic_ny, nasics_x, nasics_y}`` from the geometry, or for a 4-D
            file one module per ASIC stacked along ss; None when unknown.
        geometry: the detector geometry given to :func:`open_frames`, if any.
    """

    def __init__(
        self,
        inputs: list[_Input],
        *,
        geometry: DetectorGeometry | None,
        rules: list[BadPixelRules],
        static_good: list[NDArray[np.bool_]],
        hot_pixels: HotPixelRule | None = None,
    ) -> None:
        self._inputs = inputs
        self._rules = rules
        self._static_good = static_good
        self.hot_pixels = hot_pixels
        self._hot_maps: dict[int, NDArray[np.bool_] | None] = {}
        self.hot_pixel_windows: dict[int, dict[str, int]] = {}
        self._offsets = np.cumsum([0] + [inp.n_frames for inp in inputs])
        self.geometry = geometry
        self.n_frames = int(self._offsets[-1])
        self.frame_shape = inputs[0].frame_shape
        self.dtype = inputs[0].dtype
        self.layout_info = _layout_info(inputs[0], geometry)

    def __len__(self) -> int:
        return self.n_frames

    @property
    def input_paths(self) -> list[str]:
        """The distinct files frames come from, in reading order (outputs must never replace them)."""
        return list(dict.fromkeys(inp.path for inp in self._inputs))

    def describe(self) -> list[dict[str, Any]]:
        """One dict per input file: path, format, data path, frames, shapes, dtype, compression, mask,
        event ids (first/last) and metadata found (the ``info`` command prints these)."""
        out = []
        for i, inp in enumerate(self._inputs):
            first = self._read_meta_and_ids(inp, np.array([0, inp.n_frames - 1], np.int64))
            rules = self._rules[i].describe()
            static = self._static_good[i]
            out.append(
                {
                    "path": inp.path,
                    "format": _format_name(inp),
                    "data_path": inp.data_path,
                    "n_frames": inp.n_frames,
                    "n_frames_in_file": inp.n_total,
                    "frame_shape": list(inp.frame_shape),
                    "stored_frame_shape": list(inp.raw_shape),
                    "layout": _layout_name(inp),
                    "dtype": str(inp.dtype),
                    "compression": inp.compression,
                    "layout_info": _layout_info(inp, self.geometry),
                    "mask": {
                        "source": inp.mask.label if inp.mask else None,
                        "per_frame": bool(inp.mask and inp.mask.per_frame),
                        "convention": describe_convention(inp.mask.goodbits, inp.mask.badbits) if inp.mask else None,
                        "static_bad_pixels": int(static.size - np.count_nonzero(static)),
                        **rules,
                    },
                    "event_ids": {
                        "source": inp.event_id_path or ("path placeholder" if inp.kind == "hdf5-%" else "file //index"),
                        "first": first[0][0],
                        "last": first[0][1],
                    },
                    "metadata": {
                        key: {"source": meta.label, "first": _json_float(first[1][key][0])}
                        for key, meta in inp.metadata.items()
                    },
                }
            )
        return out

    def batches(
        self,
        chunk_size: int = 64,
        *,
        start: int = 0,
        stop: int | None = None,
        stride: int = 1,
        skip_bad: bool = False,
    ) -> Iterator[FrameBatch]:
        """Yield batches of at most ``chunk_size`` frames of ``range(start, stop, stride)`` (global indices).

        A batch never spans two files. Frames are read only when their batch is requested, so memory
        is bounded by ``chunk_size`` (the batch being built, plus the one the caller still holds).
        With ``skip_bad``, a batch that cannot be read is read again frame by frame, and the frames
        that still fail are left out and listed in ``FrameBatch.failed`` (such a batch may hold no
        frame at all); one bad frame never costs its neighbours.

        Raises:
            InputError: when a file cannot be read or decompressed part-way (without ``skip_bad``).
        """
        if chunk_size < 1 or stride < 1 or start < 0:
            raise ValueError("chunk_size and stride must be >= 1 and start >= 0")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        for i, inp, lo, mine in self._by_input(np.arange(start, stop, stride, dtype=np.int64)):
            with _Reader(inp) as reader:
                for k in range(0, mine.size, chunk_size):
                    glob = mine[k : k + chunk_size]
                    try:
                        batch = self._batch(i, inp, reader, glob, glob - lo)
                    except InputError:
                        if not skip_bad:
                            raise
                        batch = self._batch_skipping_bad(i, inp, reader, glob, lo)
                    yield batch

    def _by_input(self, wanted: NDArray[np.int64]) -> Iterator[tuple[int, _Input, int, NDArray[np.int64]]]:
        """``(input number, input, its first global index, the global indices of ``wanted`` in it)``."""
        for i, inp in enumerate(self._inputs):
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            mine = wanted[(wanted >= lo) & (wanted < hi)]
            if mine.size:
                yield i, inp, lo, mine

    def __iter__(self) -> Iterator[FrameBatch]:
        return self.batches()

    def _batch(
        self, i: int, inp: _Input, reader: _Reader, glob: NDArray[np.int64], local: NDArray[np.int64]
    ) -> FrameBatch:
        file_idx = inp.file_indices(local)
        data, good = self._read_good(i, inp, reader, file_idx)
        if self.hot_pixels is not None:
            windows = self.hot_pixels.window_of(glob)
            for w in np.unique(windows):
                hot = self._hot_map(int(w))
                if hot is not None:
                    good[windows == w] &= ~hot
        np.copyto(data, 0.0, where=~good)
        ids, metadata = self._read_meta_and_ids(inp, local, reader)
        return FrameBatch(
            data=data,
            mask=good,
            event_ids=ids,
            source_file=inp.path,
            source_index=file_idx.astype(np.int64),
            metadata=metadata,
            global_index=glob.astype(np.int64),
        )

    def _batch_skipping_bad(
        self, i: int, inp: _Input, reader: _Reader, glob: NDArray[np.int64], lo: int
    ) -> FrameBatch:
        """The frames of ``glob`` read one by one: the readable ones, and the others as ``failed``."""
        good: list[FrameBatch] = []
        failed: list[FailedFrame] = []
        for g in glob:
            one = np.array([g], np.int64)
            try:
                good.append(self._batch(i, inp, reader, one, one - lo))
            except InputError as err:
                file_idx = int(inp.file_indices(one - lo)[0])
                try:
                    event_id = self._read_meta_and_ids(inp, one - lo, reader)[0][0]
                except (InputError, OSError, KeyError, ValueError):
                    event_id = f"{inp.path} //{file_idx}"
                failed.append(FailedFrame(event_id, inp.path, file_idx, int(g), str(err)))
        if good:
            first = good[0]
            metadata = {
                key: np.concatenate([np.atleast_1d(b.metadata[key]) for b in good]) for key in first.metadata
            }
            return FrameBatch(
                data=np.concatenate([b.data for b in good]),
                mask=np.concatenate([b.mask for b in good]),
                event_ids=[e for b in good for e in b.event_ids],
                source_file=inp.path,
                source_index=np.concatenate([b.source_index for b in good]),
                metadata=metadata,
                global_index=np.concatenate([b.global_index for b in good]),
                failed=tuple(failed),
            )
        shape = (0, *self.frame_shape)
        return FrameBatch(
            data=np.zeros(shape, np.float32),
            mask=np.zeros(shape, bool),
            event_ids=[],
            source_file=inp.path,
            source_index=np.zeros(0, np.int64),
            metadata={},
            global_index=np.zeros(0, np.int64),
            failed=tuple(failed),
        )

    def _read_good(
        self, i: int, inp: _Input, reader: _Reader, file_idx: NDArray[np.int64], *, value_rules: bool = True
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Frames and their good-pixel masks (stored mask, bad-pixel rules), before hot pixels.
        ``value_rules`` False: of the per-value rules only finiteness (what the hot-pixel map reads: a hot
        pixel at or above the saturation level in some frames is still the local maximum there)."""
        data = reader.frames(file_idx)
        good = self._rules[i].good(data) if value_rules else np.isfinite(data)
        good &= self._static_good[i]
        if inp.mask is not None and inp.mask.per_frame:
            good &= reader.mask_frames(file_idx)
        return data, good

    def _hot_map(self, window: int) -> NDArray[np.bool_] | None:
        """The hot-pixel map of ``window`` (True = hot), made on first use from frames read across the
        window (see :mod:`sfx_cnnhit.io.hotpixels`); the two most recent maps are kept."""
        if window in self._hot_maps:
            return self._hot_maps[window]
        rule = self.hot_pixels
        assert rule is not None
        wanted = rule.sample_indices(window, self.n_frames)
        samples: list[tuple[NDArray[np.float32], NDArray[np.bool_]]] = []
        for i, inp, lo, mine in self._by_input(wanted):
            with _Reader(inp) as reader:
                for local in mine - lo:
                    try:
                        data, good = self._read_good(
                            i, inp, reader, inp.file_indices(np.array([local])), value_rules=False
                        )
                    except InputError:  # an unreadable frame is no sample; the batch reading it reports it
                        continue
                    samples.append((data[0], good[0]))
        hot = rule.hot_map(samples)
        if len(self._hot_maps) >= 2:
            del self._hot_maps[min(self._hot_maps)]
        self._hot_maps[window] = hot
        self.hot_pixel_windows[window] = {
            "first_frame": int(window * rule.window),
            "sampled_frames": len(samples),
            "hot_pixels": -1 if hot is None else int(np.count_nonzero(hot)),
        }
        return hot

    def _read_meta_and_ids(
        self, inp: _Input, local: NDArray[np.int64], reader: _Reader | None = None
    ) -> tuple[list[str], dict[str, NDArray[np.float64]]]:
        if reader is None:
            with _Reader(inp, data=False) as own:
                return self._read_meta_and_ids(inp, local, own)
        file_idx = inp.file_indices(local)
        return reader.event_ids(file_idx), {key: reader.metadata(meta, file_idx) for key, meta in inp.metadata.items()}


def _json_float(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _format_name(inp: _Input) -> str:
    if inp.kind == "image":
        return Path(inp.path).suffix.lstrip(".").lower()
    return "cxi" if inp.data_path in CXI_DATA_PATHS[:3] else "hdf5"


def _layout_info(inp: _Input, geometry: DetectorGeometry | None) -> dict[str, int] | None:
    if geometry is not None:
        try:
            return geometry.layout_info()
        except ConfigError:
            return None
    if len(inp.raw_shape) == 3:
        modules, y, x = inp.raw_shape
        return {"asic_nx": x, "asic_ny": y, "nasics_x": 1, "nasics_y": modules}
    return None
