"""The comparison library (`sfx_cnnhit.comparisons`) and the `compare` command."""

from __future__ import annotations

import csv
import json
from typing import ClassVar

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.comparisons import (
    MethodChoice,
    build_methods,
    cohen_kappa,
    dials_settings,
    hit_metrics,
    load_labels,
    run_comparison,
    write_comparison,
)
from sfx_cnnhit.comparisons import methods as methods_module
from sfx_cnnhit.comparisons.methods import Method
from sfx_cnnhit.errors import ConfigError, InputError, OutputError
from sfx_cnnhit.finders.base import HitRule
from sfx_cnnhit.finders.config import Peakfinder8Params
from sfx_cnnhit.finders.dials import dials_available
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.sources import open_frames
from sfx_cnnhit.types import Classification, PeakList
from tests.synthetic import make_frame

SHAPE = (64, 96)
# 16 well separated bright spots (fs, ss, photons), none near the beam at the frame centre.
GRID = np.array([(fs, ss, 2500.0) for ss in (10, 24, 40, 54) for fs in (10, 28, 66, 84)])
# Per frame: number of spots drawn and the five-class label (0 blank, 1 no_crystal, 2 weak, 3 good).
# Frame 6 is a "weak" hit with 2 spots (every finder misses it); frame 11 is labelled no_crystal but
# has 16 spots (every finder calls it a hit).
N_SPOTS = [16, 16, 16, 16, 16, 16, 2, 0, 0, 0, 0, 16]
LABELS = [3, 3, 3, 3, 3, 3, 2, 0, 1, 0, 1, 1]
FINDER_HITS = [True] * 6 + [False] * 5 + [True]
FAKE_HITS = [True, True, True, False, False, False, True, True, False, False, False, False]


def _frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.stack([make_frame(rng, SHAPE, spots=GRID[:n]).data for n in N_SPOTS])


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return _frames()


@pytest.fixture()
def run_file(tmp_path, frames):
    """A CXI file with the frames, /truth/hit and /truth/label (no class attributes)."""
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = frames
        f["/truth/hit"] = np.array(LABELS) >= 2
        f["/truth/label"] = np.array(LABELS, np.int64)
    return path


class FakeFinder:
    """Decides from a table of frame fingerprints (known answers); heat map = the normalised frame."""

    name: ClassVar[str] = "fake"

    def __init__(self, frames: np.ndarray, hits: list[bool]) -> None:
        self.table = {f.tobytes(): h for f, h in zip(frames, hits, strict=True)}

    def find_peaks(self, data):
        return PeakList.empty()

    def classify(self, frames, masks=None):
        hits = np.array([self.table[np.asarray(f, np.float32).tobytes()] for f in frames])
        return Classification(scores=hits.astype(float), hits=hits, peaks=[PeakList.empty()] * len(frames))

    def heatmaps(self, frames, masks):
        peak = frames.reshape(len(frames), -1).max(axis=1)
        return (frames / peak[:, None, None]).astype(np.float32), peak.astype(np.float32)


def _peakfinder8() -> Peakfinder8Finder:
    return Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params(adc_threshold=100.0), HitRule(min_peaks=8))


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------------
# Figures


def test_hit_metrics_and_kappa_known_answers():
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    m = hit_metrics(truth, pred)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 5)
    assert m["confusion_matrix"] == [[3, 1], [1, 5]]
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == m["hit_recall"] == pytest.approx(0.75)
    assert m["miss_rejection"] == pytest.approx(5 / 6)
    assert np.allclose(m["table5"], [[75.0, 25.0], [100 / 6, 500 / 6]])
    # p_o = 0.8, p_e = 0.4 * 0.4 + 0.6 * 0.6 = 0.52
    assert m["kappa"] == pytest.approx((0.8 - 0.52) / 0.48)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert np.isnan(cohen_kappa([1, 1], [1, 1]))  # both constant: undefined


# ---------------------------------------------------------------------------------------------------
# Labels


