"""A corpus of bad inputs, each built here: one line naming the file and the problem, exit status 2, no
traceback, the inputs byte-identical afterwards and nothing written (docs/reliability.md, "Bad input files")."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.io.crystfel_geom import format_geometry
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.models.checkpoint import save_checkpoint
from sfx_cnnhit.models.zoo import create_model
from tests.cli import one_line_error, run_cli

N, SHAPE = 4, (64, 64)
DATA = "entry_1/data_1/data"
RUNS = ("peakfinder8", "reduce")  # the commands that write a run's outputs


def _frames(dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).poisson(3.0, (N, *SHAPE)).astype(dtype)


def _h5(path: Path, **datasets: object) -> Path:
    """An HDF5 file with ``datasets`` (``__`` in a name stands for ``/``)."""
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name.replace("__", "/")] = value
    return path


def _run(path: Path, **extra: object) -> Path:
    """A good CXI file of N frames (plus ``extra`` datasets)."""
    return _h5(path, entry_1__data_1__data=_frames(), **extra)


def _cut(path: Path, size: int) -> Path:
    """``path`` cut to ``size`` bytes (negative: that many bytes short)."""
    data = path.read_bytes()
    path.write_bytes(data[:size])
    return path


def _lst(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "frames.lst"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# Each builder writes its bad input(s) into the folder given and returns the command's arguments; the test
# adds the command, its OPTIONS, the tiny model where one is needed, and for reduce and peakfinder8
# ``-o <folder>/out`` unless the builder names its own ``-o``.


def _truncated_at(size: int) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(_cut(_run(tmp / "cut.cxi"), size))]


def _empty_file(tmp: Path) -> list[str]:
    (tmp / "empty.cxi").write_bytes(b"")
    return [str(tmp / "empty.cxi")]


def _not_hdf5(tmp: Path) -> list[str]:
    (tmp / "notes.cxi").write_text("not frames\n")
    return [str(tmp / "notes.cxi")]


def _folder(tmp: Path) -> list[str]:
    (tmp / "run.cxi").mkdir()
    return [str(tmp / "run.cxi")]


def _missing(tmp: Path) -> list[str]:
    return [str(tmp / "gone.cxi")]


def _dataset(value: object, *options: str) -> Callable[[Path], list[str]]:
    """A file whose frame dataset (``/entry_1/data_1/data``, or the ``--data-path`` given) holds ``value``."""

    def build(tmp: Path) -> list[str]:
        name = options[1].strip("/").replace("/", "__") if options else DATA.replace("/", "__")
        return [str(_h5(tmp / "odd.cxi", **{name: value})), *options]

    return build


def _data_path_group(tmp: Path) -> list[str]:
    return [str(_run(tmp / "run.cxi")), "--data-path", "/entry_1/data_1"]


def _data_path_missing(tmp: Path) -> list[str]:
    return [str(_run(tmp / "run.cxi")), "--data-path", "/other"]


def _external_link(target: str, *options: str, create_target: bool = False) -> Callable[[Path], list[str]]:
    """A file whose frame dataset is an external link to ``target`` (``file:/dataset``)."""

    def build(tmp: Path) -> list[str]:
        file, dataset = target.split(":")
        if create_target:
            _run(tmp / file)
        with h5py.File(tmp / "linked.cxi", "w") as f:
            f[DATA] = h5py.ExternalLink(file, dataset)
        return [str(tmp / "linked.cxi"), *options]

    return build


def _soft_link(tmp: Path) -> list[str]:
    with h5py.File(tmp / "linked.cxi", "w") as f:
        f[DATA] = h5py.SoftLink("/entry_1/frames")
    return [str(tmp / "linked.cxi")]


def _external_link_to_truncated(tmp: Path) -> list[str]:
    _cut(_run(tmp / "cut.cxi"), -1)
    with h5py.File(tmp / "linked.cxi", "w") as f:
        f[DATA] = h5py.ExternalLink("cut.cxi", f"/{DATA}")
    return [str(tmp / "linked.cxi")]


def _virtual(n_missing: int, source_path: str = DATA) -> Callable[[Path], list[str]]:
    """A file whose frame dataset is virtual, gathering ``source_path`` of two source files of which
    ``n_missing`` are absent."""

    def build(tmp: Path) -> list[str]:
        layout = h5py.VirtualLayout((2 * N, *SHAPE), np.float32)
        for k in range(2):
            source = tmp / f"part{k}.cxi"
            if k >= n_missing:
                _run(source)
            layout[k * N : (k + 1) * N] = h5py.VirtualSource(source.name, source_path, shape=(N, *SHAPE))
        with h5py.File(tmp / "virtual.cxi", "w") as f:
            f.create_virtual_dataset(DATA, layout, fillvalue=0)
        return [str(tmp / "virtual.cxi")]

    return build


def _virtual_truncated(tmp: Path) -> list[str]:
    args = _virtual(0)(tmp)
    _cut(tmp / "part1.cxi", -1)
    return args


def _two_shapes(tmp: Path) -> list[str]:
    small = _h5(tmp / "small.cxi", entry_1__data_1__data=np.ones((N, 32, 32), np.float32))
    return [str(_run(tmp / "run.cxi")), str(small)]


def _lst_of(text: str, make_run: bool = True) -> Callable[[Path], list[str]]:
    """A list with ``text`` (``{run}`` stands for a good file of N frames)."""

    def build(tmp: Path) -> list[str]:
        run = _run(tmp / "run.cxi") if make_run else tmp / "run.cxi"
        return [str(_lst(tmp, text.format(run=run)))]

    return build


def _image_of_text(tmp: Path) -> list[str]:
    (tmp / "frame.cbf").write_text("###CBF: not really\n")
    return [str(tmp / "frame.cbf")]


def _placeholder_matching_nothing(tmp: Path) -> list[str]:
    return [str(_run(tmp / "run.cxi")), "--data-path", "/entry_1/%/frames"]


def _non_utf8_name(tmp: Path) -> list[str]:
    path = tmp / os.fsdecode(b"\xffrun.cxi")
    return [str(_cut(_run(path), -1))]


def _non_utf8_name_in_lst(tmp: Path) -> list[str]:
    _cut(_run(tmp / os.fsdecode(b"\xffrun.cxi")), -1)
    return [str(_lst(tmp, os.fsencode(tmp) + b"/\xffrun.cxi\n"))]


def _mask_in_file(value: np.ndarray) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(_run(tmp / "run.cxi", entry_1__data_1__mask=value))]


def _mask_file_shape(tmp: Path) -> list[str]:
    mask = _h5(tmp / "mask.h5", mask=np.zeros((32, 32), np.uint8))
    return [str(_run(tmp / "run.cxi")), "--mask-path", f"{mask}:/mask"]


def _mask_dataset_missing(tmp: Path) -> list[str]:
    return [str(_run(tmp / "run.cxi")), "--mask-path", "/entry_1/data_1/nomask"]


def _mask_file_of_text(tmp: Path) -> list[str]:
    (tmp / "mask.edf").write_text("no mask here\n")
    return [str(_run(tmp / "run.cxi")), "--mask-path", str(tmp / "mask.edf")]


def _mask_file_missing(tmp: Path) -> list[str]:
    return [str(_run(tmp / "run.cxi")), "--mask-path", f"{tmp / 'nomask.h5'}:/mask"]


def _geometry(text: str | bytes) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        geom = tmp / "detector.geom"
        geom.write_bytes(text if isinstance(text, bytes) else text.encode())
        return [str(_run(tmp / "run.cxi")), "-g", str(geom)]

    return build


def _geometry_missing(tmp: Path) -> list[str]:
    return [str(_run(tmp / "run.cxi")), "-g", str(tmp / "nowhere.geom")]


def _config_garbage(tmp: Path) -> list[str]:
    (tmp / "om.yaml").write_text("peakfinder8: [unclosed\n  :: {\n")
    return [str(_run(tmp / "run.cxi")), "--config", str(tmp / "om.yaml")]


def _output_is_input(tmp: Path) -> list[str]:
    run = _run(tmp / "run.cxi")
    return [str(run), "-o", str(run)]


def _output_inside_input(tmp: Path) -> list[str]:
    run = _run(tmp / "run.cxi")
    return [str(run), "-o", str(run / "out")]


def _input_is_an_output(name: str) -> Callable[[Path], list[str]]:
    """The input is ``out/<name>``, a file the run would write into ``-o out``."""

    def build(tmp: Path) -> list[str]:
        (tmp / "out").mkdir()
        if name.endswith(".lst"):
            return [
                str(_lst(tmp / "out", f"{_run(tmp / 'run.cxi')}\n").rename(tmp / "out" / name)),
                "-o",
                str(tmp / "out"),
            ]
        return [str(_run(tmp / "out" / name)), "-o", str(tmp / "out")]

    return build


def _labelled(tmp: Path) -> Path:
    return _run(tmp / "run.cxi", truth__hit=np.array([1, 0, 1, 0], np.int8))


def _json_is_input(tmp: Path) -> list[str]:
    run = _labelled(tmp)
    return [str(run), "--json", str(run)]


def _folder_option_is_input(option: str) -> Callable[[Path], list[str]]:
    """A labelled file given as its own output folder ``option`` (``--plots``, ``--figures``)."""

    def build(tmp: Path) -> list[str]:
        run = _labelled(tmp)
        return [str(run), option, str(run)]

    return build


def _calibrated_onto(target: str) -> Callable[[Path], list[str]]:
    """``calibrate`` writing its checkpoint onto its own input: ``target`` is ``model`` or ``val``."""

    def build(tmp: Path) -> list[str]:
        model, spec = create_model("hitnet_test", task="hitmiss")
        paths = {"model": save_checkpoint(tmp / "tiny.pt", model.eval(), spec), "val": _labelled(tmp)}
        return [str(paths["model"]), "--val", str(paths["val"]), "-o", str(paths[target])]

    return build


def _skip_unless_denied(path: Path, mode: int, probe: Callable[[], object]) -> None:
    """``chmod(path, mode)``; skip the test if ``probe`` still succeeds (root ignores file permissions)."""
    path.chmod(mode)
    try:
        probe()
    except PermissionError:
        return
    pytest.skip("file permissions do not stop this process (root)")


def _unwritable_output(tmp: Path) -> list[str]:
    locked = tmp / "locked"
    locked.mkdir()
    _skip_unless_denied(locked, 0o500, lambda: (locked / "probe").touch())
    return [str(_run(tmp / "run.cxi")), "-o", str(locked / "out")]


def _unreadable_input(tmp: Path) -> list[str]:
    run = _run(tmp / "run.cxi")
    _skip_unless_denied(run, 0o000, run.read_bytes)
    return [str(run)]


@dataclass(frozen=True)
class Case:
    """A bad input: the commands run on it, its builder, and the words (or parts) the error line must contain."""

    commands: tuple[str, ...]
    build: Callable[[Path], list[str]]
    expected: str | tuple[str, ...]


CASES: dict[str, Case] = {
    # HDF5 files that cannot be opened
    "truncated at 64 bytes": Case(RUNS, _truncated_at(64), "cut.cxi: truncated HDF5 file"),
    "truncated at 2 kB": Case(RUNS, _truncated_at(2048), "cut.cxi: truncated HDF5 file"),
    "truncated by 1 byte": Case(
        ("info", *RUNS, "evaluate", "explain"), _truncated_at(-1), "cut.cxi: truncated HDF5 file"
    ),
    "empty file": Case(RUNS, _empty_file, "empty.cxi: not an HDF5 file"),
    "text file": Case(RUNS, _not_hdf5, "notes.cxi: not an HDF5 file"),
    "folder given as a file": Case(("info", *RUNS), _folder, "run.cxi: is a folder, not a file"),
    "missing file": Case(RUNS, _missing, "gone.cxi: no such file"),
    # frame datasets that are not frames
    "0 frames": Case(
        (*RUNS, "evaluate", "explain"),
        _dataset(np.zeros((0, *SHAPE), np.float32)),
        "odd.cxi:/entry_1/data_1/data: empty stack",
    ),
    "frames of 1x1": Case(
        RUNS, _dataset(np.ones((N, 1, 1), np.float32)), "odd.cxi:/entry_1/data_1/data: frames of 1x1 pixels"
    ),
    "frames of 64x0": Case(
        RUNS, _dataset(np.ones((N, 64, 0), np.float32)), "odd.cxi:/entry_1/data_1/data: frames of 64x0 pixels"
    ),
    "rank 0": Case(RUNS, _dataset(np.float32(1), "--data-path", "/scalar"), "odd.cxi:/scalar: rank 0"),
    "rank 1": Case(RUNS, _dataset(np.ones(N, np.float32)), "odd.cxi:/entry_1/data_1/data: rank 1"),
    "rank 5": Case(RUNS, _dataset(np.ones((N, 2, 2, 8, 8), np.float32)), "odd.cxi:/entry_1/data_1/data: rank 5"),
    "bool dtype": Case(RUNS, _dataset(np.ones((N, *SHAPE), bool)), "/entry_1/data_1/data: unsupported dtype bool"),
    "complex dtype": Case(RUNS, _dataset(_frames(np.complex64)), "/entry_1/data_1/data: unsupported dtype complex64"),
    "string dtype": Case(RUNS, _dataset(np.array([b"a", b"b"])), "/entry_1/data_1/data: unsupported dtype |S1"),
    "compound dtype": Case(
        RUNS, _dataset(np.zeros((N, *SHAPE), [("a", "f4"), ("b", "i2")])), "/entry_1/data_1/data: unsupported dtype"
    ),
    "data path is a group": Case(RUNS, _data_path_group, "run.cxi: no dataset /entry_1/data_1"),
    "data path missing": Case(
        RUNS, _data_path_missing, "run.cxi: no dataset /other; image-like datasets: /entry_1/data_1/data"
    ),
    "% data path matching nothing": Case(
        RUNS, _placeholder_matching_nothing, "run.cxi: no dataset matches /entry_1/%/frames"
    ),
    "CBF image of text": Case(RUNS, _image_of_text, "frame.cbf: not a readable image"),
    "two inputs of different frame shapes": Case(RUNS, _two_shapes, "small.cxi: frames of shape (32, 32) differ"),
    # links and virtual datasets
    "external link to a missing file": Case(
        ("info", *RUNS, "evaluate", "explain"),
        _external_link("elsewhere.h5:/data"),
        "linked.cxi:/entry_1/data_1/data: external link to elsewhere.h5:/data, whose file does not exist",
    ),
    "external link to a missing dataset": Case(
        RUNS,
        _external_link("run.cxi:/nothing", create_target=True),
        "linked.cxi:/entry_1/data_1/data: external link to run.cxi:/nothing, which does not exist",
    ),
    "external link given as --data-path": Case(
        RUNS,
        _external_link("elsewhere.h5:/data", "--data-path", f"/{DATA}"),
        "linked.cxi:/entry_1/data_1/data: external link to elsewhere.h5:/data, whose file does not exist",
    ),
    "virtual dataset, every source missing": Case(
        ("info", *RUNS, "evaluate", "explain"),
        _virtual(2),
        "virtual.cxi:/entry_1/data_1/data: virtual dataset source part0.cxi is missing",
    ),
    "virtual dataset, one source missing": Case(
        RUNS, _virtual(1), "virtual.cxi:/entry_1/data_1/data: virtual dataset source part0.cxi is missing"
    ),
    "virtual dataset, sources lack the data set": Case(
        RUNS,
        _virtual(0, "entry_1/frames"),
        "virtual.cxi:/entry_1/data_1/data: virtual dataset source part0.cxi has no dataset entry_1/frames",
    ),
    "virtual dataset, one source truncated": Case(
        RUNS,
        _virtual_truncated,
        ("virtual.cxi:/entry_1/data_1/data: virtual dataset source ", "part1.cxi: truncated HDF5 file"),
    ),
    "dangling soft link": Case(
        RUNS, _soft_link, "linked.cxi:/entry_1/data_1/data: soft link to /entry_1/frames, which does not exist"
    ),
    "external link to a truncated file": Case(
        RUNS,
        _external_link_to_truncated,
        (
            "linked.cxi:/entry_1/data_1/data: external link to cut.cxi:/entry_1/data_1/data, whose file is unusable",
            "cut.cxi: truncated HDF5 file",
        ),
    ),
    # .lst files
    "empty .lst": Case(RUNS, _lst_of(""), "frames.lst: the list names no files"),
    ".lst of comments only": Case(RUNS, _lst_of("# nothing\n\n"), "frames.lst: the list names no files"),
    ".lst naming a missing file": Case(RUNS, _lst_of("{run}\n", make_run=False), "run.cxi: no such file (listed in"),
    ".lst with //99 out of range": Case(RUNS, _lst_of("{run} //99\n"), "frames.lst: event '//99' is out of range"),
    ".lst with //-1": Case(RUNS, _lst_of("{run} //-1\n"), "frames.lst: event '//-1' is out of range"),
    ".lst with //x": Case(RUNS, _lst_of("{run} //x\n"), ("frames.lst: event '//x' of", "run.cxi is not in the file")),
    ".lst line without //": Case(RUNS, _lst_of("{run} 3\n"), "frames.lst line 1: expected 'file', 'file //N'"),
    ".lst of non-UTF-8 bytes": Case(
        RUNS, lambda tmp: [str(_lst(tmp, b"\x80\x81\xfe\xff\n"))], "\\x80\\x81\\xfe\\xff: no such file (listed in"
    ),
    ".lst of .lst": Case(RUNS, _lst_of("other.lst\n"), "frames.lst line 1: lists of lists are not supported"),
    # file names that are not UTF-8
    "non-UTF-8 file name": Case(("info", *RUNS), _non_utf8_name, "\\xffrun.cxi: truncated HDF5 file"),
    "non-UTF-8 file name in a .lst": Case(RUNS, _non_utf8_name_in_lst, "\\xffrun.cxi: truncated HDF5 file"),
    # masks
    "mask of the wrong shape": Case(
        RUNS, _mask_in_file(np.zeros((8, 8), np.uint16)), "run.cxi:/entry_1/data_1/mask: mask shape (8, 8)"
    ),
    "mask file of the wrong shape": Case(RUNS, _mask_file_shape, "mask.h5:/mask: mask shape (32, 32) does not match"),
    "mask holding NaN": Case(
        RUNS,
        _mask_in_file(np.where(np.eye(*SHAPE, dtype=bool), np.nan, 0.0)),
        "run.cxi:/entry_1/data_1/mask: a mask must hold integers",
    ),
    "mask dataset missing": Case(RUNS, _mask_dataset_missing, "run.cxi: no mask dataset /entry_1/data_1/nomask"),
    "mask file of text": Case(RUNS, _mask_file_of_text, "mask.edf: cannot read the mask"),
    "mask file missing": Case(RUNS, _mask_file_missing, "nomask.h5: no such mask file"),
    # geometry and configuration
    "geometry of random bytes": Case(
        RUNS, _geometry(bytes(range(256)) * 4), "detector.geom line 1: expected 'key = value'"
    ),
    "geometry without panels": Case(RUNS, _geometry("clen = 0.1\nres = 5814\n"), "detector.geom: no panels defined"),
    "geometry larger than the frames": Case(
        RUNS,
        _geometry(format_geometry(DetectorGeometry.simple((128, 128)))),
        "run.cxi: frames of shape (64, 64) are smaller than the geometry's slab (128, 128)",
    ),
    "geometry file missing": Case(RUNS, _geometry_missing, "nowhere.geom: cannot read geometry file"),
    "peakfinder8 config of garbage": Case(("peakfinder8",), _config_garbage, "om.yaml: not valid YAML"),
    # outputs that would replace an input
    "-o is the input file": Case(RUNS, _output_is_input, "run.cxi: is a file, not an output folder"),
    "-o inside the input file": Case(
        RUNS, _output_inside_input, "run.cxi/out: cannot create the output folder (Not a directory)"
    ),
    "input is out/hits.cxi": Case(
        RUNS, _input_is_an_output("hits.cxi"), "out/hits.cxi: refusing to write an output onto the"
    ),
    "input is out/hits.lst": Case(
        RUNS, _input_is_an_output("hits.lst"), "out/hits.lst: refusing to write an output onto the"
    ),
    "--json is the input": Case(
        ("evaluate", "explain"), _json_is_input, "run.cxi: refusing to write an output onto the input file"
    ),
    "--plots is the input": Case(("evaluate",), _folder_option_is_input("--plots"), "run.cxi: is a file, not an"),
    "--figures is the input": Case(("explain",), _folder_option_is_input("--figures"), "run.cxi: is a file, not an"),
    "calibrate -o is the --val file": Case(
        ("calibrate",), _calibrated_onto("val"), "run.cxi: exists; choose another name (checkpoints are never"
    ),
    "calibrate -o is the model": Case(
        ("calibrate",), _calibrated_onto("model"), "tiny.pt: exists; choose another name (checkpoints are never"
    ),
    "unreadable input (mode 000)": Case(("info", *RUNS), _unreadable_input, "run.cxi: cannot read (permission denied)"),
    "unwritable output folder": Case(
        RUNS, _unwritable_output, "out: cannot create the output folder (Permission denied)"
    ),
}

OPTIONS = {
    "reduce": ["--explain", "none", "--batch-size", "2"],
    "peakfinder8": ["--batch-size", "2"],
    "evaluate": ["--labels", "/truth/hit"],
    "calibrate": ["--labels", "/truth/hit"],
    "explain": ["--n-frames", "1", "--device", "cpu"],
}


def _fingerprint(path: Path) -> str:
    """sha256 of the file's bytes; its size and modification time where it may not be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except PermissionError:
        stat = path.stat()
        return f"unreadable, {stat.st_size} bytes, modified {stat.st_mtime_ns} ns"


