"""Committed batches of a comparison in progress, so that a killed ``compare`` resumes where it stopped.

The folder (``<outdir>/compare.inprogress`` for the CLI) holds ``state.json``, what is being compared
(inputs, frames, batch size, labels, every method's settings), written once, and one
``batch_NNNNNN.json`` per batch, written as ``.inprogress`` and renamed when complete: a batch is
committed when its file exists under its final name. A process killed at any moment loses at most the
batch in flight; a resumed run deletes anything else in the folder and starts after the last
committed batch. Scores are stored as JSON numbers (Python's float repr, exact for float64), so a
resumed comparison is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sfx_cnnhit.errors import OutputError
from sfx_cnnhit.io.atomic import write_errors, write_text_atomic

from .metrics import nan_to_none

STATE_FILE = "state.json"


@dataclass
class BatchResult:
    """Every method's results on one batch of frames, and what they cost (JSON-able).

    Attributes:
        event_ids: ``n`` event ids; source_file: the file they come from.
        source_index: ``n`` indices in that file; global_index: ``n`` indices in the source.
        scores, hits, n_peaks: per method name, ``n`` values.
        seconds: per method name, seconds in its ``classify`` call.
        inner_seconds: per method name (those reporting it), seconds in its own computation.
        read_seconds: seconds spent reading the batch.
    """

    event_ids: list[str]
    source_file: str
    source_index: list[int]
    global_index: list[int]
    scores: dict[str, list[float]]
    hits: dict[str, list[bool]]
    n_peaks: dict[str, list[int]]
    seconds: dict[str, float]
    inner_seconds: dict[str, float]
    read_seconds: float


class CommittedBatches:
    """The batches of one comparison committed so far in ``folder``.

    Args:
        folder: where the batches are kept (created if missing).
        identity: JSON-able description of the comparison; a folder holding batches of another
            comparison is refused, or emptied with ``restart``.
        restart: start afresh when the folder holds another comparison.

    Raises:
        OutputError: the folder holds another comparison (without ``restart``) or cannot be written.
    """

    def __init__(self, folder: str | os.PathLike[str], identity: dict[str, Any], *, restart: bool = False) -> None:
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(nan_to_none(identity)))
        state = self.folder / STATE_FILE
        try:
            found = json.loads(state.read_text(encoding="utf-8")) if state.is_file() else None
        except (OSError, ValueError) as err:
            found = {"unreadable": str(err)}
        if found != self.identity:
            if found is not None and not restart:
                raise OutputError(
                    f"{self.folder}: holds a partial comparison with other inputs or settings; run the same "
                    "command to resume it, or add --overwrite to discard it"
                )
            with write_errors(state):
                self._start()
        self.batches = self._load()

    def _start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir()
        write_text_atomic(self.folder / STATE_FILE, json.dumps(self.identity) + "\n")

    def _path(self, k: int) -> Path:
        return self.folder / f"batch_{k:06d}.json"

    def _load(self) -> list[BatchResult]:
        """Read the committed batches in order; delete everything else (a batch in flight, or batches
        after one that cannot be read back, e.g. lost to a power cut)."""
        batches: list[BatchResult] = []
        while self._path(len(batches)).is_file():
            try:
                record = json.loads(self._path(len(batches)).read_text(encoding="utf-8"))
                batches.append(BatchResult(**record))
            except (OSError, ValueError, TypeError):
                break
        keep = {STATE_FILE, *(self._path(k).name for k in range(len(batches)))}
        for leftover in self.folder.iterdir():
            if leftover.name not in keep:
                leftover.unlink()
        return batches

    def commit(self, batch: BatchResult) -> None:
        """Write ``batch`` as the next committed batch."""
        path = self._path(len(self.batches))
        with write_errors(path):
            write_text_atomic(path, json.dumps(asdict(batch)) + "\n")
        self.batches.append(batch)

