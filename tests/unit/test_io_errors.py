"""Bad inputs: one-line errors naming the file, InputError in the library, exit code 2 from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from sfx_cnnhit.errors import InputError
from sfx_cnnhit.io.sources import open_frames
from tests.cli import one_line_error, run_cli

SHAPE = (16, 16)


def _h5(path: Path, **datasets: object) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name.replace("__", "/")] = value
    return path


def _missing(tmp: Path) -> tuple[list[str], str]:
    return [str(tmp / "nope.cxi")], "no such file"


def _not_hdf5(tmp: Path) -> tuple[list[str], str]:
    (tmp / "text.h5").write_text("hello")
    return [str(tmp / "text.h5")], "not an HDF5 file"


def _truncated(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "cut.cxi", entry_1__data_1__data=np.ones((20, *SHAPE), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [str(path)], "truncated HDF5 file"


def _unknown_path(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.h5", frames__one=np.ones((2, *SHAPE)), frames__two=np.ones((3, *SHAPE)))
    return [str(path), "--data-path", "/entry/data"], "no dataset /entry/data; image-like datasets: /frames/one"


def _ambiguous(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.h5", frames__one=np.ones((2, *SHAPE)), frames__two=np.ones((3, *SHAPE)))
    return [str(path)], "several image-like datasets, give --data-path; image-like datasets: /frames/one"


def _wrong_rank(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.h5", data__data=np.ones(10))
    return [str(path)], "rank 1"


def _wrong_rank_5d(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.cxi", entry_1__data_1__data=np.ones((2, 2, 2, *SHAPE), np.float32))
    return [str(path)], "rank 5"


def _complex(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.cxi", entry_1__data_1__data=np.ones((2, *SHAPE), np.complex64))
    return [str(path)], "unsupported dtype complex64"


def _strings(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.h5", images=np.array([b"abc", b"def"]))
    return [str(path), "--data-path", "/images"], "unsupported dtype"


def _mask_shape(tmp: Path) -> tuple[list[str], str]:
    path = _h5(
        tmp / "a.cxi",
        entry_1__data_1__data=np.ones((2, *SHAPE), np.float32),
        entry_1__data_1__mask=np.zeros((8, 8), np.uint16),
    )
    return [str(path)], "mask shape (8, 8) does not match the frames"


def _empty(tmp: Path) -> tuple[list[str], str]:
    path = _h5(tmp / "a.cxi", entry_1__data_1__data=np.ones((0, *SHAPE), np.float32))
    return [str(path)], "empty stack (0 frames)"


def _bad_lst(tmp: Path) -> tuple[list[str], str]:
    _h5(tmp / "a.cxi", entry_1__data_1__data=np.ones((2, *SHAPE), np.float32))
    (tmp / "x.lst").write_text(f"{tmp / 'a.cxi'} //5\n")
    return [str(tmp / "x.lst")], "out of range"


CASES: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    "missing file": _missing,
    "not hdf5": _not_hdf5,
    "truncated": _truncated,
    "unknown dataset path": _unknown_path,
    "ambiguous dataset": _ambiguous,
    "wrong rank": _wrong_rank,
    "wrong rank 5-D": _wrong_rank_5d,
    "complex dtype": _complex,
    "string dtype": _strings,
    "mask shape mismatch": _mask_shape,
    "empty stack": _empty,
    "event out of range": _bad_lst,
}


def _library_call(argv: list[str]) -> None:
    kw = {}
    if "--data-path" in argv:
        kw["data_path"] = argv[argv.index("--data-path") + 1]
    open_frames([argv[0]], **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_library_raises_input_error(tmp_path: Path, case: str) -> None:
    argv, message = CASES[case](tmp_path)
    with pytest.raises(InputError) as err:
        _library_call(argv)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith(argv[0])  # names the file first


@pytest.mark.parametrize("case", list(CASES))
def test_cli_info_one_line_and_nonzero_exit(tmp_path: Path, case: str) -> None:
    argv, message = CASES[case](tmp_path)
    assert message in one_line_error(run_cli(["info", *argv]))


def test_corrupt_chunk_fails_while_streaming(tmp_path: Path) -> None:
    path = tmp_path / "a.cxi"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "/entry_1/data_1/data",
            data=rng.random((4, 64, 64), dtype=np.float32),
            chunks=(1, 64, 64),
            compression="gzip",
        )
        offset, size = ds.id.get_chunk_info(2).byte_offset, ds.id.get_chunk_info(2).size
    raw = bytearray(path.read_bytes())
    raw[offset : offset + size] = b"\x00" * size
    path.write_bytes(bytes(raw))
    source = open_frames([path])  # the metadata is intact
    with pytest.raises(InputError, match=r"a\.cxi: cannot (read|decompress) /entry_1/data_1/data frames 2\.\.3"):
        list(source.batches(chunk_size=2))


def test_missing_compression_filter_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bshuf.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=np.ones((2, *SHAPE), np.float32), **hdf5plugin.Bitshuffle())
    # a Python without hdf5plugin: block the import in a fresh interpreter
    script = (
        "import sys; sys.modules['hdf5plugin'] = None\n"
        "from sfx_cnnhit.errors import InputError\n"
        "from sfx_cnnhit.io.sources import open_frames\n"
        "try:\n"
        f"    open_frames([{str(path)!r}])\n"
        "except InputError:\n"
        "    print('library: InputError')\n"
        "from sfx_cnnhit.cli.app import main\n"
        f"sys.argv = ['sfx-cnnhit', 'info', {str(path)!r}]\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout.strip() == "library: InputError"
    line = done.stderr.strip()
    assert "\n" not in line
    assert str(path) in line and "32008 (bitshuffle)" in line and "pip install hdf5plugin" in line
