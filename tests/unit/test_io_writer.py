"""The reduced-CXI writer: CrystFEL's documented reader layout, atomic writes, resume, companions."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.errors import OutputError
from sfx_cnnhit.io.atomic import register_input
from sfx_cnnhit.io.crystfel_geom import parse_geometry
from sfx_cnnhit.io.cxi import CXIWriter, write_lst
from sfx_cnnhit.types import PeakList

SHAPE = (24, 32)


def _peaks(n: int, seed: int) -> PeakList:
    rng = np.random.default_rng(seed)
    return PeakList(
        fs=rng.uniform(0, SHAPE[1] - 1, n),
        ss=rng.uniform(0, SHAPE[0] - 1, n),
        intensity=rng.uniform(10, 1000, n),
        num_pixels=rng.integers(2, 9, n),
        max_pixel_intensity=rng.uniform(5, 100, n),
        snr=rng.uniform(5, 50, n),
    )


def _append(writer: CXIWriter, start: int, n: int, **kw: object) -> None:
    data = np.arange(start, start + n, dtype=np.float32)[:, None, None] * np.ones((1, *SHAPE), np.float32)
    writer.append(
        data,
        event_ids=[f"run.h5 //{i}" for i in range(start, start + n)],
        source_files="run.h5",
        source_indices=np.arange(start, start + n),
        peaks=[_peaks(i % 5, i) for i in range(start, start + n)],
        **kw,  # type: ignore[arg-type]
    )


def test_layout_matches_crystfel_cxi_reader(tmp_path: Path) -> None:
    out = tmp_path / "hits.cxi"
    with CXIWriter(out, frame_shape=SHAPE, max_peaks=8) as w:
        _append(w, 0, 7, metadata={"photon_energy_ev": 9500.0, "clen_m": np.full(7, 0.125)})
    with h5py.File(out, "r") as f:
        n_peaks = f["/entry_1/result_1/nPeaks"]
        assert n_peaks.ndim == 1 and n_peaks.dtype.kind == "i" and n_peaks.shape == (7,)
        assert list(n_peaks[()]) == [i % 5 for i in range(7)]
        for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakNPixels", "peakMaximumValue", "peakSNR"):
            ds = f[f"/entry_1/result_1/{name}"]
            assert ds.ndim == 2 and ds.dtype == np.float32 and ds.shape[0] == 7
            assert ds.shape[1] >= n_peaks[()].max()
        # CrystFEL reads row `ev` of the first nPeaks columns; the rest is zero padding.
        row = 3
        expected = _peaks(3, 3)
        np.testing.assert_array_equal(f["/entry_1/result_1/peakXPosRaw"][row, :3], expected.fs)
        np.testing.assert_array_equal(f["/entry_1/result_1/peakTotalIntensity"][row, :3], expected.intensity)
        assert not f["/entry_1/result_1/peakXPosRaw"][row, 3:].any()
        data = f["/entry_1/data_1/data"]
        assert data.shape == (7, *SHAPE) and data.dtype == np.float32 and data.chunks == (1, *SHAPE)
        assert data.compression == "gzip"
        assert [s.decode() for s in f["/entry_1/experiment_identifier"][()]][:2] == ["run.h5 //0", "run.h5 //1"]
        assert list(f["/entry_1/result_1/source_index"][()]) == list(range(7))
        np.testing.assert_array_equal(f["/LCLS/photon_energy_eV"][()], 9500.0)
        np.testing.assert_allclose(f["/LCLS/detector_1/EncoderValue"][()], 125.0)  # mm


def test_geometry_for_output_and_for_extra_dataset(tmp_path: Path) -> None:
    geom = DetectorGeometry.simple(SHAPE, asic_shape=(12, 16), photon_energy_ev=12000.0, clen_m=0.2)
    geom = replace(geom, mask_path="/om/badmap", mask_good=1, mask_bad=0)  # the input's OM-style mask
    out = tmp_path / "hits.cxi"
    mask = np.ones(SHAPE, bool)
    mask[0, :5] = False
    with CXIWriter(
        out, frame_shape=SHAPE, geometry=geom, mask=mask, extra_datasets={"gradcam": (SHAPE, np.float32)}
    ) as w:
        _append(w, 0, 2, extras={"gradcam": np.ones((2, *SHAPE))})
        w.write_geometry(tmp_path / "hits.geom")
        w.write_geometry(tmp_path / "gradcam.geom", data_path="/entry_1/result_1/gradcam")
    text = (tmp_path / "hits.geom").read_text()
    for line in (
        "data = /entry_1/data_1/data",
        "dim0 = %",
        "dim1 = ss",
        "dim2 = fs",
        "peak_list = /entry_1/result_1",
        "peak_list_type = cxi",
        "photon_energy = 12000",
        "clen = 0.2 m",
        "mask0_data = /entry_1/data_1/mask",
        "mask0_goodbits = 0x0",  # the stored mask is in Cheetah's convention, whatever the input's was
        "mask0_badbits = 0xffff",
    ):
        assert line in text.splitlines(), line
    heat = parse_geometry((tmp_path / "gradcam.geom").read_text())
    assert heat.data_path == "/entry_1/result_1/gradcam"
    assert [p.slab_slices() for p in heat.panels] == [p.slab_slices() for p in geom.panels]
    with h5py.File(out, "r") as f:
        stored = f["/entry_1/data_1/mask"][()]
        assert stored.dtype == np.uint16 and stored[0, 0] == 1 and stored[5, 5] == 0  # Cheetah: 0 = good
        assert f["/entry_1/result_1/gradcam"].shape == (2, *SHAPE)
    with pytest.raises(OutputError, match="not a dataset"):
        CXIWriter(tmp_path / "b.cxi", frame_shape=SHAPE, geometry=geom).write_geometry(
            tmp_path / "b.geom", data_path="nothing"
        )


def test_no_final_file_until_finalize_and_kept_inprogress_on_error(tmp_path: Path) -> None:
    out = tmp_path / "hits.cxi"
    with pytest.raises(RuntimeError), CXIWriter(out, frame_shape=SHAPE) as w:
        _append(w, 0, 3)
        assert not out.exists() and (tmp_path / "hits.cxi.inprogress").exists()
        raise RuntimeError("crash")
    assert not out.exists()
    assert (tmp_path / "hits.cxi.inprogress").exists()


def test_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    src = tmp_path / "run.cxi"
    src.write_bytes(b"input")
    with pytest.raises(OutputError, match="input"):
        CXIWriter(src, frame_shape=SHAPE, protect=[src])
    other = tmp_path / "other.h5"
    other.write_bytes(b"input")
    register_input(other)  # what open_frames does with every file it reads
    with pytest.raises(OutputError, match="input"):
        CXIWriter(other, frame_shape=SHAPE)
    with pytest.raises(OutputError, match="input"):
        write_lst(other, "x.cxi", 2)
    assert src.read_bytes() == b"input" and other.read_bytes() == b"input"


def test_resume_truncates_to_last_commit(tmp_path: Path) -> None:
    out = tmp_path / "hits.cxi"
    extras = {"score": ((), np.float32)}
    w = CXIWriter(out, frame_shape=SHAPE, extra_datasets=extras)
    _append(
        w,
        0,
        4,
        extras={"score": np.arange(4)},
        tables={"/truth/refl": {"frame": [0, 1], "h": [1, 2]}},
        metadata={"photon_energy_ev": 9000.0},
    )
    w.commit({"next_event": 4})
    _append(
        w,
        4,
        3,
        extras={"score": np.arange(3)},
        tables={"/truth/refl": {"frame": [5], "h": [9]}},
        metadata={"custom": 1.0},
    )
    w.close()  # crash after an uncommitted append

    r = CXIWriter(out, frame_shape=SHAPE, extra_datasets=extras, resume=True)
    assert r.state == {"next_event": 4} and r.n_frames == 4
    assert [p.name for p in sorted(r.tmp_path.iterdir())] == ["segment_000000.h5", "state.json"]
    _append(r, 4, 2, extras={"score": [7, 8]}, tables={"/truth/refl": {"frame": [4], "h": [3]}})
    r.finalize()
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["/entry_1/data_1/data"][:, 0, 0], np.arange(6))
        np.testing.assert_array_equal(f["/truth/refl/frame"][()], [0, 1, 4])
        np.testing.assert_array_equal(f["/entry_1/result_1/score"][()], [0, 1, 2, 3, 7, 8])
        energy = f["/LCLS/photon_energy_eV"][()]
        assert list(energy[:4]) == [9000.0] * 4 and np.isnan(energy[4:]).all()
        assert "/entry_1/metadata/custom" not in f  # written only by the uncommitted append
    assert not r.tmp_path.exists()


def test_a_kill_while_the_folder_is_made_or_removed_leaves_nothing_that_blocks_a_resume(tmp_path: Path) -> None:
    """The in-progress folder is made under ``.new`` and renamed into place, and renamed to ``.old``
    before it is deleted: a run killed in between leaves only those, which the next run discards."""
    out = tmp_path / "hits.cxi"
    staging, trash = tmp_path / "hits.cxi.inprogress.new", tmp_path / "hits.cxi.inprogress.old"
    staging.mkdir()  # killed before its state file was written
    (trash / "sub").mkdir(parents=True)  # killed while the finished run's folder was being deleted
    (trash / "segment_000000.h5").write_bytes(b"partly deleted")
    w = CXIWriter(out, frame_shape=SHAPE, resume=True)
    assert w.state == {} and not staging.exists() and not trash.exists()
    _append(w, 0, 2)
    w.finalize()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hits.cxi"]


def test_resume_rejects_a_different_layout(tmp_path: Path) -> None:
    out = tmp_path / "hits.cxi"
    w = CXIWriter(out, frame_shape=SHAPE)
    w.commit({})
    w.close()
    with pytest.raises(OutputError, match="cannot resume"):
        CXIWriter(out, frame_shape=(SHAPE[0], SHAPE[1] + 1), resume=True)
    with pytest.raises(OutputError, match="extra datasets"):
        CXIWriter(out, frame_shape=SHAPE, resume=True, extra_datasets={"x": ((), np.float32)})


def test_truncates_long_peak_lists_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "hits.cxi"
    with CXIWriter(out, frame_shape=SHAPE, max_peaks=3) as w, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w.append(np.zeros((1, *SHAPE)), event_ids=["a"], source_files=["s"], source_indices=[0], peaks=[_peaks(5, 0)])
    assert any("truncated" in str(c.message) for c in caught)
    with h5py.File(out, "r") as f:
        assert f["/entry_1/result_1/nPeaks"][0] == 3
        np.testing.assert_array_equal(f["/entry_1/result_1/peakXPosRaw"][0], _peaks(5, 0).fs[:3])


@pytest.mark.parametrize("compression", ["bitshuffle-lz4", "zstd", "none"])
def test_optional_compressions(tmp_path: Path, compression: str) -> None:
    out = tmp_path / "hits.cxi"
    with CXIWriter(out, frame_shape=SHAPE, compression=compression) as w:
        _append(w, 0, 2)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["/entry_1/data_1/data"][1], np.ones(SHAPE))


def test_write_lst_uses_crystfel_event_notation(tmp_path: Path) -> None:
    path = write_lst(tmp_path / "events.lst", "hits.cxi", 3)
    assert path.read_text().splitlines() == ["hits.cxi //0", "hits.cxi //1", "hits.cxi //2"]
    assert not (tmp_path / "events.lst.inprogress").exists()


def test_bad_mask_shape_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="mask shape"):
        CXIWriter(tmp_path / "hits.cxi", frame_shape=SHAPE, mask=np.ones((3, 3), bool))
    assert list(tmp_path.iterdir()) == []
