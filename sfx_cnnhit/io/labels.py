"""True hit/miss labels for the frames being compared: an HDF5 dataset in each input, or a CSV table.

Labels are reduced to hit (1) / miss (0), with -1 for a frame that has none. Accepted forms:

- booleans, or integers that are all 0/1: hit flags (``/truth/hit``);
- class labels: integers with the class names or the first hit label stated in the file
  (attributes ``class_names`` / ``hit_min_label`` on the dataset or its group, as ``sfx-cnnhit
  simulate`` writes them), or else integers 0-4 read as DiffraNet's five classes
  (blank, no_crystal, weak, good, strong), a hit being label >= 2, the seed paper's merge;
- in a CSV, also names: ``hit``, ``maybe`` (hit, as in the seed's "hit or maybe"), ``miss`` and the
  five class names.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np
from numpy.typing import NDArray

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.hdf5 import open_hdf5
from sfx_cnnhit.types import FrameBatch

FIVE_CLASSES = ("blank", "no_crystal", "weak", "good", "strong")
#: A five-class label at or above this is a hit (weak, good, strong), as in the seed paper.
FIVE_CLASS_HIT_MIN = 2
#: Label names accepted in a CSV, and whether each is a hit.
NAMED_LABELS = {"hit": 1, "maybe": 1, "miss": 0, **{name: int(i >= FIVE_CLASS_HIT_MIN) for i, name in
                                                      enumerate(FIVE_CLASSES)}}
UNKNOWN = -1


class FrameLabels(Protocol):
    """Where labels come from; :func:`load_labels` builds one."""

    @property
    def description(self) -> str:
        """What the labels are, for the report (read-only in the implementations)."""
        ...

    def for_batch(self, batch: FrameBatch) -> tuple[list[str], NDArray[np.int8]]:
        """The labels of a batch as written in the source (``""`` if none) and as hit (1) / miss (0) / -1."""
        ...

    def notes(self) -> list[str]:
        """How the labels were read (for the report), once every batch has been seen."""
        ...


def _interpret_integers(values: NDArray[np.int64], where: str) -> tuple[NDArray[np.int8], str]:
    """Integer labels without stated classes: 0/1 flags, or five-class labels (hit = label >= 2)."""
    if values.size and (values.min() < 0 or values.max() >= len(FIVE_CLASSES)):
        raise InputError(
            f"{where}: labels must be 0/1 (miss/hit) or 0-4 (blank, no_crystal, weak, good, strong), "
            f"found values from {values.min()} to {values.max()}"
        )
    if values.size == 0 or values.max() <= 1:
        return values.astype(np.int8), "hit flags (1 = hit)"
    return (values >= FIVE_CLASS_HIT_MIN).astype(np.int8), (
        f"five-class labels ({', '.join(FIVE_CLASSES)}; hit = label >= {FIVE_CLASS_HIT_MIN})"
    )


def hits_from_dataset(dset: h5py.Dataset) -> tuple[NDArray[np.int8], list[str], str]:
    """Hit (1) / miss (0) per frame from a 1-D label dataset, the labels as text, and how they were read.

    The text is the class name where the file names the classes (``weak``), else the stored value.

    Raises:
        InputError: not 1-D, not boolean or integer, or values that fit no known labelling.
    """
    where = f"{dset.file.filename}:{dset.name}"
    if dset.ndim != 1:
        raise InputError(f"{where}: labels must be 1-D (one per frame), got shape {dset.shape}")
    kind = dset.dtype.kind
    if kind not in "biu":
        raise InputError(f"{where}: labels must be boolean or integer, got {dset.dtype}")
    values = dset[()]
    if kind == "b":
        return values.astype(np.int8), [str(int(v)) for v in values], "hit flags (True = hit)"
    values = values.astype(np.int64)
    attrs = {**dict(dset.parent.attrs), **dict(dset.attrs)}
    names = None
    if "class_names" in attrs:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(attrs["class_names"]).ravel()]
        if values.size and (values.min() < 0 or values.max() >= len(names)):
            raise InputError(f"{where}: labels outside 0..{len(names) - 1} for the classes {', '.join(names)}")
    text = [names[v] for v in values] if names else [str(v) for v in values]
    if "hit_min_label" in attrs:
        first = int(np.asarray(attrs["hit_min_label"]))
        return (values >= first).astype(np.int8), text, f"class labels, hit = label >= {first} (from the file)"
    if names:
        is_hit = np.array([int(NAMED_LABELS.get(n, 0)) for n in names], np.int8)
        hit_names = ", ".join(n for n, h in zip(names, is_hit, strict=True) if h)
        return is_hit[values], text, f"class labels ({', '.join(names)}; hit = {hit_names})"
    hits, how = _interpret_integers(values, where)
    return hits, text, how


@dataclass
class DatasetLabels:
    """Labels in a dataset of every HDF5 input, one per frame of that file (``/truth/hit``)."""

    dataset: str
    _cache: dict[str, tuple[NDArray[np.int8], NDArray[np.str_], str]] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"dataset {self.dataset} in each input file"

    def _load(self, path: str) -> tuple[NDArray[np.int8], NDArray[np.str_], str]:
        if path not in self._cache:
            with open_hdf5(path) as f:
                if self.dataset not in f or not isinstance(f[self.dataset], h5py.Dataset):
                    raise InputError(f"{path}: no label dataset {self.dataset}")
                hits, text, how = hits_from_dataset(f[self.dataset])
            self._cache[path] = (hits, np.array(text), how)
        return self._cache[path]

    def for_batch(self, batch: FrameBatch) -> tuple[list[str], NDArray[np.int8]]:
        hits, raw, _ = self._load(batch.source_file)
        idx = batch.source_index
        if idx.size and idx.max() >= hits.size:
            raise InputError(
                f"{batch.source_file}:{self.dataset}: {hits.size} labels, but frame {int(idx.max())} is read"
            )
        return raw[idx].tolist(), hits[idx]

    def notes(self) -> list[str]:
        return [f"{path}: {self.dataset} read as {how}" for path, (_, _, how) in self._cache.items()]


@dataclass
class CsvLabels:
    """Labels from a CSV table with columns ``event_id`` and ``label`` (matched on our event ids)."""

    path: Path
    raw: dict[str, str]
    hits: dict[str, int]
    how: str
    matched: set[str] = field(default_factory=set)

    @property
    def description(self) -> str:
        return f"table {self.path} (event_id, label)"

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> CsvLabels:
        """Read and interpret the whole table.

        Raises:
            InputError: missing columns, an event listed twice with different labels, unknown labels.
        """
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                rows = list(reader)
                columns = reader.fieldnames or []
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{path}: cannot read the label table ({err})") from None
        if not rows or not {"event_id", "label"} <= set(columns):
            raise InputError(f"{path}: the label table needs a header with columns event_id and label, and rows")
        raw: dict[str, str] = {}
        for line, row in enumerate(rows, start=2):
            event, label = (row["event_id"] or "").strip(), (row["label"] or "").strip()
            if not event or not label:
                raise InputError(f"{path}, line {line}: empty event_id or label")
            if raw.setdefault(event, label) != label:
                raise InputError(f"{path}, line {line}: event {event!r} listed again with another label")
        numeric = {e: v for e, v in raw.items() if v.lstrip("-").isdigit()}
        named = {e: v.lower() for e, v in raw.items() if e not in numeric}
        unknown = sorted({v for v in named.values() if v not in NAMED_LABELS})
        if unknown:
            raise InputError(
                f"{path}: unknown label(s) {', '.join(unknown[:5])}; use 0/1, 0-4 or {', '.join(NAMED_LABELS)}"
            )
        hits = {e: NAMED_LABELS[v] for e, v in named.items()}
        how = ["names"] if named else []
        if numeric:
            values = np.array([int(v) for v in numeric.values()], np.int64)
            flags, kind = _interpret_integers(values, str(path))
            hits.update(zip(numeric, flags.tolist(), strict=True))
            how.append(kind)
        return cls(path=path, raw=raw, hits=hits, how=" and ".join(how))

    def for_batch(self, batch: FrameBatch) -> tuple[list[str], NDArray[np.int8]]:
        found = [e for e in batch.event_ids if e in self.hits]
        self.matched.update(found)
        return (
            [self.raw.get(e, "") for e in batch.event_ids],
            np.array([self.hits.get(e, UNKNOWN) for e in batch.event_ids], np.int8),
        )

    def notes(self) -> list[str]:
        notes = [f"{self.path}: labels read as {self.how}"]
        unmatched = len(self.hits) - len(self.matched)
        if unmatched:
            notes.append(f"{self.path}: {unmatched} of {len(self.hits)} labelled events match no frame read")
        return notes


def load_labels(spec: str | os.PathLike[str]) -> FrameLabels:
    """Labels from ``spec``: an existing CSV file, or an HDF5 dataset path such as ``/truth/hit``.

    Raises:
        InputError: ``spec`` is neither an existing file nor a dataset path starting with ``/``.
    """
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return CsvLabels.read(path)
    if path.suffix.lower() == ".csv":
        raise InputError(f"{text}: no such label table")
    if text.startswith("/"):
        return DatasetLabels(text)
    raise InputError(f"--labels {text!r}: give a CSV file (event_id,label) or a dataset path such as /truth/hit")
