"""Atomic outputs: write ``<name>.inprogress``, rename to ``<name>`` when complete, never onto an input.

Every file :func:`sfx_cnnhit.io.sources.open_frames` opens is remembered for the life of the process,
so no writer of this package can replace it even if the caller forgets to pass it in ``protect``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sfx_cnnhit.errors import OutputError

INPROGRESS_SUFFIX = ".inprogress"

_OPENED_INPUTS: set[Path] = set()


def register_input(path: str | os.PathLike[str]) -> None:
    """Remember ``path`` as an input so that no output of this process may be written onto it."""
    _OPENED_INPUTS.add(Path(path).resolve())


def inprogress_path(path: str | os.PathLike[str]) -> Path:
    """``<path>.inprogress``, where an output lives until it is complete."""
    path = Path(path)
    return path.with_name(path.name + INPROGRESS_SUFFIX)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Check that ``path`` (and its ``.inprogress``) may be written.

    Raises:
        OutputError: if it is one of ``protect`` or an input opened by this process, or its folder
            does not exist.
    """
    path = Path(path)
    targets = (path, inprogress_path(path))
    for protected in [*map(Path, protect), *_OPENED_INPUTS]:
        if any(_same_file(t, protected) for t in targets):
            raise OutputError(f"{path}: refusing to write an output onto the input file {protected}")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the output folder {path.parent} does not exist")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file name")
    return path


def make_output_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` (and its parents) unless it exists.

    Raises:
        OutputError: if it is a file (an input, say) or cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, not an output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot create the output folder ({err.strerror or err})") from None
    return path


def finalize(path: str | os.PathLike[str]) -> Path:
    """Rename ``<path>.inprogress`` to ``path`` (atomically, replacing an older output)."""
    path = Path(path)
    os.replace(inprogress_path(path), path)
    return path


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, protect: Iterable[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """Yield the ``.inprogress`` path to write; rename it to ``path`` on success, delete it on error."""
    path = check_output_path(path, protect)
    tmp = inprogress_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finalize(path)


@contextmanager
def write_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an :class:`OSError` inside the block (full disk, quota, file-size limit, no permission) into
    a one-line :class:`OutputError` naming ``path`` and saying that the same command resumes."""
    try:
        yield
    except OSError as err:
        raise OutputError(
            f"{path}: cannot write the output ({err.strerror or err}); make room and run the same command "
            "again: it resumes after the last committed batch"
        ) from None


def write_text_atomic(
    path: str | os.PathLike[str], text: str, *, protect: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Write a small text file atomically (``.inprogress`` then rename)."""
    with atomic_output(path, protect=protect) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