def _snapshot(folder: Path) -> dict[str, str]:
    """The fingerprint of every file under ``folder``, by relative path."""
    return {os.fsdecode(p.relative_to(folder)): _fingerprint(p) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("case", "command"), [(case, command) for case, spec in CASES.items() for command in spec.commands]
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, model_path: Path, case: str, command: str) -> None:
    spec = CASES[case]
    args = spec.build(tmp_path)
    before = _snapshot(tmp_path)
    extra = list(OPTIONS.get(command, []))
    if command in RUNS and "-o" not in args:
        extra += ["-o", str(tmp_path / "out")]
    if command in ("reduce", "evaluate", "explain"):
        extra += ["--model", str(model_path)]
    message = one_line_error(run_cli([command, *args, *extra]))
    for part in (spec.expected,) if isinstance(spec.expected, str) else spec.expected:
        assert part in message
    assert _snapshot(tmp_path) == before  # inputs byte-identical, nothing written (not even *.inprogress)


def test_links_and_virtual_datasets_that_resolve_are_read(tmp_path: Path) -> None:
    """The link and virtual-dataset checks refuse only what cannot be read: whole ones read as their sources."""
    _virtual(0)(tmp_path)
    _external_link(f"run.cxi:/{DATA}", create_target=True)(tmp_path)
    frames = _frames()
    for name, expected in (("virtual.cxi", np.concatenate([frames, frames])), ("linked.cxi", frames)):
        (batch,) = open_frames([tmp_path / name]).batches(chunk_size=2 * N)
        np.testing.assert_array_equal(batch.data, expected)