def test_dataset_labels_five_class_and_stated_classes(tmp_path):
    path = tmp_path / "l.h5"
    with h5py.File(path, "w") as f:
        f["/plain/label"] = np.array([0, 1, 2, 3, 4])
        f["/flags/hit"] = np.array([0, 1, 1, 0, 1])
        g = f.create_group("stated")
        g.attrs["hit_min_label"] = 3
        g["label"] = np.array([0, 1, 2, 3, 4])
        named = f.create_group("named")
        named.attrs["class_names"] = ["miss", "hit", "maybe"]
        named["label"] = np.array([2, 0, 1])
    from sfx_cnnhit.io.labels import hits_from_dataset

    with h5py.File(path, "r") as f:
        assert hits_from_dataset(f["/plain/label"])[0].tolist() == [0, 0, 1, 1, 1]
        assert hits_from_dataset(f["/flags/hit"])[0].tolist() == [0, 1, 1, 0, 1]
        assert hits_from_dataset(f["/stated/label"])[0].tolist() == [0, 0, 0, 1, 1]
        hits, text, how = hits_from_dataset(f["/named/label"])
        assert hits.tolist() == [1, 0, 1] and text == ["maybe", "miss", "hit"] and "hit = hit, maybe" in how


def test_csv_labels_names_numbers_and_errors(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("event_id,label\na,hit\nb,maybe\nc,miss\nd,strong\ne,blank\n")
    labels = load_labels(good)
    assert [labels.hits[e] for e in "abcde"] == [1, 1, 0, 1, 0]
    numbers = tmp_path / "five.csv"
    numbers.write_text("event_id,label\na,0\nb,2\nc,4\nd,1\n")
    assert [load_labels(numbers).hits[e] for e in "abcd"] == [0, 1, 1, 0]
    for text, message in (
        ("event,label\na,1\n", "event_id and label"),
        ("event_id,label\na,1\na,0\n", "listed again"),
        ("event_id,label\na,crystal\n", "unknown label"),
        ("event_id,label\na,7\n", "0-4"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            load_labels(bad)
    with pytest.raises(InputError, match="CSV file"):
        load_labels("truth/hit")


# ---------------------------------------------------------------------------------------------------
# The library, end to end, with known answers


def test_run_comparison_known_answers(tmp_path, run_file, frames):
    source = open_frames([run_file])
    params, rule = dials_settings(min_spots=8)
    methods, warnings = build_methods(
        MethodChoice(dispersion=True, peakfinder8=_peakfinder8(), dials_params=params, dials_rule=rule)
    )
    assert warnings == []
    methods.append(Method(name="fake", finder=FakeFinder(frames, FAKE_HITS), score_name="flag"))
    result = run_comparison(source, methods, labels=load_labels("/truth/label"), batch_size=5)

    assert result.n_frames == len(N_SPOTS)
    assert result.hits["peakfinder8"].tolist() == FINDER_HITS
    assert result.hits["dispersion"].tolist() == FINDER_HITS
    assert result.true_hit.tolist() == [int(v >= 2) for v in LABELS]
    assert all(result.seconds[name] > 0 for name in ("peakfinder8", "dispersion", "fake"))

    paths, summary = write_comparison(result, tmp_path / "out", source=source, gallery=3)
    data = json.loads(paths["json"].read_text())
    assert data == json.loads(json.dumps(summary))
    # Truth: hits = frames 0-6 (7), misses = 7-11 (5). Finders: TP 6, FN 1 (frame 6), FP 1 (frame 11), TN 4.
    for name in ("peakfinder8", "dispersion"):
        m = data["methods"][name]
        assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (6, 1, 1, 4)
        assert m["accuracy"] == pytest.approx(10 / 12)
        assert m["precision"] == pytest.approx(6 / 7)
        assert m["recall"] == pytest.approx(6 / 7)
        assert m["miss_rejection"] == pytest.approx(4 / 5)
        assert m["n_hits_called"] == 7
        assert m["frames_per_second"] > 0
        assert np.allclose(data["table5"]["methods"][name], [[600 / 7, 100 / 7], [20.0, 80.0]])
    # The fake: hits 0, 1, 2, 6, 7 -> TP 4 (0, 1, 2, 6), FN 3, FP 1 (7), TN 4.
    fake = data["methods"]["fake"]
    assert (fake["tp"], fake["fn"], fake["fp"], fake["tn"]) == (4, 3, 1, 4)
    assert np.allclose(data["table5"]["methods"]["fake"], [[400 / 7, 300 / 7], [20.0, 80.0]])
    assert data["table5"]["rows"] == ["hit or maybe", "miss"]

    # Per label: 0 = frames 7, 9; 1 = frames 8, 10, 11; 2 = frame 6; 3 = frames 0-5.
    by_label = data["hits_by_label"]
    assert list(by_label) == ["0", "1", "2", "3"]
    assert [by_label[v]["n_frames"] for v in by_label] == [2, 3, 1, 6]
    assert [by_label[v]["called_hit"]["peakfinder8"] for v in by_label] == pytest.approx([0, 1 / 3, 0, 1])
    assert [by_label[v]["called_hit"]["fake"] for v in by_label] == pytest.approx([0.5, 0, 1, 0.5])

    agree = data["agreement"]
    names = agree["methods"]
    i, j, k = names.index("dispersion"), names.index("peakfinder8"), names.index("fake")
    assert agree["fraction"][i][j] == 1.0
    # peakfinder8 vs fake: same decision on 0, 1, 2, 8, 9, 10 -> 6 of 12; hit rates 7/12 and 5/12.
    p_e = (7 / 12) * (5 / 12) + (5 / 12) * (7 / 12)
    assert agree["fraction"][j][k] == pytest.approx(0.5)
    assert agree["kappa"][j][k] == pytest.approx((0.5 - p_e) / (1 - p_e))

    # Disagreement patterns: {3, 4, 5} (finders hit, fake miss, label hit), {6}, {7}, {11}; the
    # largest group first, then one frame from each in turn.
    assert [g["position"] for g in data["gallery"]] == [3, 6, 7]
    assert paths["gallery"].stat().st_size > 1000
    assert len(data["per_frame"]) == len(N_SPOTS)

    rows = _read_csv(paths["csv"])
    assert list(rows[0]) == [
        "event_id", "source_file", "source_index", "label", "true_hit",
        *(f"{n}_{c}" for n in ("dispersion", "peakfinder8", "fake") for c in ("score", "hit", "n_peaks")),
    ]
    assert [r["label"] for r in rows] == [str(v) for v in LABELS]
    assert [int(r["peakfinder8_hit"]) for r in rows] == [int(h) for h in FINDER_HITS]
    assert [int(r["peakfinder8_n_peaks"]) for r in rows] == N_SPOTS
    assert [int(r["dispersion_n_peaks"]) for r in rows] == N_SPOTS

    report = paths["report"].read_text()
    for text in ("`dispersion`", "`peakfinder8`", "`fake`", "hit or maybe (7)", "miss (5)", "gallery.png",
                 "five-class labels", "85.7 | 14.3"):
        assert text in report
    assert not list((tmp_path / "out").glob("*.inprogress"))


def test_run_comparison_rejects_duplicate_names(run_file):
    finder = _peakfinder8()
    with pytest.raises(ConfigError, match="differ"):
        run_comparison(open_frames([run_file]), [Method("a", finder), Method("a", finder)])


class StopsAfter(FakeFinder):
    """A :class:`FakeFinder` whose ``classify`` raises on its ``calls``-th call (a run that dies there)."""

    def __init__(self, frames: np.ndarray, hits: list[bool], calls: int) -> None:
        super().__init__(frames, hits)
        self.calls = calls

    def classify(self, frames, masks=None):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return super().classify(frames, masks)


def test_run_comparison_resumes_after_its_committed_batches(tmp_path, run_file, frames):
    source, state = open_frames([run_file]), tmp_path / "state"

    def compare(finder, **kwargs):
        methods = [Method("peakfinder8", _peakfinder8()), Method("fake", finder, settings={"n": 1})]
        return run_comparison(source, methods, batch_size=2, **kwargs)

    whole = compare(FakeFinder(frames, FAKE_HITS), labels=load_labels("/truth/label"))
    with pytest.raises(KeyboardInterrupt):  # dies in the 4th batch: 3 committed
        compare(StopsAfter(frames, FAKE_HITS, calls=4), labels=load_labels("/truth/label"), state_dir=state)
    assert sorted(p.name for p in state.iterdir()) == ["batch_000000.json", "batch_000001.json",
                                                       "batch_000002.json", "state.json"]
    calls, labels = [], load_labels("/truth/label")
    resumed = compare(StopsAfter(frames, FAKE_HITS, calls=4), labels=labels, state_dir=state,
                      progress=lambda done, total: calls.append(done))
    assert calls == [6, 8, 10, 12]  # the committed 6 frames are not classified again (3 calls here)
    for name in ("event_ids", "source_files", "label"):
        assert getattr(resumed, name) == getattr(whole, name)
    for name in ("source_index", "global_index", "true_hit"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    for name in ("scores", "hits", "n_peaks"):
        for method in ("peakfinder8", "fake"):
            np.testing.assert_array_equal(getattr(resumed, name)[method], getattr(whole, name)[method])
    assert all(resumed.seconds[m] > 0 for m in ("peakfinder8", "fake"))
    assert labels.notes() == whole.labels.notes()  # the labels saw the committed frames too

    with pytest.raises(OutputError, match="other inputs or settings"):
        run_comparison(source, [Method("peakfinder8", _peakfinder8())], batch_size=2, state_dir=state)
    fresh = run_comparison(source, [Method("peakfinder8", _peakfinder8())], batch_size=2, state_dir=state,
                           restart=True)
    assert fresh.n_frames == len(N_SPOTS) and len(list(state.glob("batch_*.json"))) == 6


# ---------------------------------------------------------------------------------------------------
# The command


@pytest.fixture(scope="module")
def cli():
    from sfx_cnnhit.cli.app import app

    return CliRunner(), app


PF8_OPTIONS = ["-t", "100", "--min-peaks", "8", "--dials-min-spots", "8"]


def test_cli_compare_with_labels_csv_and_overwrite(cli, tmp_path, run_file):
    runner, app = cli
    table = tmp_path / "labels.csv"
    table.write_text("event_id,label\n" + "".join(f"{run_file} //{i},{'hit' if v >= 2 else 'miss'}\n"
                                                  for i, v in enumerate(LABELS)))
    out = tmp_path / "cmp"
    args = ["compare", str(run_file), "--peakfinder8", "--dispersion", "--labels", str(table), *PF8_OPTIONS,
            "--max-frames", "10", "--gallery", "2", "-o", str(out)]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    data = json.loads((out / "compare.json").read_text())
    assert set(data["methods"]) == {"dispersion", "peakfinder8"}
    assert data["n_frames"] == 10 and data["n_labelled"] == 10
    # Frames 0-9: TP 6, FN 1 (frame 6), TN 3, no FP (frame 11 is not read).
    m = data["methods"]["peakfinder8"]
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (6, 1, 0, 3)
    assert "the first 10 of 12" in (out / "report.md").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_cli_dials_fallback_warns_and_records_it(cli, tmp_path, run_file, monkeypatch):
    runner, app = cli
    monkeypatch.setattr(methods_module, "dials_available", lambda: False)
    out = tmp_path / "cmp"
    done = runner.invoke(app, ["compare", str(run_file), "--dials", "--labels", "/truth/hit", *PF8_OPTIONS,
                               "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert "apt-get install -y dials" in done.output
    data = json.loads((out / "compare.json").read_text())
    assert list(data["methods"]) == ["dispersion"]
    assert "not installed" in " ".join(data["methods"]["dispersion"]["notes"])
    assert "apt-get install -y dials" in (out / "report.md").read_text()


def test_cli_cnn_unavailable_is_a_clear_error(cli, tmp_path, run_file, monkeypatch):
    runner, app = cli
    monkeypatch.setattr(methods_module, "CNN_MODULE", "sfx_cnnhit.finders.no_such_cnn")
    done = runner.invoke(app, ["compare", str(run_file), "--cnn", "-o", str(tmp_path / "cmp")])
    assert done.exit_code == 2
    assert "CNN hit finder" in done.output and "Traceback" not in done.output


def test_cli_cnn_with_a_checkpoint(cli, tmp_path, run_file):
    """The CNN path end to end, with an untrained tiny model (its decisions mean nothing)."""
    from sfx_cnnhit.models import create_model, save_checkpoint

    model, spec = create_model("hitnet_test")
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", model, spec)
    runner, app = cli
    out = tmp_path / "cmp"
    done = runner.invoke(app, ["compare", str(run_file), "--cnn", "--peakfinder8", "--model", str(checkpoint),
                               "--cnn-threshold", "0.0", *PF8_OPTIONS, "-o", str(out)])
    assert done.exit_code == 0, done.output
    rows = _read_csv(out / "compare.csv")
    assert all(0.0 <= float(r["cnn_score"]) <= 1.0 and r["cnn_hit"] == "1" for r in rows)
    # Every frame is a CNN hit at threshold 0, so its peaks are peakfinder8's with the same settings.
    assert [r["cnn_n_peaks"] for r in rows] == [r["peakfinder8_n_peaks"] for r in rows]
    assert json.loads((out / "compare.json").read_text())["versions"]["torch"]
    # neither a geometry nor a gain: said on the console and in the report, which reads the frames as one panel
    assert "no geometry (-g) and no gain given" in " ".join(done.output.split())
    assert "no geometry (-g) and no gain given" in (out / "report.md").read_text()
    again = runner.invoke(app, ["compare", str(run_file), "--peakfinder8", "--adu-per-photon", "1", *PF8_OPTIONS,
                                "-o", str(tmp_path / "gain_given")])
    assert again.exit_code == 0, again.output
    assert "no geometry (-g)" not in " ".join(again.output.split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "/truth/nothing"], "no label dataset /truth/nothing"),
        (["--dials-param", "gain"], "NAME=VALUE"),
        (["--dials-param", "sigma=3"], "unknown DIALS parameter"),
        (["--dials-preset", "ln99"], "unknown DIALS preset"),
    ],
)
def test_cli_bad_options(cli, tmp_path, run_file, extra, message):
    runner, app = cli
    done = runner.invoke(app, ["compare", str(run_file), "--dispersion", *extra, "-o", str(tmp_path / "cmp")])
    assert done.exit_code == 2
    assert message in done.output


@pytest.mark.oracle
@pytest.mark.skipif(not dials_available(), reason="real DIALS is not installed (apt-get install -y dials)")
def test_cli_real_dials_matches_builtin(cli, tmp_path, frames):
    runner, app = cli
    path = tmp_path / "three.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = frames[[0, 6, 7]]
    out = tmp_path / "cmp"
    done = runner.invoke(app, ["compare", str(path), "--dials", "--dispersion", *PF8_OPTIONS, "-o", str(out)])
    assert done.exit_code == 0, done.output
    rows = _read_csv(out / "compare.csv")
    assert [int(r["dials_n_peaks"]) for r in rows] == [int(r["dispersion_n_peaks"]) for r in rows]
    assert [int(r["dials_hit"]) for r in rows] == [1, 0, 0]
    data = json.loads((out / "compare.json").read_text())
    assert data["versions"]["dials"].startswith("DIALS")
    assert data["methods"]["dials"]["seconds_inside"] > 0


def test_the_cnn_of_a_comparison_sees_the_detector_as_reduce_does(tmp_path):
    """With a geometry the CNN tiles its input by the panels and takes the detector's gain (as reduce);
    without one it sees the peakfinder's slab as one image."""
    from sfx_cnnhit.detector import DetectorGeometry, PanelLayout
    from sfx_cnnhit.finders.config import CnnHitParams
    from sfx_cnnhit.models import create_model, save_checkpoint

    model, spec = create_model("hitnet_test")
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", model, spec)
    geometry = DetectorGeometry.simple((64, 96), asic_shape=(32, 48))
    peakfinder = Peakfinder8Finder.from_geometry(geometry)
    choice = CnnHitParams(model=str(checkpoint), device="cpu")
    with_geometry = methods_module.cnn_method(choice, peakfinder, geometry).finder
    assert with_geometry.panel_layout == PanelLayout.from_geometry(geometry)
    assert len(with_geometry.panel_layout.panels) == 4
    alone = methods_module.cnn_method(choice, peakfinder).finder
    assert alone.panel_layout.panels == ((0, 64, 0, 96),)
