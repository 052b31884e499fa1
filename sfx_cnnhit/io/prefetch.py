"""Read ahead: iterate over batches while a background thread prepares the next ones."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Iterate ``items`` while a reader thread keeps up to ``depth`` of the next ones ready.

    Reading (HDF5 decompression, dtype conversion, masking) then overlaps with the caller's work;
    numpy, h5py's decompression filters and torch release the GIL for large arrays. At most
    ``depth + 2`` items exist at once (queued, being read, held by the caller). An exception in the
    reader is raised in the caller; when the caller stops early the reader stops after its current
    item and ``items`` is closed (its files too). ``depth = 0`` iterates in the caller's thread.
    """
    if depth < 1:
        yield from items
        return
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((False, item)):
                    return
            put((True, None))
        except BaseException as err:  # handed to the caller, who raises it
            put((True, err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="sfx-cnnhit-reader", daemon=True)
    reader.start()
    try:
        while True:
            last, value = slots.get()
            if last:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        reader.join()
