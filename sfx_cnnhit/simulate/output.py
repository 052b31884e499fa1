"""Write simulated frames with their ground truth to a reduced CXI file (and its CrystFEL geometry).

Layout: the frames, mask, event ids and metadata where every reduced CXI file has them (see
:mod:`sfx_cnnhit.io.cxi`), plus the ground truth under ``/truth``:

- ``label`` (N,) int64, ``hit`` (N,) bool, ``n_spots`` (N,) int64, ``frame_index`` (N,) int64;
- ``bragg_mask`` (N, ss, fs) bool (compressed);
- ``params`` (N,) JSON strings (one :meth:`FrameParams.to_dict` plus results per frame);
- ``reflections/{frame, fs, ss, intensity, h, k, l, d, partiality, snr, lattice, spot}`` (one row per
  listed reflection; ``frame`` is the row of its frame in the file);
- attributes ``class_names``, ``hit_min_label``, ``seed``, ``split``, ``config`` (JSON) and
  ``spot_definition``.

The stored mask is the union of the bad pixels of every detector instance in the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import DTypeLike, NDArray

from sfx_cnnhit.errors import OutputError
from sfx_cnnhit.io.cxi import CXIWriter
from sfx_cnnhit.simulate.config import CLASS_NAMES, HIT_MIN_LABEL, SimulationConfig
from sfx_cnnhit.simulate.simulator import SimulatedBatch, Simulator

TRUTH = "/truth"
_STR = h5py.string_dtype("utf-8")


def _truth_datasets(frame_shape: tuple[int, int]) -> dict[str, tuple[tuple[int, ...], DTypeLike]]:
    return {
        f"{TRUTH}/label": ((), np.int64),
        f"{TRUTH}/hit": ((), np.bool_),
        f"{TRUTH}/n_spots": ((), np.int64),
        f"{TRUTH}/frame_index": ((), np.int64),
        f"{TRUTH}/bragg_mask": (frame_shape, np.bool_),
        f"{TRUTH}/params": ((), _STR),
    }


def _reflection_rows(batch: SimulatedBatch, first_row: int) -> dict[str, np.ndarray]:
    columns: dict[str, list[np.ndarray]] = {}
    for i, table in enumerate(batch.reflections):
        n = next(iter(table.values())).size
        columns.setdefault("frame", []).append(np.full(n, first_row + i, np.int64))
        for name, values in table.items():
            columns.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def _append(writer: CXIWriter, batch: SimulatedBatch, first_row: int, split: str, seed: int) -> None:
    writer.append(
        batch.data,
        event_ids=[f"{split}/{i}" for i in batch.frame_index],
        source_files=f"sfx-cnnhit simulate seed={seed} split={split}",
        source_indices=batch.frame_index,
        extras={
            f"{TRUTH}/label": batch.labels,
            f"{TRUTH}/hit": batch.hit,
            f"{TRUTH}/n_spots": batch.n_spots,
            f"{TRUTH}/frame_index": batch.frame_index,
            f"{TRUTH}/bragg_mask": batch.bragg_mask,
            f"{TRUTH}/params": np.array([json.dumps(p) for p in batch.params], dtype=object),
        },
        metadata={
            "photon_energy_ev": np.array([p["photon_energy_ev"] for p in batch.params]),
            "clen_m": np.array([p["clen_m"] for p in batch.params]),
        },
        tables={f"{TRUTH}/reflections": _reflection_rows(batch, first_row)},
    )


def simulate_to_file(
    path: str | os.PathLike[str],
    n_frames: int,
    seed: int,
    config: SimulationConfig | None = None,
    class_fractions: Sequence[float] | None = None,
    hit_rate: float | None = None,
    split: str = "train",
    chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
    *,
    workers: int = 1,
    compression: str = "gzip",
    resume: bool = False,
    geometry_file: bool = True,
) -> Path:
    """Simulate ``n_frames`` frames into a reduced CXI file, ``chunk`` frames in memory at a time.

    Args:
        path: output file (written as ``<path>.inprogress`` and renamed when complete).
        n_frames: frames to write.
        seed, split: the random streams (see :class:`Simulator`).
        config: simulation settings (default :class:`SimulationConfig`).
        class_fractions, hit_rate: class shares (default equal shares); see
            :func:`~sfx_cnnhit.simulate.simulator.class_fractions_for`.
        chunk: frames simulated and appended per step.
        progress: called as ``progress(frames_done, n_frames)`` after every chunk.
        workers: simulator processes.
        compression: frame compression (see :class:`~sfx_cnnhit.io.cxi.CXIWriter`).
        resume: continue an interrupted ``<path>.inprogress`` written with the same arguments.
        geometry_file: also write the CrystFEL geometry ``<path stem>.geom`` beside the file.

    Returns:
        The path of the finished file.

    Raises:
        OutputError: if the output cannot be written; ConfigError: for invalid settings.
    """
    if n_frames < 1:
        raise OutputError(f"{path}: the number of frames must be at least 1")
    if chunk < 1:
        raise OutputError(f"{path}: chunk must be at least 1")
    config = config or SimulationConfig()
    settings = _resume_settings(config, n_frames, seed, split, class_fractions, hit_rate)
    with Simulator(config, seed, split, workers=workers) as sim:
        labels = sim.labels_for(n_frames, class_fractions, hit_rate)
        writer = _open_writer(path, sim, n_frames, compression=compression, resume=resume)
        with writer:
            start = writer.n_frames
            if start and writer.state.get("settings") != settings:
                raise OutputError(f"{writer.tmp_path}: cannot resume, it was started with other settings")
            if progress is not None:
                progress(start, n_frames)
            _write_chunks(
                writer, sim, labels, list(range(start, n_frames, chunk)), chunk=chunk, split=split, seed=seed,
                settings=settings, progress=progress, n_frames=n_frames,
            )
    final = writer.path
    _describe_truth(final, config, seed, split)
    if geometry_file:
        writer.write_geometry(final.with_suffix(".geom"))
    return final


def _resume_settings(
    config: SimulationConfig,
    n_frames: int,
    seed: int,
    split: str,
    class_fractions: Sequence[float] | None,
    hit_rate: float | None,
) -> dict[str, Any]:
    """The arguments that make a file, as stored in its commit state (JSON), to recognise a resumable file."""
    settings = {
        "seed": int(seed),
        "split": split,
        "config": config.to_dict(),
        "n_frames": int(n_frames),
        "class_fractions": None if class_fractions is None else [float(x) for x in class_fractions],
        "hit_rate": hit_rate,
    }
    result: dict[str, Any] = json.loads(json.dumps(settings))
    return result


def _open_writer(
    path: str | os.PathLike[str], sim: Simulator, n_frames: int, *, compression: str, resume: bool
) -> CXIWriter:
    """The file's writer (resuming ``<path>.inprogress`` with ``resume``), its stored mask the union of the
    bad pixels of every detector instance of the ``n_frames`` frames."""
    per_instance = sim.config.detector.instance_frames
    mask = np.logical_and.reduce([sim.instance(i).mask for i in range(0, n_frames, per_instance)])
    return CXIWriter(
        path,
        frame_shape=sim.frame_shape,
        compression=compression,
        extra_datasets=_truth_datasets(sim.frame_shape),
        geometry=sim.geometry,
        mask=mask,
        resume=resume,
    )


def _write_chunks(
    writer: CXIWriter,
    sim: Simulator,
    labels: NDArray[np.int64],
    firsts: list[int],
    *,
    chunk: int,
    split: str,
    seed: int,
    settings: dict[str, Any],
    progress: Callable[[int, int], None] | None,
    n_frames: int,
) -> None:
    """Simulate the chunks of ``chunk`` frames of ``labels`` starting at ``firsts`` and append and commit each
    one; ``progress(frames done, n_frames)`` after each."""

    def simulate(first: int) -> SimulatedBatch:
        return sim.generate(labels[first : first + chunk], start_index=first)

    # Simulate the next chunk in a thread while this one is compressed and written.
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = [ahead.submit(simulate, firsts[0])] if firsts else []
        for i, first in enumerate(firsts):
            batch = pending.pop().result()
            if i + 1 < len(firsts):
                pending.append(ahead.submit(simulate, firsts[i + 1]))
            _append(writer, batch, first, split, seed)
            writer.commit({"settings": settings})
            if progress is not None:
                progress(first + len(batch), n_frames)


def _describe_truth(path: Path, config: SimulationConfig, seed: int, split: str) -> None:
    """Attributes of the finished file's ``/truth`` group: class names, seed, split, config, spot definition."""
    with h5py.File(path, "r+") as f:
        truth = f[TRUTH]
        truth.attrs["class_names"] = np.array(CLASS_NAMES, dtype=_STR)
        truth.attrs["hit_min_label"] = HIT_MIN_LABEL
        truth.attrs["seed"] = int(seed)
        truth.attrs["split"] = split
        truth.attrs["config"] = json.dumps(config.to_dict())
        truth.attrs["spot_definition"] = (
            f"reflection whose expected signal inside its 2-sigma ellipse reaches {config.classes.spot_snr} "
            "times the noise of signal plus background; weak/good/strong from n_spots thresholds "
            f"{list(config.classes.thresholds)}"
        )
