"""CrystFEL-style file lists (``.lst``): ``file``, ``file //N`` (frame N) or ``file name//`` (a ``%`` event)."""

from __future__ import annotations

import os
from pathlib import Path

from sfx_cnnhit.errors import InputError

LIST_SUFFIXES = (".lst", ".txt")


def read_lst(path: str | os.PathLike[str]) -> list[tuple[str, str | None]]:
    """``(file, event or None)`` for every line of a list; blank lines and ``#`` comments are skipped.

    Relative file names are taken relative to the working directory, else to the list's folder. Names
    are decoded as the file system does (:func:`os.fsdecode`), so a name that is not UTF-8 still opens.
    """
    p = Path(path)
    try:
        lines = os.fsdecode(p.read_bytes()).splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read the list ({err.strerror or err})") from None
    entries = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        file, event = parts[0], (parts[1].strip() if len(parts) > 1 else None)
        if event is not None and "//" not in event:
            raise InputError(f"{path} line {number}: expected 'file', 'file //N' or 'file name//', got {line!r}")
        if not Path(file).is_absolute() and not Path(file).exists() and (p.parent / file).exists():
            file = str(p.parent / file)
        if Path(file).suffix.lower() in LIST_SUFFIXES:
            raise InputError(f"{path} line {number}: lists of lists are not supported ({file})")
        entries.append((file, event))
    if not entries:
        raise InputError(f"{path}: the list names no files")
    return entries
