"""Shared pieces of the thin CLI layer: error reporting, console, progress bars."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sfx_cnnhit.errors import SfxCnnHitError

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)


class _State:
    debug: bool = False


STATE = _State()


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 shown as ``\\xff`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def handle_errors(func: F) -> F:
    """Turn a :class:`SfxCnnHitError` into one line on stderr and exit code 2 (traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SfxCnnHitError as err:
            if STATE.debug:
                raise
            print(f"sfx-cnnhit: error: {printable(str(err))}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("sfx-cnnhit: interrupted; outputs written so far are kept (re-run to resume)", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def progress_bar(transient: bool = False) -> Progress:
    """A rich progress bar on stderr (frames done / total, rate, time left)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


@contextmanager
def frame_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar driven by ``update(frames done, total frames)`` callbacks, showing frames/s.

    The bar appears with the first update, so a command that fails before any work shows none.
    """
    with progress_bar() as bar:
        task: list[Any] = []  # (task id, start time, frames done at start): a resumed run starts part-way

        def update(done: int, total: int) -> None:
            now = time.perf_counter()
            if not task:
                task.extend((bar.add_task(description, total=total, rate=""), now, done))
            elapsed = now - task[1]
            rate = f"{(done - task[2]) / elapsed:.1f} frames/s" if elapsed > 0 else ""
            bar.update(task[0], completed=done, total=total, rate=rate)

        yield update
