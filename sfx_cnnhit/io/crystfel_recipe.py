"""CrystFEL recipe: index the hits of a reduction with ``indexamajig``.

The reduced ``hits.cxi`` holds the frames and, in ``/entry_1/result_1``, their peak lists (``nPeaks``,
``peakXPosRaw``, ``peakYPosRaw``, ``peakTotalIntensity``); ``hits.geom`` says ``peak_list =
/entry_1/result_1`` and ``peak_list_type = cxi`` (CrystFEL >= 0.10), so ``indexamajig --peaks=cxi``
takes our peaks instead of searching again: peaks and frames are in the same file, as it requires.
"""

from __future__ import annotations

import os
import shlex
import stat
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from sfx_cnnhit import __version__
from sfx_cnnhit.errors import ConfigError
from sfx_cnnhit.io.atomic import atomic_output

RECIPE_NAME = "index_hits.sh"
STREAM_NAME = "hits.stream"
DEFAULT_INDEXING = "xgandalf,mosflm"
JOBS_VARIABLE = "NPROC"


def _default_nproc() -> int:
    return os.cpu_count() or 1


def indexamajig_command(
    outputs: Mapping[str, str | os.PathLike[str]],
    *,
    nproc: int | None = None,
    indexing: str = DEFAULT_INDEXING,
    extra: Sequence[str] = (),
    workdir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The ``indexamajig`` command line that indexes the hits of a reduction.

    ``indexamajig -i hits.lst -g hits.geom --peaks=cxi --basename [--prefix=DIR/] -o hits.stream -j N
    --indexing=... EXTRA...``; ``--basename`` (with ``--prefix`` the folder of ``hits.cxi`` when it is
    not ``workdir``) makes the events of ``hits.lst`` found wherever the reduction was started from.

    Args:
        outputs: the reduction's outputs by role (``ReduceSummary.outputs``: ``lst``, ``geometry``,
            ``cxi``).
        nproc: worker processes (``-j``); default the CPUs of this machine.
        indexing: ``--indexing`` methods, tried in turn (``""`` leaves the choice to indexamajig).
        extra: more options, e.g. ``("-p", "cell.pdb", "--int-radius=3,4,5")``.
        workdir: the folder the command runs in; paths are given relative to it (default: as in
            ``outputs``, and the stream beside ``hits.lst``).

    Raises:
        ConfigError: ``outputs`` lacks ``lst``, ``geometry`` or ``cxi``, or ``nproc < 1``.
    """
    missing = [role for role in ("lst", "geometry", "cxi") if role not in outputs]
    if missing:
        raise ConfigError(f"indexamajig recipe: the reduction outputs lack {', '.join(missing)}")
    jobs = _default_nproc() if nproc is None else int(nproc)
    if jobs < 1:
        raise ConfigError(f"indexamajig recipe: nproc must be >= 1, got {nproc}")
    lst, geometry, cxi = (Path(outputs[role]) for role in ("lst", "geometry", "cxi"))
    stream = lst.with_name(STREAM_NAME)

    def shown(path: Path) -> str:
        return str(path) if workdir is None else os.path.relpath(path, workdir)

    command = ["indexamajig", "-i", shown(lst), "-g", shown(geometry), "--peaks=cxi", "--basename"]
    cxi_dir = shown(cxi.parent)
    if cxi_dir != os.curdir:
        command.append(f"--prefix={cxi_dir.rstrip(os.sep)}{os.sep}")
    command += ["-o", shown(stream), "-j", str(jobs)]
    if indexing:
        command.append(f"--indexing={indexing}")
    return [*command, *extra]


_RECIPE_INTRO = """\
#!/bin/sh
# Index the hits of this sfx-cnnhit reduction with CrystFEL's indexamajig (CrystFEL >= 0.10).
# Written by sfx-cnnhit {version}. Run it from anywhere: ./{name} [more indexamajig options]
# Give at least your unit cell: ./{name} -p cell.pdb (or a CrystFEL .cell); NPROC=32 ./{name} sets -j.
#
"""
_RECIPE_OPTIONS = (
    ("-i", "the hits, one 'hits.cxi //N' event per line (N = frame in hits.cxi)"),
    ("--basename", "strip the folders from those lines: hits.cxi is read from this folder, whichever"
                   " folder the reduction was started from"),
    ("--prefix", "the folder of hits.cxi"),
    ("-g", "CrystFEL geometry of hits.cxi: data = /entry_1/data_1/data, dim0 = % (one event per frame),"
           " peak_list = /entry_1/result_1, peak_list_type = cxi. Check its adu_per_photon, clen and"
           " photon_energy before indexing real data"),
    ("--peaks=cxi", "take the peaks sfx-cnnhit found (nPeaks, peakXPosRaw, peakYPosRaw, peakTotalIntensity"
                    " in hits.cxi) instead of searching again; CrystFEL adds the half-pixel offset itself"
                    " and re-checks the peaks (panel edges, saturation, bad pixels; --no-revalidate skips"
                    " that)"),
    ("-o", "the output stream: indexing solutions and integrated reflections"),
    ("-j", "parallel worker processes: $NPROC, default {nproc}"),
    ("--indexing", "indexing methods, tried in turn until one succeeds"),
    ('"$@"', "whatever you add on the command line (-p cell.pdb, --int-radius=3,4,5, --multi ...)"),
)
_RECIPE_SETUP = """\
set -e
cd "$(dirname "$0")"
{variable}="${{{variable}:-{nproc}}}"
"""


def _comment_block(words: Sequence[str], nproc: int) -> str:
    """``#   OPTION   explanation`` lines for the options that occur in the command."""
    lines = []
    for option, text in _RECIPE_OPTIONS:
        if not any(word == option or word.startswith(f"{option}=") for word in words):
            continue
        wrapped = textwrap.wrap(text.format(nproc=nproc), width=80)
        lines.append(f"#   {option:<14}{wrapped[0]}")
        lines += [f"#   {'':<14}{line}" for line in wrapped[1:]]
    return "\n".join(lines) + "\n"


def _paired(words: Sequence[str]) -> list[str]:
    """Shell words with each option and its separate value on one line."""
    lines: list[str] = []
    for word in words:
        if lines and lines[-1] in ("-i", "-g", "-o", "-j", "-p"):
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def write_recipe(
    outdir: str | os.PathLike[str],
    outputs: Mapping[str, str | os.PathLike[str]],
    *,
    nproc: int | None = None,
    indexing: str = DEFAULT_INDEXING,
    extra: Sequence[str] = (),
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``outdir/index_hits.sh``: the :func:`indexamajig_command`, commented, run from ``outdir``.

    The script is executable, written atomically (``.inprogress`` then renamed), takes the number
    of processes from ``$NPROC`` (default ``nproc``) and passes its own arguments on to indexamajig.

    Returns:
        the script's path.
    """
    outdir = Path(outdir)
    jobs = _default_nproc() if nproc is None else int(nproc)
    command = indexamajig_command(outputs, nproc=jobs, indexing=indexing, extra=extra, workdir=outdir)
    words = [shlex.quote(word) for word in command]
    words[command.index("-j") + 1] = f'"${JOBS_VARIABLE}"'
    words.append('"$@"')
    text = (
        _RECIPE_INTRO.format(version=__version__, name=RECIPE_NAME)
        + _comment_block(words, jobs)
        + _RECIPE_SETUP.format(variable=JOBS_VARIABLE, nproc=jobs)
        + "exec "
        + " \\\n    ".join(_paired(words))
        + "\n"
    )
    path = outdir / RECIPE_NAME
    with atomic_output(path, protect=protect) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
