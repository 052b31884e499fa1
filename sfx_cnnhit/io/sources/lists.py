"""CrystFEL ``.lst`` lists (``file``, ``file //N``, ``file name//`` lines): expanded into the files to open,
and each file restricted to the events listed for it, in list order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.atomic import register_input
from sfx_cnnhit.io.lists import LIST_SUFFIXES, read_lst
from sfx_cnnhit.io.sources.base import _Input


def _input_specs(inputs: Sequence[str | os.PathLike[str]]) -> list[tuple[str, list[str] | None, str | None]]:
    """The files to open, ``.lst`` lists expanded: ``(file, the events listed for it or None for all, the list
    naming it or None)``; a list's consecutive events of one file form one entry."""
    specs: list[tuple[str, list[str] | None, str | None]] = []  # (file, events or None, listed in)
    for item in inputs:
        item = str(item)
        if not Path(item).exists():
            raise InputError(f"{item}: no such file")
        if Path(item).suffix.lower() in LIST_SUFFIXES and not h5py.is_hdf5(item):
            register_input(item)
            for file, event in read_lst(item):
                if specs and specs[-1][0] == file and specs[-1][2] == item and specs[-1][1] is not None and event:
                    specs[-1][1].append(event)
                else:
                    specs.append((file, [event] if event else None, item))
        else:
            specs.append((item, None, None))
    return specs


def _select(inp: _Input, events: list[str], lst: str) -> None:
    """Restrict an input to the events a .lst names for it (in list order)."""
    selected = []
    for event in events:
        names, _, index = event.partition("//")
        try:
            if inp.kind == "hdf5-%":
                if index:
                    raise ValueError
                selected.append(inp.event_names.index(names))
            else:
                if names:
                    raise ValueError
                selected.append(int(index))
        except ValueError:
            raise InputError(
                f"{lst}: event {event!r} of {inp.path} is not in the file ({inp.n_total} frames)"
            ) from None
        if not 0 <= selected[-1] < inp.n_total:
            raise InputError(f"{lst}: event {event!r} is out of range for {inp.path} ({inp.n_total} frames)")
    inp.selection = np.asarray(selected, np.int64)
