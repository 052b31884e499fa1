"""The fair contest: tuning on validation frames, gain-aware defaults, pedestal estimate, `compare --tune`."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sfx_cnnhit.comparisons.contest import Criterion, choose_cut, tune
from sfx_cnnhit.comparisons.grids import dials_grid, peakfinder8_grid
from sfx_cnnhit.comparisons.pedestal import poisson_pedestal
from sfx_cnnhit.comparisons.plan import detector_gain
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.finders.config import Peakfinder8Params, config_adu_per_photon, photon_defaults
from sfx_cnnhit.finders.dials import DialsSpotFinder, dials_available
from sfx_cnnhit.finders.dispersion import DialsParams
from sfx_cnnhit.finders.peakfinder8 import Peakfinder8Finder
from sfx_cnnhit.io.labels import load_labels
from sfx_cnnhit.io.sources import open_frames
from tests.synthetic import make_frame

SHAPE = (64, 96)
SPOTS = np.array([(fs, ss, 2500.0) for ss in (12, 50) for fs in (14, 80)])  # 4 spots, away from the centre


def _frame(rng: np.random.Generator, hit: bool, zingers: int) -> np.ndarray:
    """A hit has 4 bright spots of several pixels; a miss has ``zingers`` single hot pixels."""
    data = make_frame(rng, SHAPE, spots=SPOTS if hit else SPOTS[:0]).data
    for k in range(zingers):
        data[8 + 5 * k, 30 + 3 * k] += 5000.0
    return data


def _write(path, hits: list[bool], *, seed: int, zingers: int = 10, labels: list[bool] | None = None):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.stack([_frame(rng, h, 0 if h else zingers) for h in hits])
        f["/truth/hit"] = np.array(hits if labels is None else labels)
    return path


HITS = [True, False] * 5


# ---------------------------------------------------------------------------------------------------
# Choosing the cut


def test_choose_cut_accuracy_ties_and_target_recall():
    counts = np.array([0, 0, 1, 2, 6, 7, 9, 12])
    truth = np.array([False, False, False, False, True, True, True, True])
    # Every cut 3..6 separates perfectly: the middle of that run on a log scale (4) is taken.
    cut, key = choose_cut(counts, truth, Criterion())
    assert cut == 4 and key[0] == 1.0
    # One miss with many peaks: the best accuracy leaves it, the recall target keeps every hit.
    counts = np.array([0, 1, 3, 5, 8, 2, 9])
    truth = np.array([False, False, False, True, True, True, False])
    assert choose_cut(counts, truth, Criterion())[0] == 4  # 5 of 7 right at cuts 4 and 5: the first of the two
    cut, _ = choose_cut(counts, truth, Criterion(target_recall=1.0))
    assert cut == 2  # the highest cut that keeps all three hits (best miss rejection among those)
    # Probabilities: cuts stay in [0, 1]; counts: cuts are >= 1.
    p, _ = choose_cut(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True]), Criterion(),
                      counts=False)
    assert 0.2 < p <= 0.8
    assert choose_cut(np.zeros(4), np.array([False, True, False, True]), Criterion())[0] >= 1
    with pytest.raises(ConfigError):
        Criterion(target_recall=1.5)


# ---------------------------------------------------------------------------------------------------
# Tuning on a synthetic case with a known best


def test_tuning_chooses_the_known_best_settings(tmp_path):
    """Misses carry 10 one-pixel zingers, hits 4 real spots: counting 1-pixel peaks cannot separate them,
    peaks of >= 3 pixels separate them perfectly with 1 to 4 peaks for a hit."""
    val = open_frames([_write(tmp_path / "val.cxi", HITS, seed=1)])
    finder = Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params())
    grid = {"pedestal": ("none",), "adc_threshold": (100.0,), "min_pixel_count": (1, 3)}
    tuned = tune(val, load_labels("/truth/hit"), [peakfinder8_grid(finder, 1.0, grid=grid)], Criterion(),
                 batch_size=3).methods["peakfinder8"]
    assert tuned.settings["min_pixel_count"] == 3 and tuned.metrics["accuracy"] == 1.0
    assert tuned.cut == 2.0  # the middle (on a log scale) of the perfect cuts 1..4
    by_pixels = {row["min_pixel_count"]: row for row in tuned.table}
    assert by_pixels[1]["accuracy"] < 1.0
    # Streaming: one batch or many give the same choice.
    again = tune(val, load_labels("/truth/hit"), [peakfinder8_grid(finder, 1.0, grid=grid)], Criterion(),
                 batch_size=64).methods["peakfinder8"]
    assert (again.settings, again.cut, again.table) == (tuned.settings, tuned.cut, tuned.table)


def test_user_fixed_settings_are_not_searched(tmp_path):
    val = open_frames([_write(tmp_path / "val.cxi", HITS, seed=1)])
    finder = Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params())
    grid = {"pedestal": ("none", "estimate"), "adc_threshold": (100.0,), "min_pixel_count": (1, 3)}
    g = peakfinder8_grid(finder, 1.0, grid=grid, fixed={"min_pixel_count": 1}, fixed_cut=5)
    assert len(g.cells) == 2 and all(c["min_pixel_count"] == 1 for c in g.cells)
    tuned = tune(val, load_labels("/truth/hit"), [g], Criterion()).methods["peakfinder8"]
    assert tuned.cut == 5 and tuned.settings["min_pixel_count"] == 1


def test_tuning_needs_both_classes(tmp_path):
    val = open_frames([_write(tmp_path / "val.cxi", [True, True], seed=1)])
    finder = Peakfinder8Finder.from_beam_center(SHAPE, Peakfinder8Params())
    with pytest.raises(InputError, match="all hits"):
        tune(val, load_labels("/truth/hit"), [peakfinder8_grid(finder, 1.0)], Criterion())


def test_dials_grid_is_in_photons_and_the_builtin_scores_it(tmp_path):
    val = open_frames([_write(tmp_path / "val.cxi", HITS[:4], seed=1)])
    grid = {"pedestal": ("none",), "global_threshold": (50.0,), "gain": (1.0,), "min_spot_size": (2, 3)}
    g = dials_grid("dispersion", DialsParams(), 4.0, real=False, grid=grid)
    assert [c["global_threshold"] for c in g.cells] == [200.0, 200.0] and g.cells[0]["gain"] == 4.0
    batch = next(val.batches(4))
    counts = g.score(batch.data, batch.mask)
    assert counts.shape == (2, 4) and (counts[:, ::2] >= 4).all() and (counts[:, 1::2] == 0).all()


@pytest.mark.oracle
@pytest.mark.skipif(not dials_available(), reason="real DIALS is not installed (apt-get install -y dials)")
def test_real_dials_grid_counts_match_single_runs(tmp_path):
    frames = np.stack([_frame(np.random.default_rng(i), h, 0) for i, h in enumerate([True, False, True])])
    grid = [DialsParams(gain=1.0, min_spot_size=2), DialsParams(gain=1.0, global_threshold=5000.0)]
    finder = DialsSpotFinder(DialsParams(gain=1.0))
    counts = finder.spot_counts(frames, None, grid)
    assert counts.shape == (2, 3)
    for row, params in zip(counts, grid, strict=True):
        assert row.tolist() == DialsSpotFinder(params).classify(frames).scores.astype(int).tolist()
    assert counts[0].tolist()[1] == 0 and counts[0][0] >= 4 and counts[1].sum() == 0


# ---------------------------------------------------------------------------------------------------
# Pedestal and gain


def test_poisson_pedestal_restores_the_poisson_relation():
    rng = np.random.default_rng(0)
    offset = 40.0 + rng.poisson(20.0, (2, 128, 128)) + rng.normal(0, 3.0, (2, 128, 128))
    assert poisson_pedestal(offset) == pytest.approx([31.0, 31.0], abs=1.5)  # offset - read variance
    assert poisson_pedestal(rng.poisson(5.0, (1, 128, 128)).astype(float)) == pytest.approx([0.0], abs=0.5)
    gained = 100.0 + 4.0 * rng.poisson(10.0, (1, 128, 128))
    assert poisson_pedestal(gained, gain=4.0) == pytest.approx([100.0], abs=3.0)
    masked = np.zeros((1, 128, 128), bool)
    assert poisson_pedestal(gained, masked, gain=4.0).tolist() == [0.0]  # no good tile


def test_gain_sources_and_photon_defaults(tmp_path):
    from types import SimpleNamespace

    geometry = SimpleNamespace(panels=[SimpleNamespace(adu_per_photon=9.0)])
    yaml_file = tmp_path / "monitor.yaml"
    yaml_file.write_text("cnn_hit_detection:\n  adu_per_photon: 32\npeakfinder8_peak_detection: {}\n")
    ini = tmp_path / "cheetah.ini"
    ini.write_text("cnnADUperPhoton=27\n")
    assert detector_gain(2.0, geometry, yaml_file) == (2.0, "--adu-per-photon")
    assert detector_gain(None, geometry, yaml_file)[0] == 9.0
    assert detector_gain(None, None, yaml_file)[0] == 32.0 and config_adu_per_photon(ini) == 27.0
    assert detector_gain(None, None, None)[0] == 1.0
    params, rule = photon_defaults(32.0)
    assert params.adc_threshold == 320.0 and params.minimum_snr == Peakfinder8Params().minimum_snr
    assert rule.min_peaks == 5
    with pytest.raises(ConfigError):
        photon_defaults(0.0)


# ---------------------------------------------------------------------------------------------------
# The command


@pytest.fixture(scope="module")
def cli():
    from sfx_cnnhit.cli.app import app

    return CliRunner(), app


def _compare(cli, *args):
    runner, app = cli
    done = runner.invoke(app, ["compare", *map(str, args)])
    assert done.exit_code == 0, done.output
    return done


def test_test_frames_never_influence_a_setting(cli, tmp_path):
    """Tuned on the same validation file, scored on two test files, one with every label inverted: the
    chosen settings are the same, and only the test scores differ."""
    val = _write(tmp_path / "val.cxi", HITS, seed=1)
    test_a = _write(tmp_path / "a.cxi", HITS[::-1], seed=2)
    test_b = _write(tmp_path / "b.cxi", HITS, seed=3, zingers=2, labels=[not h for h in HITS])
    out = {}
    for name, test in (("a", test_a), ("b", test_b)):
        _compare(cli, test, "--tune", val, "--labels", "/truth/hit", "--peakfinder8", "--dispersion",
                 "--gallery", "0", "-o", tmp_path / name)
        out[name] = json.loads((tmp_path / name / "compare.json").read_text())
    for method in ("peakfinder8", "dispersion"):
        a, b = out["a"]["methods"][method], out["b"]["methods"][method]
        assert a["settings"] == b["settings"]
        assert a["origin"]["tuning"]["chosen"] == b["origin"]["tuning"]["chosen"]
        assert a["origin"]["kind"] == "tuned" and a["origin"]["tuning"]["accuracy"] == 1.0
        assert a["accuracy"] == 1.0 and b["accuracy"] == 0.0
    report = (tmp_path / "a" / "report.md").read_text()
    assert "Where the settings come from" in report and "curves.png" in report
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0
    assert out["a"]["methods"]["peakfinder8"]["roc_auc"] == 1.0
    table = json.loads((tmp_path / "a" / "tuning.json").read_text())
    assert len(table["results"]["peakfinder8"]["table"]) == 72


def test_tuning_is_reused_by_a_resumed_comparison(cli, tmp_path, monkeypatch):
    from sfx_cnnhit.comparisons import plan

    val = _write(tmp_path / "val.cxi", HITS, seed=1)
    test = _write(tmp_path / "t.cxi", HITS, seed=2)
    args = [test, "--tune", val, "--labels", "/truth/hit", "--peakfinder8", "--gallery", "0", "-o", tmp_path / "o"]
    _compare(cli, *args)
    (tmp_path / "o" / "compare.json").unlink()  # as if killed before the end

    def no_tuning(*_a, **_k):
        raise AssertionError("tuned again")

    monkeypatch.setattr(plan, "tune", no_tuning)
    _compare(cli, *args)
    assert json.loads((tmp_path / "o" / "compare.json").read_text())["methods"]["peakfinder8"]["accuracy"] == 1.0
    assert "also tuning frames" not in (tmp_path / "o" / "report.md").read_text()
    # Other tuning frames (a list naming other frames of the same file) are tuned afresh.
    (tmp_path / "o" / "compare.json").unlink()
    lst = tmp_path / "val.lst"
    lst.write_text("".join(f"{val} //{i}\n" for i in range(8)))
    runner, app = cli
    done = runner.invoke(app, ["compare", *map(str, args[:2]), str(lst), *map(str, args[3:])])
    assert done.exit_code != 0 and "tuned again" in repr(done.exception)


def test_tuning_frames_among_the_test_frames_are_flagged(cli, tmp_path):
    val = _write(tmp_path / "val.cxi", HITS, seed=1)
    lst = tmp_path / "test.lst"
    lst.write_text(f"{val} //0\n{val} //1\n")
    done = _compare(cli, lst, "--tune", val, "--labels", "/truth/hit", "--peakfinder8", "--gallery", "0",
                    "-o", tmp_path / "o")
    assert "2 of the test frames were also tuning frames" in done.output
    assert "also tuning frames" in (tmp_path / "o" / "report.md").read_text()


def test_untuned_rows_say_where_their_settings_come_from(cli, tmp_path):
    test = _write(tmp_path / "t.cxi", HITS, seed=2)
    _compare(cli, test, "--labels", "/truth/hit", "--peakfinder8", "--dispersion", "--dials-min-spots", "3",
             "--adu-per-photon", "1", "-o", tmp_path / "o")
    data = json.loads((tmp_path / "o" / "compare.json").read_text())
    pf8, disp = data["methods"]["peakfinder8"], data["methods"]["dispersion"]
    assert pf8["origin"]["kind"] == "defaults" and "pedestal estimate subtracted" in pf8["origin"]["detail"]
    assert pf8["settings"]["pedestal"] == "estimate" and pf8["settings"]["peakfinder8"]["adc_threshold"] == 10.0
    assert disp["origin"]["kind"] == "given" and "min_spots=3" in disp["origin"]["detail"]
    assert disp["settings"]["pedestal"] == "none" and disp["settings"]["dials"]["gain"] == 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tune", "VAL"], "--tune needs --labels"),
        (["--pedestal", "median"], "--pedestal 'median'"),
        (["--labels", "/truth/hit", "--target-recall", "2"], "target-recall"),
    ],
)
def test_cli_bad_tuning_options(cli, tmp_path, extra, message):
    test = _write(tmp_path / "t.cxi", HITS[:2], seed=2)
    extra = [str(test) if e == "VAL" else e for e in extra]
    runner, app = cli
    done = runner.invoke(app, ["compare", str(test), "--peakfinder8", *extra, "-o", str(tmp_path / "o")])
    assert done.exit_code == 2 and message in done.output
