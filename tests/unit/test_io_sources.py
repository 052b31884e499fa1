"""Frame readers on tiny files the tests create: CXI, EuXFEL, generic HDF5, % paths, fabio, .lst."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest

from sfx_cnnhit.detector import DetectorGeometry
from sfx_cnnhit.io.cxi import CXIWriter, read_peak_lists
from sfx_cnnhit.io.sources import FrameSource, open_frames
from sfx_cnnhit.types import FrameBatch, PeakList

SHAPE = (12, 16)


def _stack(n: int, seed: int = 0, shape: tuple[int, ...] = SHAPE, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 1000, (n, *shape)).astype(dtype)


def _all(source: FrameSource, **kw: int) -> tuple[list[FrameBatch], np.ndarray, list[str]]:
    batches = list(source.batches(**kw))
    data = np.concatenate([b.data for b in batches])
    ids = [i for b in batches for i in b.event_ids]
    return batches, data, ids


COMPRESSIONS = {
    "gzip": {"compression": "gzip", "compression_opts": 4},
    "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
    "zstd": dict(hdf5plugin.Zstd()),
    "blosc": dict(hdf5plugin.Blosc(cname="lz4")),
}


@pytest.mark.parametrize("name", list(COMPRESSIONS))
def test_cheetah_cxi_stack_with_compression(tmp_path: Path, name: str) -> None:
    frames = _stack(10, dtype=np.uint16)
    path = tmp_path / f"{name}.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=frames, chunks=(1, *SHAPE), **COMPRESSIONS[name])
    source = open_frames([path])
    assert (source.n_frames, source.frame_shape, source.dtype) == (10, SHAPE, np.uint16)
    batches, data, ids = _all(source, chunk_size=4)
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(data, frames.astype(np.float32))
    assert ids == [f"{path} //{i}" for i in range(10)]
    assert all(b.data.dtype == np.float32 and b.mask.dtype == bool and b.mask.all() for b in batches)
    assert source.describe()[0]["compression"]


def test_batches_select_range_and_never_span_files(tmp_path: Path) -> None:
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"run{k}.cxi")
        with h5py.File(paths[-1], "w") as f:
            f["/entry_1/data_1/data"] = _stack(5, seed=k)
    source = open_frames(paths)
    batches, data, _ = _all(source, chunk_size=4, start=1, stop=9, stride=2)
    assert [b.global_index.tolist() for b in batches] == [[1, 3], [5, 7]]
    assert [b.source_index.tolist() for b in batches] == [[1, 3], [0, 2]]
    assert [b.source_file for b in batches] == [str(paths[0]), str(paths[1])]
    np.testing.assert_array_equal(data[2], _stack(5, seed=1)[0])


def test_modular_4d_cheetah_layout(tmp_path: Path) -> None:
    frames = _stack(3, shape=(4, 6, 16))  # (N, nasics, asic_ny, asic_nx)
    path = tmp_path / "modular.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=frames, compression="gzip")
    source = open_frames([path])
    assert source.frame_shape == (24, 16)
    assert source.layout_info == {"asic_nx": 16, "asic_ny": 6, "nasics_x": 1, "nasics_y": 4}
    _, data, _ = _all(source, chunk_size=2)
    np.testing.assert_array_equal(data, frames.reshape(3, 24, 16))
    np.testing.assert_array_equal(data[1, 6:12], frames[1, 1])  # module 1 is rows 6..11


def test_euxfel_cxi_ids_mask_and_energy(tmp_path: Path) -> None:
    frames = _stack(4, shape=(2, 8, 16))
    mask = np.zeros((4, 2, 8, 16), np.uint32)
    mask[2, 1, 0, 0] = 0x10  # one bad pixel on frame 2, module 1
    path = tmp_path / "euxfel.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/instrument_1/detector_1/data", data=frames)
        f.create_dataset("/entry_1/instrument_1/detector_1/mask", data=mask)
        f["/entry_1/experiment_identifier"] = np.array([f"1000:{p}".encode() for p in range(4)])
        f["/entry_1/instrument_1/source_1/energy"] = 9300 * 1.602176634e-19  # J, one value for all
    source = open_frames([path])
    batches, data, ids = _all(source, chunk_size=3)
    assert ids == ["1000:0", "1000:1", "1000:2", "1000:3"]
    mask_all = np.concatenate([b.mask for b in batches])
    assert not mask_all[2, 8, 0] and mask_all.sum() == mask_all.size - 1
    assert data[2, 8, 0] == 0.0  # bad pixels are zeroed
    np.testing.assert_allclose(batches[0].metadata["photon_energy_ev"], 9300.0)
    assert source.describe()[0]["mask"]["per_frame"] is True


def test_generic_hdf5_paths_and_single_frames(tmp_path: Path) -> None:
    path = tmp_path / "generic.h5"
    frames = _stack(3, dtype=np.int16)
    with h5py.File(path, "w") as f:
        f["/instrument/images"] = frames
        f["/calib/pedestal"] = np.zeros((2, 2))  # too small to look like an image
    source = open_frames([path])  # the only image-like dataset is found
    assert source.describe()[0]["data_path"] == "/instrument/images"
    single = tmp_path / "single.h5"
    with h5py.File(single, "w") as f:
        f["/a/frame"] = frames[1]
        f["/b/other"] = frames[2]
    source = open_frames([single], data_path="/a/frame")
    _, data, ids = _all(source)
    assert data.shape == (1, *SHAPE) and ids == [f"{single} //0"]
    np.testing.assert_array_equal(data[0], frames[1])


def test_crystfel_placeholder_paths_and_lst_names(tmp_path: Path) -> None:
    path = tmp_path / "events.h5"
    with h5py.File(path, "w") as f:
        for name in ("ev_b", "ev_a", "ev_c"):
            f[f"/data/{name}/data"] = np.full(SHAPE, ord(name[-1]), np.float32)
        f["/data/notes"] = "not a group"
    source = open_frames([path], data_path="/data/%/data")
    _, data, ids = _all(source, chunk_size=2)
    assert ids == [f"{path} ev_a//", f"{path} ev_b//", f"{path} ev_c//"]
    assert data[:, 0, 0].tolist() == [ord("a"), ord("b"), ord("c")]
    lst = tmp_path / "sel.lst"
    lst.write_text(f"{path} ev_c//\n{path} ev_a//\n")
    _, data, ids = _all(open_frames([lst], data_path="/data/%/data"))
    assert data[:, 0, 0].tolist() == [ord("c"), ord("a")]


def test_lst_event_notation_relative_paths_and_plain_lines(tmp_path: Path) -> None:
    frames = _stack(6)
    with h5py.File(tmp_path / "run.cxi", "w") as f:
        f["/entry_1/data_1/data"] = frames
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["/data/data"] = frames[0]
    lst = tmp_path / "files.lst"
    lst.write_text("run.cxi //4\nrun.cxi //1\nrun.cxi //1\n\none.h5\n")  # relative to the list's folder
    source = open_frames([lst])
    assert source.n_frames == 4
    batches, data, ids = _all(source)
    np.testing.assert_array_equal(data[:3], frames[[4, 1, 1]])
    assert batches[0].source_index.tolist() == [4, 1, 1]
    assert ids[:2] == [f"{tmp_path / 'run.cxi'} //4", f"{tmp_path / 'run.cxi'} //1"]
    assert source.describe()[0]["n_frames_in_file"] == 6


def test_metadata_from_file_and_geometry(tmp_path: Path) -> None:
    path = tmp_path / "lcls.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = _stack(3)
        f["/LCLS/photon_energy_eV"] = [9000.0, 9001.0, 9002.0]
        f["/LCLS/detector_1/EncoderValue"] = [100.0, 101.0, 102.0]  # mm
    b = next(open_frames([path]).batches())
    np.testing.assert_array_equal(b.metadata["photon_energy_ev"], [9000.0, 9001.0, 9002.0])
    np.testing.assert_allclose(b.metadata["clen_m"], [0.100, 0.101, 0.102])
    geom = DetectorGeometry.simple(SHAPE, photon_energy_ev=12000.0, clen_m=0.3)
    b = next(open_frames([path], geometry=geom).batches())  # the geometry wins, as in CrystFEL
    np.testing.assert_array_equal(b.metadata["photon_energy_ev"], 12000.0)
    np.testing.assert_array_equal(b.metadata["clen_m"], 0.3)


def _write_fabio(tmp_path: Path) -> dict[str, np.ndarray]:
    base = _stack(1, shape=SHAPE, dtype=np.int32)[0]
    cbf = base.copy()
    cbf[0, :3] = [-1, -2, 1048576]  # Pilatus gaps and an overloaded pixel at the count cut-off
    img = fabio.cbfimage.CbfImage(data=cbf)
    img.header["_array_data.header_convention"] = "PILATUS_1.2"
    img.header["_array_data.header_contents"] = (
        "# Detector: PILATUS 1M\n# Wavelength 1.0332 A\n# Detector_distance 0.2000 m\n# Count_cutoff 1048576 counts\n"
    )
    img.write(str(tmp_path / "a.cbf"))
    smv = base.astype(np.uint16)
    smv[1, 1] = 65535
    fabio.adscimage.AdscImage(data=smv, header={"DISTANCE": "150.0", "WAVELENGTH": "0.9793", "BEAMLINE": "fake"}).write(
        str(tmp_path / "a.img")
    )
    edf = base.astype(np.float32) / 7
    edf[2, 2] = np.nan
    fabio.edfimage.EdfImage(data=edf).write(str(tmp_path / "a.edf"))
    tif = base.astype(np.uint16)
    fabio.tifimage.TifImage(data=tif).write(str(tmp_path / "a.tif"))
    return {"a.cbf": cbf, "a.img": smv, "a.edf": edf, "a.tif": tif}


def test_fabio_formats_with_computed_bad_pixels_and_headers(tmp_path: Path) -> None:
    written = _write_fabio(tmp_path)
    for name, raw in written.items():
        b = next(open_frames([tmp_path / name]).batches())
        expected_good = np.isfinite(raw)
        if name == "a.cbf":
            expected_good[0, :3] = False  # -1, -2 below the floor; the cut-off value saturated
            np.testing.assert_allclose(b.metadata["photon_energy_ev"], 12000.0, rtol=1e-4)
            np.testing.assert_allclose(b.metadata["clen_m"], 0.2)
        if name == "a.img":
            expected_good[1, 1] = False  # uint16 maximum
            np.testing.assert_allclose(b.metadata["clen_m"], 0.150)
            np.testing.assert_allclose(b.metadata["photon_energy_ev"], 12660.5, rtol=1e-4)
        np.testing.assert_array_equal(b.mask[0], expected_good, err_msg=name)
        np.testing.assert_array_equal(b.data[0], np.where(expected_good, np.nan_to_num(raw), 0).astype(np.float32))
    # several image files: one source, one frame each
    source = open_frames([tmp_path / "a.cbf", tmp_path / "a.tif"])
    assert source.n_frames == 2 and [len(b) for b in source.batches()] == [1, 1]


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = _stack(4)
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    source = open_frames([path])
    list(source.batches(chunk_size=3))
    source.describe()
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_round_trip_reduced_cxi(tmp_path: Path) -> None:
    raw = _stack(9, dtype=np.int32)
    raw[:, 0, 0] = -1  # a gap pixel: masked and zeroed on the way in
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = raw
        f["/entry_1/experiment_identifier"] = [f"run:{i}" for i in range(9)]
        f["/LCLS/photon_energy_eV"] = np.full(9, 9500.0)
    source = open_frames([path])
    rng = np.random.default_rng(1)
    out = tmp_path / "hits.cxi"
    kept_frames, kept_ids, kept_peaks = [], [], []
    with CXIWriter(out, frame_shape=source.frame_shape, max_peaks=16, protect=[path]) as w:
        for b in source.batches(chunk_size=4):
            keep = np.arange(len(b)) % 2 == 0
            peaks = [
                PeakList(
                    **{
                        k: rng.uniform(0, 10, n)
                        for k in ("fs", "ss", "intensity", "num_pixels", "max_pixel_intensity", "snr")
                    }
                )
                for n in rng.integers(0, 16, keep.sum())
            ]
            w.append(
                b.data[keep],
                event_ids=[e for e, k in zip(b.event_ids, keep, strict=True) if k],
                source_files=b.source_file,
                source_indices=b.source_index[keep],
                peaks=peaks,
                metadata={k: v[keep] for k, v in b.metadata.items()},
            )
            w.commit({"next": int(b.global_index[-1]) + 1})
            kept_frames.append(b.data[keep])
            kept_ids += [e for e, k in zip(b.event_ids, keep, strict=True) if k]
            kept_peaks += peaks
    back = open_frames([out])
    _, data, ids = _all(back, chunk_size=2)
    np.testing.assert_array_equal(data, np.concatenate(kept_frames))
    assert ids == kept_ids
    assert back.dtype == np.float32 and back.n_frames == len(kept_ids)
    for got, want in zip(read_peak_lists(out), kept_peaks, strict=True):
        for field in ("fs", "ss", "intensity", "num_pixels", "max_pixel_intensity", "snr"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    b = next(back.batches())
    np.testing.assert_array_equal(b.metadata["photon_energy_ev"], 9500.0)
    with h5py.File(out, "r") as f:
        assert [s.decode() for s in f["/entry_1/result_1/source_file"][()]] == [str(path)] * len(kept_ids)
        assert f["/entry_1/result_1/source_index"][()].tolist() == [0, 2, 4, 6, 8]


def test_staged_conversion_over_runs_and_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfx_cnnhit.io.sources import reader

    frames = _stack(8, dtype=np.uint16)
    with h5py.File(tmp_path / "run.cxi", "w") as f:
        f["/entry_1/data_1/data"] = frames
    (tmp_path / "sel.lst").write_text("".join(f"run.cxi //{i}\n" for i in (5, 1, 2, 3, 4, 0, 7)))
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    monkeypatch.setattr(reader, "STAGING_BYTES", 2 * frame_bytes)  # two frames per staged read
    _, data, _ = _all(open_frames([tmp_path / "sel.lst"]), chunk_size=6)
    np.testing.assert_array_equal(data, frames[[5, 1, 2, 3, 4, 0, 7]].astype(np.float32))
